"""Dispatch rules (domain/dispatch.py) pinned row by row by hand: which crew a request goes to, or none (pure)."""

from __future__ import annotations

import pytest

from sync_server.domain.dispatch import CrewFacts, Facts, Rule, point_in_polygon, route, validate_polygon

# A square around downtown LA: lon -118.30..-118.20, lat 34.00..34.10
DOWNTOWN = ((-118.30, 34.00), (-118.20, 34.00), (-118.20, 34.10), (-118.30, 34.10))
CREWS = {
    "san-1": CrewFacts("sanitation"), "san-2": CrewFacts("sanitation"), "san-old": CrewFacts("sanitation", False),
    "ss-1": CrewFacts("street_services"), "san-ev": CrewFacts("sanitation"),
}
RULES = [
    Rule(1, 10, "san-2", service_type="bulky_items", district=14),
    Rule(2, 20, "san-1", service_type="bulky_items", zip="90012"),
    Rule(3, 30, "san-1", service_type="illegal_dumping", polygon=DOWNTOWN),
    Rule(4, 5, "san-old", service_type="bulky_items"),          # retired crew: skipped though first
    Rule(5, 40, "ss-1", service_type=None, zip="90012"),          # any type, but only street services' own
    Rule(6, 50, "san-ev", routing_area="EV"),                     # imports: the city's routing area
    Rule(7, 60, "ss-1", service_type="pothole_repair"),           # anywhere in the city
]


def facts(st: str, dept: str = "sanitation", **kw: object) -> Facts:
    return Facts(service_type=st, department=dept, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("request_facts", "crew"), [
    (facts("bulky_items", district=14, zip="90012"), "san-2"),            # district rule comes first by position
    (facts("bulky_items", district=1, zip="90012"), "san-1"),             # zip rule
    (facts("bulky_items", zip="90012-4801"), "san-1"),                    # ZIP+4 is the same ZIP
    (facts("bulky_items", zip="90013"), None),                            # no rule: unassigned
    (facts("bulky_items"), None),                                         # nothing known about the area
    (facts("illegal_dumping", lat=34.05, lon=-118.25), "san-1"),          # inside the polygon
    (facts("illegal_dumping", lat=34.15, lon=-118.25), None),             # north of it
    (facts("illegal_dumping", zip="90012"), None),                        # polygon needs coordinates
    (facts("pothole_repair", "street_services", zip="90012"), "ss-1"),    # any-type rule, crew of its department
    (facts("pothole_repair", "street_services", zip="91331"), "ss-1"),    # anywhere rule
    (facts("graffiti_removal", zip="90012"), None),                       # any-type rule's crew is another dept
    (facts("graffiti_removal", routing_area="ev"), "san-ev"),             # routing area, case-insensitive
    (facts("graffiti_removal", routing_area="WV"), None),
])
def test_route_table(request_facts: Facts, crew: str | None) -> None:
    rule = route(RULES, request_facts, CREWS)
    assert (rule.crew if rule else None) == crew


def test_ties_on_position_go_to_the_lower_id() -> None:
    rules = [Rule(9, 1, "san-2"), Rule(8, 1, "san-1")]
    assert route(rules, facts("bulky_items"), CREWS).crew == "san-1"  # type: ignore[union-attr]


def test_unknown_crew_never_matches() -> None:
    assert route([Rule(1, 1, "gone")], facts("bulky_items"), CREWS) is None


@pytest.mark.parametrize(("lon", "lat", "inside"), [
    (-118.25, 34.05, True), (-118.31, 34.05, False), (-118.25, 33.99, False), (-118.21, 34.09, True),
])
def test_point_in_square(lon: float, lat: float, inside: bool) -> None:
    assert point_in_polygon(lon, lat, DOWNTOWN) is inside


def test_point_in_concave_polygon() -> None:
    # a U shape: the notch between the arms (x 1..2, y 1..3) is outside
    u = ((0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3))
    assert point_in_polygon(0.5, 2.0, u) and point_in_polygon(2.5, 2.0, u)
    assert not point_in_polygon(1.5, 2.0, u)


@pytest.mark.parametrize(("points", "message"), [
    ([[0, 0], [1, 1]], "a polygon needs 3 to 1000 [lon, lat] points"),
    ([[0, 0], [1, 1], [2]], "each polygon point is [lon, lat]"),
    ([[0, 0], [1, 1], [200, 0]], "polygon point out of range: lon -180..180, lat -90..90"),
])
def test_bad_polygons_are_refused(points: list[list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        validate_polygon(points)

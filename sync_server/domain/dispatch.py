"""Dispatch rules: which crew a new request goes to, decided from data an admin edits, with no I/O (table-tested)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class AreaKind(StrEnum):
    """How a rule names the part of the city it covers."""

    ANYWHERE = "anywhere"
    DISTRICT = "district"
    ZIP = "zip"
    POLYGON = "polygon"
    ROUTING_AREA = "routing_area"  # the city's own routing area code (MyLA311 AssignTo), carried by imports


@dataclass(frozen=True)
class Rule:
    """One routing rule: requests of `service_type` (None: any) inside the area go to `crew`."""

    id: int
    position: int
    crew: str
    service_type: str | None = None
    district: int | None = None
    zip: str | None = None
    polygon: tuple[tuple[float, float], ...] | None = None  # (lon, lat) vertices, implicitly closed
    routing_area: str | None = None

    @property
    def area_kind(self) -> AreaKind:
        """The one kind of area this rule names (a rule with none covers the whole city)."""
        if self.district is not None:
            return AreaKind.DISTRICT
        if self.zip is not None:
            return AreaKind.ZIP
        if self.polygon is not None:
            return AreaKind.POLYGON
        if self.routing_area is not None:
            return AreaKind.ROUTING_AREA
        return AreaKind.ANYWHERE


@dataclass(frozen=True)
class Facts:
    """What is known about a new request when it is routed."""

    service_type: str
    department: str
    district: int | None = None
    zip: str | None = None
    lat: float | None = None
    lon: float | None = None
    routing_area: str | None = None


@dataclass(frozen=True)
class CrewFacts:
    """What routing needs to know about a crew: a rule never sends work across departments or to a retired crew."""

    department: str
    active: bool = True


def point_in_polygon(lon: float, lat: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting; a point exactly on an edge may fall either way, so rules should not share edges."""
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_cross:
                inside = not inside
    return inside


def _normal_zip(text: str | None) -> str | None:
    """ZIP+4 and padding do not change the area: 90012-1234 matches a rule for 90012."""
    if text is None:
        return None
    return text.strip()[:5] or None


def area_matches(rule: Rule, facts: Facts) -> bool:
    """Whether the request lies in the rule's area; missing facts never match a rule that needs them."""
    kind = rule.area_kind
    if kind is AreaKind.ANYWHERE:
        return True
    if kind is AreaKind.DISTRICT:
        return facts.district is not None and facts.district == rule.district
    if kind is AreaKind.ZIP:
        return facts.zip is not None and _normal_zip(facts.zip) == _normal_zip(rule.zip)
    if kind is AreaKind.ROUTING_AREA:
        return facts.routing_area is not None and facts.routing_area.strip().casefold() == (rule.routing_area or "").casefold()
    assert rule.polygon is not None
    return facts.lat is not None and facts.lon is not None and point_in_polygon(facts.lon, facts.lat, rule.polygon)


def route(rules: Sequence[Rule], facts: Facts, crews: Mapping[str, CrewFacts]) -> Rule | None:
    """The first matching rule by (position, id) whose crew is active in the request's department; None: unassigned."""
    for rule in sorted(rules, key=lambda r: (r.position, r.id)):
        if rule.service_type is not None and rule.service_type != facts.service_type:
            continue
        crew = crews.get(rule.crew)
        if crew is None or not crew.active or crew.department != facts.department:
            continue
        if area_matches(rule, facts):
            return rule
    return None


def validate_polygon(points: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """A polygon an admin may store: 3..1000 (lon, lat) vertices inside WGS84 bounds; ValueError names the fault."""
    if not 3 <= len(points) <= 1000:
        raise ValueError("a polygon needs 3 to 1000 [lon, lat] points")
    out = []
    for p in points:
        if len(p) != 2:
            raise ValueError("each polygon point is [lon, lat]")
        lon, lat = float(p[0]), float(p[1])
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise ValueError("polygon point out of range: lon -180..180, lat -90..90")
        out.append((lon, lat))
    return tuple(out)

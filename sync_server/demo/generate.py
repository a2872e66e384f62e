"""Demo organisation and tickets generated from a shipped slice of real MyLA311 rows; pure and seeded, so a seed gives the same city."""

from __future__ import annotations

import gzip
import io
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from importlib import resources

from protocol import Priority, TicketStatus
from sync_server.engine.intake import NewTicket
from sync_server.ingest.importer import read_rows
from sync_server.ingest.mapping import crew_name
from sync_server.ingest.parse import LA, ParsedRow

SLICE = "la311_slice.csv.gz"

# (department, MyLA311 AssignTo area or our own crew suffix). Areas are real yards from the sample, so an import
# of the city's file routes Pending requests to these crews; Street Services has no areas in the data.
CREWS: tuple[tuple[str, str], ...] = (
    ("sanitation", "EV"), ("sanitation", "WV"), ("sanitation", "NC"), ("sanitation", "SLA"),
    ("sanitation", "WLA"), ("sanitation", "HB"),
    ("community_beautification", "GAPBH"), ("community_beautification", "SGB"), ("community_beautification", "GAP"),
    ("street_lighting", "NORTH"), ("street_lighting", "SOUTH"),
    ("street_services", "1"), ("street_services", "2"),
)

# Share of demo tickets per department. The raw sample is 70% Sanitation and has almost no lighting or road
# work, which would leave those crews idle in a demo; within a department the sample's own mix is kept.
DEPARTMENT_SHARE: dict[str, float] = {
    "sanitation": 0.60, "community_beautification": 0.25, "street_lighting": 0.07, "street_services": 0.08,
}
# Pothole Repair never occurs in the two-day sample; half of Street Services' demo work is potholes.
POTHOLE_SHARE = 0.5

# Open work only: most of it dispatched, some still waiting for a supervisor, a little already under way.
STATUS_WEIGHTS: tuple[tuple[TicketStatus, float], ...] = (
    (TicketStatus.UNASSIGNED, 0.15), (TicketStatus.ASSIGNED, 0.65),
    (TicketStatus.ACKNOWLEDGED, 0.12), (TicketStatus.IN_PROGRESS, 0.08),
)
PRIORITY_BY_TYPE: dict[str, Priority] = {
    "Dead Animal Removal": Priority.HIGH, "Homeless Encampment": Priority.HIGH,
    "Multiple Streetlight Issue": Priority.HIGH, "Pothole Repair": Priority.HIGH,
}
DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "Bulky Items": ("Mattress and box spring at curb", "Couch and two chairs", "Dresser and TV stand", "Sofa, left by alley"),
    "Graffiti Removal": ("Tagging on block wall", "Graffiti on utility box", "Spray paint on storefront", "Tags on bus bench"),
    "Illegal Dumping Pickup": ("Pile of trash bags on sidewalk", "Construction debris dumped", "Tires and boxes in alley"),
    "Metal/Household Appliances": ("Refrigerator at curb", "Washer and dryer", "Old water heater"),
    "Electronic Waste": ("Two TVs and a monitor", "Microwave and printer", "Computer tower and cables"),
    "Dead Animal Removal": ("Dead cat in street", "Dead dog near driveway", "Dead bird on sidewalk"),
    "Homeless Encampment": ("Tents blocking sidewalk", "Encampment debris near underpass"),
    "Single Streetlight Issue": ("Streetlight out", "Light cycling on and off", "Pole knocked down"),
    "Multiple Streetlight Issue": ("Whole block dark", "Several lights out on street"),
    "Pothole Repair": ("Large pothole in traffic lane", "Pothole near crosswalk", "Broken pavement at curb"),
    "Other": ("Resident reports a problem, see call notes", "Debris in roadway"),
}
BACKLOG_DAYS = 7  # open tickets are spread over the last week, at the sample's times of day


@dataclass(frozen=True)
class CrewSpec:
    """A demo crew and how many devices it carries."""

    name: str
    department: str
    devices: int


def load_slice() -> list[ParsedRow]:
    """The shipped slice of real requests (parsed with the importer's own rules)."""
    blob = resources.files("sync_server.demo").joinpath("data", SLICE).read_bytes()
    text = io.TextIOWrapper(io.BytesIO(gzip.decompress(blob)), encoding="utf-8", newline="")
    return [r for r in read_rows(text) if isinstance(r, ParsedRow)]


def crews(seed: int) -> list[CrewSpec]:
    """The demo crews, 2–4 devices each."""
    rng = random.Random(seed)
    out = []
    for dept, area in CREWS:
        name = crew_name(dept, area)
        assert name is not None
        out.append(CrewSpec(name, dept, rng.randint(2, 4)))
    return out


def tickets(rows: Sequence[ParsedRow], n: int, seed: int, crew_ids: dict[str, int], now: datetime) -> list[NewTicket]:
    """n open tickets: type, place, district and time of day from a real row; crew from its yard when we run one."""
    rng = random.Random(seed)
    today = now.astimezone(LA).date()
    by_dept: dict[str, list[ParsedRow]] = defaultdict(list)
    for r in rows:
        by_dept[r.department].append(r)
    dept_crews: dict[str, list[int]] = defaultdict(list)
    for spec in crews(seed):
        if spec.name in crew_ids:
            dept_crews[spec.department].append(crew_ids[spec.name])
    depts = [d for d in DEPARTMENT_SHARE if by_dept[d]]
    weights = [DEPARTMENT_SHARE[d] for d in depts]
    statuses, status_w = zip(*STATUS_WEIGHTS)
    out: list[NewTicket] = []
    for i in range(n):
        dept = rng.choices(depts, weights)[0]
        row = rng.choice(by_dept[dept])
        stype = row.service_type
        if dept == "street_services" and rng.random() < POTHOLE_SHARE:
            stype, row = "Pothole Repair", rng.choice(rows)  # a real address anywhere in the city
        status = rng.choices(statuses, status_w)[0]
        crew = None
        if status is not TicketStatus.UNASSIGNED and dept_crews[dept]:
            name = crew_name(dept, row.area)
            crew = crew_ids.get(name) if name else None
            if crew not in dept_crews[dept]:
                crew = rng.choice(dept_crews[dept])
        if crew is None:
            status = TicketStatus.UNASSIGNED
        local_time = row.requested_at.astimezone(LA).time()
        day = today - timedelta(days=rng.randrange(BACKLOG_DAYS))
        requested = datetime.combine(day, time(local_time.hour, local_time.minute), tzinfo=LA)
        if requested > now:
            requested -= timedelta(days=1)  # today's share only has requests from earlier today
        priority = PRIORITY_BY_TYPE.get(stype, Priority.NORMAL)
        roll = rng.random()
        if roll < 0.04:
            priority = Priority.URGENT
        elif roll < 0.14:
            priority = Priority.LOW
        out.append(NewTicket(
            id=uuid.UUID(int=rng.getrandbits(128), version=4),
            sr_number=f"DEMO-{i + 1:06d}",
            service_type=stype,
            address=row.address or "Address not given",
            requested_at=requested.astimezone(timezone.utc),
            zip=row.zip,
            lat=row.lat,
            lon=row.lon,
            council_district=row.council_district,
            description=rng.choice(DESCRIPTIONS.get(stype, ("",))),
            source=row.source,
            service_date=day + timedelta(days=rng.randint(1, 3)),
            priority=priority,
            crew_id=crew,
            status=status,
        ))
    return out

"""How MyLA311 vocabulary maps onto ours, as tables a reviewer can read (STYLE rule 2); no I/O here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol import TicketStatus

S = TicketStatus


@dataclass(frozen=True)
class DepartmentDef:
    """A department we run crews for, with the MyLA311 owner codes that feed it."""

    code: str
    name: str
    agency_code: str
    crew_prefix: str  # crews are named `<prefix>-<area>`, e.g. san-ev for Sanitation's East Valley yard


@dataclass(frozen=True)
class ServiceTypeDef:
    """A service type: the MyLA311 RequestType name, our Open311 service_code slug, and its department."""

    name: str
    code: str
    department: str


DEPARTMENTS: tuple[DepartmentDef, ...] = (
    DepartmentDef("sanitation", "Sanitation", "BOS", "san"),
    DepartmentDef("street_services", "Street Services", "BSS", "bss"),
    DepartmentDef("street_lighting", "Street Lighting", "BSL", "bsl"),
    DepartmentDef("community_beautification", "Community Beautification", "OCB", "ocb"),
)


def slug(name: str) -> str:
    """Open311 service codes are lowercase slugs of the request type name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# RequestType -> department. Sanitation (BOS/LASAN) owns pickups and cleanups, the Office of Community
# Beautification owns graffiti, the Street Lighting Bureau owns lights, and Street Services takes road work
# and the catch-all "Other" (in the real data that is mostly ITA-routed general requests).
_TYPE_DEPARTMENT: tuple[tuple[str, str], ...] = (
    ("Bulky Items", "sanitation"),
    ("Illegal Dumping Pickup", "sanitation"),
    ("Metal/Household Appliances", "sanitation"),
    ("Electronic Waste", "sanitation"),
    ("Dead Animal Removal", "sanitation"),
    ("Homeless Encampment", "sanitation"),
    ("Graffiti Removal", "community_beautification"),
    ("Single Streetlight Issue", "street_lighting"),
    ("Multiple Streetlight Issue", "street_lighting"),
    ("Pothole Repair", "street_services"),
    ("Other", "street_services"),
)

SERVICE_TYPES: tuple[ServiceTypeDef, ...] = tuple(ServiceTypeDef(n, slug(n), d) for n, d in _TYPE_DEPARTMENT)
SERVICE_TYPE_BY_NAME: dict[str, ServiceTypeDef] = {t.name.casefold(): t for t in SERVICE_TYPES}
DEPARTMENT_BY_CODE: dict[str, DepartmentDef] = {d.code: d for d in DEPARTMENTS}


@dataclass(frozen=True)
class StatusRule:
    """Our status for a MyLA311 status, and the reason code recorded with it."""

    status: TicketStatus | None  # None: decided by whether a crew matches the AssignTo area
    reason_code: str | None = None


# MyLA311 Status -> our TicketStatus. "Pending" means the city routed it to a yard: assigned when we run a
# crew for that yard, otherwise still unassigned. "Referred Out" went to another agency, so for our crews it is
# cancelled, with the reason kept so a supervisor can tell it from a real cancellation.
STATUS_TABLE: dict[str, StatusRule] = {
    "open": StatusRule(S.UNASSIGNED),
    "pending": StatusRule(None),
    "closed": StatusRule(S.CLOSED),
    "cancelled": StatusRule(S.CANCELLED),
    "referred out": StatusRule(S.CANCELLED, "referred_out"),
}


def crew_name(department: str, area: str) -> str | None:
    """The crew that works a MyLA311 AssignTo area for a department, e.g. ('sanitation', 'EV') -> 'san-ev'."""
    area = area.strip()
    if not area or department not in DEPARTMENT_BY_CODE:
        return None
    return f"{DEPARTMENT_BY_CODE[department].crew_prefix}-{slug(area).replace('_', '-')}"


def resolve_status(rule: StatusRule, has_crew: bool) -> TicketStatus:
    """Pending becomes assigned only when one of our crews works the area it was routed to."""
    if rule.status is not None:
        return rule.status
    return S.ASSIGNED if has_crew else S.UNASSIGNED

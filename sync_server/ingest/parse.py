"""Turning one MyLA311 CSV row into a ticket-shaped record or a reason it was rejected; pure, so every rule is tested directly."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from sync_server.ingest.mapping import SERVICE_TYPE_BY_NAME, STATUS_TABLE, StatusRule

LA = ZoneInfo("America/Los_Angeles")

# Both the portal's CamelCase export and the lowercase variant normalise to these keys.
REQUIRED_COLUMNS: tuple[str, ...] = ("srnumber", "createddate", "requesttype", "status")

# Portal exports ("01/01/2020 12:05:00 AM") and spreadsheet re-saves ("1/1/20 0:05"); the Socrata API's ISO form
# falls through to fromisoformat. A regex rather than strptime over a list of formats: this runs per row.
_US_DATE = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*([AaPp][Mm])?)?$"
)
_ZIP = re.compile(r"^\s*(\d{5})")


class HeaderError(ValueError):
    """The file is not a MyLA311 export at all; no row of it can be imported."""


@dataclass(frozen=True)
class ParsedRow:
    """A valid row, in our vocabulary; crew and the Pending status are resolved against the database later."""

    line: int
    sr_number: str
    service_type: str
    department: str
    status_rule: StatusRule
    requested_at: datetime
    source_updated_at: datetime
    service_date: date | None
    address: str
    zip: str | None
    lat: float | None
    lon: float | None
    council_district: int | None
    source: str | None
    area: str


@dataclass(frozen=True)
class Rejected:
    """A row that was skipped, with the line a person opens the file at."""

    line: int
    reason: str


def normalise_header(fields: Sequence[str]) -> list[str]:
    """Map `SRNumber`, `srnumber` and `SR Number` to one key; refuse a file missing the columns we need."""
    keys = [re.sub(r"[^a-z0-9]", "", f.lower()) for f in fields]
    missing = [c for c in REQUIRED_COLUMNS if c not in keys]
    if missing:
        raise HeaderError(f"not a MyLA311 export: missing column(s) {', '.join(missing)}")
    return keys


def parse_la_datetime(text: str) -> datetime:
    """A MyLA311 timestamp (LA wall-clock time unless it carries an offset) as an aware UTC datetime."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    m = _US_DATE.match(text)
    if m is None:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))  # raises ValueError when it is not ISO either
    else:
        month, day, year, hour, minute, second, ampm = m.groups()
        h = int(hour or 0)
        if ampm is not None:
            if not 1 <= h <= 12:
                raise ValueError(f"hour {h} with {ampm}")
            h = h % 12 + (12 if ampm.lower() == "pm" else 0)
        y = int(year) + (2000 if len(year) == 2 else 0)  # MyLA311 starts in 2010, so a two-digit year is 20xx
        parsed = datetime(y, int(month), int(day), h, int(minute or 0), int(second or 0))  # ValueError on 13/45/20
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=LA)
    return parsed.astimezone(timezone.utc)


def _local_date(text: str) -> date | None:
    """ServiceDate is a calendar day in LA; a broken one is dropped rather than rejecting the whole request."""
    try:
        return parse_la_datetime(text).astimezone(LA).date()
    except ValueError:
        return None


def _coordinate(text: str, low: float, high: float, name: str) -> float | None:
    """Empty means "no location"; anything else must be a finite number within the globe's range."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not low <= value <= high:  # also false for NaN
        raise ValueError(f"{name} {text} out of range")
    return value


def _int_or_none(text: str) -> int | None:
    """Council districts arrive as '6' or '6.0'; a blank or odd value just means unknown."""
    try:
        value = int(float(text))
    except ValueError:
        return None
    return value if 0 <= value <= 9999 else None


def _address(row: Mapping[str, str]) -> str:
    """The full address, or one rebuilt from the portal's split columns when Address is blank."""
    full = row.get("address", "").strip()
    if not full:
        parts = (row.get(k, "").strip() for k in ("housenumber", "direction", "streetname", "suffix"))
        full = " ".join(p for p in parts if p)
    return full[:500]


def parse_row(row: Mapping[str, str], line: int) -> ParsedRow | Rejected:
    """Validate and map one row (keys from `normalise_header`); every failure names its reason."""
    def get(key: str) -> str:
        return (row.get(key) or "").strip()

    sr = get("srnumber")
    if not sr:
        return Rejected(line, "missing SR number")
    if len(sr) > 255:
        return Rejected(line, "SR number too long")
    stype = SERVICE_TYPE_BY_NAME.get(get("requesttype").casefold())
    if stype is None:
        return Rejected(line, f"unknown request type {get('requesttype')!r}")
    rule = STATUS_TABLE.get(get("status").casefold())
    if rule is None:
        return Rejected(line, f"unknown status {get('status')!r}")
    try:
        created = parse_la_datetime(get("createddate"))
    except ValueError:
        return Rejected(line, f"unparseable CreatedDate {get('createddate')!r}")
    updated = created
    if get("updateddate"):
        try:
            updated = parse_la_datetime(get("updateddate"))
        except ValueError:
            return Rejected(line, f"unparseable UpdatedDate {get('updateddate')!r}")
    try:
        lat = _coordinate(get("latitude"), -90.0, 90.0, "latitude")
        lon = _coordinate(get("longitude"), -180.0, 180.0, "longitude")
    except ValueError as exc:
        return Rejected(line, str(exc))
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        lat = lon = None  # half a location, or the 0,0 placeholder some exports use, is no location
    zip_match = _ZIP.match(get("zipcode"))
    return ParsedRow(
        line=line,
        sr_number=sr,
        service_type=stype.name,
        department=stype.department,
        status_rule=rule,
        requested_at=created,
        source_updated_at=max(updated, created),
        service_date=_local_date(get("servicedate")) if get("servicedate") else None,
        address=_address(row),
        zip=zip_match.group(1) if zip_match else None,
        lat=lat,
        lon=lon,
        council_district=_int_or_none(get("cd")) if get("cd") else None,
        source=get("requestsource")[:255] or None,
        area=get("assignto"),
    )

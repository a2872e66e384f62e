"""GeoReport v2 input, validated without I/O: query filters of GET requests and the fields of POST requests.

Every refusal is an Open311Error naming the parameter, so a citizen app's developer sees what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from protocol.fields import DATETIME_MAX, DATETIME_MIN
from sync_server.api.params import text_ok
from sync_server.open311.render import Open311Error

MAX_SPAN = timedelta(days=90)  # the spec's default window and largest allowed span
DEFAULT_PAGE_SIZE = 1000  # the spec: "first 1000 requests returned" for a client that knows nothing of pages
MAX_PAGE_SIZE = 1000
MAX_IDS = 100
MAX_DESCRIPTION = 4000
MAX_FIELD = 500
DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
REPORTER_FIELDS = ("email", "device_id", "account_id", "first_name", "last_name", "phone")


def parse_datetime(name: str, text: str) -> datetime:
    """A W3C datetime; one without an offset is read as UTC (the spec's examples always carry one)."""
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C datetime such as 2010-01-01T00:00:00Z") from None
    ts = ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)
    # the server's datetime range: a window computed from year 9999 would overflow (a 500), and nothing lies outside
    if not DATETIME_MIN <= ts < DATETIME_MAX:
        raise Open311Error(400, f"{name} must lie between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z")
    return ts


def check_text(fields: Mapping[str, Sequence[str]]) -> None:
    """Names and values PostgreSQL can store: a NUL or a lone surrogate (JSON's "\\ud800") is a 400, never a 500."""
    for name, values in fields.items():
        if not text_ok(name) or not all(text_ok(v) for v in values):
            raise Open311Error(400, f"{(name if text_ok(name) else 'a field name')[:64]} holds a NUL or an invalid character")


def given(fields: Mapping[str, str]) -> dict[str, str]:
    """The spec's Optional Arguments rule: a parameter passed empty is treated as one not passed at all."""
    return {k: v for k, v in fields.items() if v.strip() != ""}


def _int(name: str, text: str, lo: int, hi: int) -> int:
    """A bounded whole number parameter."""
    try:
        value = int(text)
    except ValueError:
        raise Open311Error(400, f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise Open311Error(400, f"{name} must be between {lo} and {hi}")
    return value


def _csv(text: str) -> list[str]:
    """A comma list without blanks."""
    return [p.strip() for p in text.split(",") if p.strip()]


@dataclass(frozen=True)
class RequestQuery:
    """GET requests filters after defaults: a closed requested-time window [start, end] unless ids were named."""

    ids: list[str] | None = None
    service_codes: list[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    statuses: list[str] | None = None  # open311 statuses: open, closed
    updated_after: datetime | None = None  # inclusive (extension, used by mirrors)
    updated_before: datetime | None = None  # exclusive
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    extensions: bool = False

    @property
    def by_updated(self) -> bool:
        """Mirrors read in updated_datetime order; everyone else newest request first."""
        return self.updated_after is not None or self.updated_before is not None


_QUERY_KEYS = frozenset({"jurisdiction_id", "service_request_id", "service_code", "start_date", "end_date", "status",
                         "page", "page_size", "extensions", "updated_after", "updated_before", "api_key"})


def _window(start: datetime | None, end: datetime | None, now: datetime, what: str) -> tuple[datetime, datetime]:
    """The spec's window rule: default the most recent 90 days, never a span over 90 days or a reversed one."""
    if start is None and end is None:
        return now - MAX_SPAN, now
    if start is None:
        assert end is not None
        start = end - MAX_SPAN
    if end is None:
        end = min(now, start + MAX_SPAN) if start < now else start + MAX_SPAN
    if end < start:
        raise Open311Error(400, f"{what}: the end is before the start")
    if end - start > MAX_SPAN:
        raise Open311Error(400, f"{what} may not span more than 90 days")
    return start, end


def request_query(q: Mapping[str, str], now: datetime) -> RequestQuery:
    """Parse GET requests parameters; service_request_id overrides every other filter, as the spec says."""
    check_text({k: [v] for k, v in q.items()})
    q = given(q)
    unknown = sorted(set(q) - _QUERY_KEYS)
    if unknown:
        raise Open311Error(400, f"unknown parameter {unknown[0]}")
    page = _int("page", q["page"], 1, 1_000_000) if "page" in q else 1
    size = _int("page_size", q["page_size"], 1, MAX_PAGE_SIZE) if "page_size" in q else DEFAULT_PAGE_SIZE
    ext = q.get("extensions", "false").lower()
    if ext not in ("true", "false"):
        raise Open311Error(400, "extensions must be true or false")
    if "service_request_id" in q:
        ids = _csv(q["service_request_id"])
        if not ids or len(ids) > MAX_IDS:
            raise Open311Error(400, f"service_request_id takes 1 to {MAX_IDS} comma-separated ids")
        return RequestQuery(ids=ids, page=page, page_size=size, extensions=ext == "true")
    codes = _csv(q["service_code"]) if "service_code" in q else None
    statuses = None
    if "status" in q:
        statuses = _csv(q["status"].lower())
        if not statuses or any(s not in ("open", "closed") for s in statuses):
            raise Open311Error(400, "status must be open or closed (comma-separated)")
    start = parse_datetime("start_date", q["start_date"]) if "start_date" in q else None
    end = parse_datetime("end_date", q["end_date"]) if "end_date" in q else None
    up_after = parse_datetime("updated_after", q["updated_after"]) if "updated_after" in q else None
    up_before = parse_datetime("updated_before", q["updated_before"]) if "updated_before" in q else None
    if up_after is not None or up_before is not None:
        up_after, up_before = _window(up_after, up_before, now, "updated_after..updated_before")
        if start is not None or end is not None:
            start, end = _window(start, end, now, "start_date..end_date")
    else:
        start, end = _window(start, end, now, "start_date..end_date")
    return RequestQuery(None, codes, start, end, statuses, up_after, up_before, page, size, ext == "true")


@dataclass(frozen=True)
class Attribute:
    """One attribute of a service definition (the spec's table), as stored with the service type."""

    code: str
    datatype: str
    required: bool
    description: str
    order: int
    variable: bool = True
    datatype_description: str | None = None
    values: tuple[tuple[str, str], ...] = ()  # (key, name) for list datatypes


def attributes_of(stored: Sequence[Mapping[str, Any]]) -> list[Attribute]:
    """The stored definition as typed attributes, in the spec's `order`."""
    out = [Attribute(code=a["code"], datatype=a["datatype"], required=bool(a.get("required", False)),
                     description=a.get("description", a["code"]), order=int(a.get("order", i + 1)),
                     variable=bool(a.get("variable", True)), datatype_description=a.get("datatype_description"),
                     values=tuple((str(v["key"]), str(v["name"])) for v in a.get("values", [])))
           for i, a in enumerate(stored)]
    return sorted(out, key=lambda a: (a.order, a.code))


def check_attribute_definitions(stored: Sequence[Mapping[str, Any]]) -> list[Attribute]:
    """An admin's attribute list, refused (ValueError) unless every attribute is one the spec can describe."""
    try:
        attrs = attributes_of(stored)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"attribute definition incomplete: {exc}") from None
    codes = [a.code for a in attrs]
    if len(set(codes)) != len(codes):
        raise ValueError("attribute codes must be unique")
    for a in attrs:
        if a.datatype not in DATATYPES:
            raise ValueError(f"attribute {a.code}: datatype must be one of {', '.join(DATATYPES)}")
        if a.datatype.endswith("valuelist") and not a.values:
            raise ValueError(f"attribute {a.code}: a list datatype needs values")
    return attrs


def _check_value(a: Attribute, values: list[str]) -> list[str]:
    """One answered attribute against its datatype; returns what is stored."""
    if a.datatype != "multivaluelist" and len(values) > 1:
        raise Open311Error(400, f"attribute[{a.code}] takes one value")
    if a.datatype in ("singlevaluelist", "multivaluelist"):
        keys = {k for k, _ in a.values}
        bad = [v for v in values if v not in keys]
        if bad:
            raise Open311Error(400, f"attribute[{a.code}]: {bad[0]!r} is not one of its value keys")
    elif a.datatype == "number":
        try:
            if not math.isfinite(float(values[0])):
                raise ValueError
        except ValueError:
            raise Open311Error(400, f"attribute[{a.code}] must be a number") from None
    elif a.datatype == "datetime":
        parse_datetime(f"attribute[{a.code}]", values[0])
    if any(len(v) > MAX_FIELD for v in values):
        raise Open311Error(400, f"attribute[{a.code}] is longer than {MAX_FIELD} characters")
    return values


def check_attributes(defs: Sequence[Attribute], given: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Answers validated against the service definition: no unknown codes, every required one present."""
    by_code = {a.code: a for a in defs}
    for code in sorted(given):
        if code not in by_code:
            raise Open311Error(400, f"attribute[{code}] is not part of this service's definition")
    out: dict[str, list[str]] = {}
    for a in defs:
        values = [v for v in given.get(a.code, []) if v != ""]
        if not values:
            if a.required and a.variable:
                raise Open311Error(400, f"attribute[{a.code}] is required")
            continue
        out[a.code] = _check_value(a, values)
    return out


@dataclass(frozen=True)
class PostedRequest:
    """A POST requests body after validation (the service's attributes are checked later, against its definition)."""

    service_code: str
    lat: float | None
    lon: float | None
    address: str | None
    address_id: str | None
    description: str
    media_url: str | None
    reporter: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, list[str]] = field(default_factory=dict)


def _one(fields: Mapping[str, list[str]], name: str) -> str | None:
    """A single-valued field; repeated ones are refused rather than guessed."""
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise Open311Error(400, f"{name} was given more than once")
    value = values[0].strip()
    return value or None


def _coordinate(name: str, text: str | None, bound: float) -> float | None:
    """A finite coordinate within ±bound."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Open311Error(400, f"{name} must be a decimal number") from None
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise Open311Error(400, f"{name} must be between -{bound:g} and {bound:g}")
    return value


_POST_KEYS = frozenset({"jurisdiction_id", "api_key", "service_code", "lat", "long", "address_string", "address_id",
                        "description", "media_url", *REPORTER_FIELDS})


def posted_request(fields: Mapping[str, list[str]]) -> PostedRequest:
    """Validate POST requests fields (multi-valued, as form bodies are); attribute[code] answers are collected."""
    check_text(fields)
    attributes: dict[str, list[str]] = {}
    for key, values in fields.items():
        # attribute[code]=v, or the spec's multivaluelist form attribute[code][]=v1&attribute[code][]=v2
        attr = key[len("attribute["):-1].removesuffix("][") if key.startswith("attribute[") and key.endswith("]") else ""
        if attr and "[" not in attr and "]" not in attr:
            attributes.setdefault(attr, []).extend(values)
        elif key not in _POST_KEYS:
            raise Open311Error(400, f"unknown field {key}")
    code = _one(fields, "service_code")
    if code is None:
        raise Open311Error(400, "service_code is required")
    lat = _coordinate("lat", _one(fields, "lat"), 90.0)
    lon = _coordinate("long", _one(fields, "long"), 180.0)
    if (lat is None) != (lon is None):
        raise Open311Error(400, "lat and long must be given together")
    address, address_id = _one(fields, "address_string"), _one(fields, "address_id")
    if lat is None and address is None and address_id is None:
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    description = _one(fields, "description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise Open311Error(400, f"description is longer than {MAX_DESCRIPTION} characters")
    media_url = _one(fields, "media_url")
    if media_url is not None and (not media_url.startswith(("http://", "https://")) or len(media_url) > 2000):
        raise Open311Error(400, "media_url must be an http(s) URL of at most 2000 characters")
    reporter = {}
    for name in REPORTER_FIELDS:
        value = _one(fields, name)
        if value is not None:
            if len(value) > MAX_FIELD:
                raise Open311Error(400, f"{name} is longer than {MAX_FIELD} characters")
            reporter[name] = value
    for name, value in (("address_string", address), ("address_id", address_id)):
        if value is not None and len(value) > MAX_FIELD:
            raise Open311Error(400, f"{name} is longer than {MAX_FIELD} characters")
    return PostedRequest(code, lat, lon, address, address_id, description, media_url, reporter, attributes)

"""Shared base model and field types, so both encodings validate to identical models.

JSON has no datetime, date or UUID type and msgpack carries them as strings too, so
those fields parse from ISO 8601 / canonical text with one validator each; everything
else is strict (no "1" for 1, no 1.0 or True for an int).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Final
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    ValidationInfo,
)

from .enums import (
    MutationStatus,
    PhotoKind,
    PhotoState,
    Priority,
    RemovalReason,
    TicketStatus,
)

__all__ = [
    "DATETIME_MAX",
    "DATETIME_MIN",
    "DEVICE_CLOCK_SKEW",
    "BigInt",
    "Code64",
    "DeviceDatetime",
    "FiniteFloat",
    "Lat",
    "Lon",
    "Name",
    "NoteText",
    "Sha256Hex",
    "Version",
    "WireDate",
    "WireDatetime",
    "WireModel",
    "WireUUID",
    "format_datetime",
]

MAX_INT: Final = 2**63 - 1  # PostgreSQL bigint: a bigger value could only fail later, in SQL.
_UUID_RE: Final = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_DT_LEN: Final = 40
# Every wire datetime lies in [DATETIME_MIN, DATETIME_MAX): wide enough for historical 311 imports and any due date,
# narrow enough that PostgreSQL never stores it as ±infinity (which renders as null where the schema says datetime).
DATETIME_MIN: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
DATETIME_MAX: Final = datetime(2100, 1, 1, tzinfo=timezone.utc)
# How far a device's clock may run ahead of the server's; a later device time is a broken clock, refused per mutation.
DEVICE_CLOCK_SKEW: Final = timedelta(minutes=10)


class WireModel(BaseModel):
    """Base of every wire model: frozen and strict so a message means exactly one thing."""

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        validate_default=False,
        allow_inf_nan=False,
        hide_input_in_errors=True,
    )


def _parse_datetime(value: Any) -> Any:
    """Accept ISO 8601 text with an offset, because a naive time is ambiguous across devices."""
    if isinstance(value, str):
        if len(value) > _MAX_DT_LEN:
            raise ValueError("datetime text too long")
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("invalid ISO 8601 datetime") from None
    if not isinstance(value, datetime):
        raise ValueError("expected an ISO 8601 datetime string")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must carry a timezone offset")
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("datetime out of range") from None
    if not DATETIME_MIN <= utc < DATETIME_MAX:
        raise ValueError("datetime out of range: must be >= 1970-01-01T00:00:00Z and < 2100-01-01T00:00:00Z")
    return utc


def _not_ahead(value: datetime, info: ValidationInfo) -> datetime:
    """A device time later than the server clock plus the allowed skew is refused; the server passes
    `context={"now": datetime, "skew": timedelta}` when validating, clients without a context skip the check."""
    ctx = info.context
    if isinstance(ctx, dict) and isinstance(ctx.get("now"), datetime):
        skew = ctx.get("skew", DEVICE_CLOCK_SKEW)
        if value > ctx["now"] + skew:
            raise ValueError(f"device time is more than {int(skew.total_seconds())} s ahead of the server clock")
    return value


def format_datetime(value: datetime) -> str:
    """Render one fixed UTC form so canonical bytes and checksums agree everywhere."""
    # isoformat, not strftime: glibc's %Y drops leading zeros (year 5 → "5-01-01").
    utc = value.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _parse_date(value: Any) -> Any:
    """Accept only YYYY-MM-DD, so a datetime or a number is never silently truncated."""
    if isinstance(value, str):
        if not _DATE_RE.match(value):
            raise ValueError("expected a YYYY-MM-DD date")
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValueError("invalid date") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        if not DATETIME_MIN.date() <= value < DATETIME_MAX.date():
            raise ValueError("date out of range: must be >= 1970-01-01 and < 2100-01-01")
        return value
    raise ValueError("expected a YYYY-MM-DD date string")


# Ids already parsed, by their text: a crew's pushes name the same few hundred tickets over and over, and building a
# UUID (Python code in the standard library) cost more than the rest of its field's validation. Only texts that
# parsed are kept, so a cached answer is the one parsing would give; bounded (emptied when full), no I/O.
_UUID_CACHE: Final[dict[str, UUID]] = {}
_UUID_CACHE_MAX: Final = 16_384


def _parse_uuid(value: Any) -> Any:
    """Accept only the canonical hyphenated form, so one id has one spelling on the wire."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        known = _UUID_CACHE.get(value)
        if known is not None:
            return known
        if _UUID_RE.match(value):
            parsed = UUID(value)
            if len(_UUID_CACHE) >= _UUID_CACHE_MAX:
                _UUID_CACHE.clear()
            _UUID_CACHE[value] = parsed
            return parsed
    raise ValueError("expected a canonical UUID string")


WireDatetime = Annotated[
    datetime,
    BeforeValidator(_parse_datetime),
    PlainSerializer(format_datetime, return_type=str, when_used="json"),
]
# A time read from a device clock (mutation device_time, photo taken_at): in range and not in the future (beyond skew).
DeviceDatetime = Annotated[WireDatetime, AfterValidator(_not_ahead)]
WireDate = Annotated[
    date,
    BeforeValidator(_parse_date),
    PlainSerializer(date.isoformat, return_type=str, when_used="json"),
]
WireUUID = Annotated[
    UUID,
    BeforeValidator(_parse_uuid),
    PlainSerializer(str, return_type=str, when_used="json"),
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Lat = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Lon = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
BigInt = Annotated[int, Field(ge=0, le=MAX_INT)]
Version = Annotated[int, Field(ge=1, le=MAX_INT)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Code64 = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(max_length=255)]
NoteText = Annotated[str, StringConstraints(min_length=1, max_length=4000)]

# Enums arrive as plain strings from both decoders; strict mode would demand instances.
TicketStatusField = Annotated[TicketStatus, Strict(False)]
PriorityField = Annotated[Priority, Strict(False)]
PhotoKindField = Annotated[PhotoKind, Strict(False)]
PhotoStateField = Annotated[PhotoState, Strict(False)]
MutationStatusField = Annotated[MutationStatus, Strict(False)]
RemovalReasonField = Annotated[RemovalReason, Strict(False)]

"""Ticket and pull messages: what a device's replica is made of (I3, I4, I7)."""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from .fields import (
    BigInt,
    Code64,
    Lat,
    Lon,
    Name,
    NoteText,
    PhotoKindField,
    PhotoStateField,
    PriorityField,
    RemovalReasonField,
    Sha256Hex,
    TicketStatusField,
    Version,
    WireDate,
    WireDatetime,
    WireModel,
    WireUUID,
)

__all__ = [
    "MAX_ITEM_LINES",
    "Change",
    "GeoPoint",
    "ItemLine",
    "Note",
    "PhotoRef",
    "PullRequest",
    "PullResponse",
    "Ticket",
    "TicketRemoval",
    "TicketUpsert",
]

MAX_ITEM_LINES: Final = 10
MAX_NOTES: Final = 1000  # bounds a ticket's size on the wire; far above any real ticket
MAX_PHOTOS: Final = 200


class GeoPoint(WireModel):
    """Where the device was when it acted; evidence for late field reports."""

    lat: Lat
    lon: Lon
    accuracy_m: Annotated[float, Field(ge=0.0, le=1e7, allow_inf_nan=False)] | None = None


class Note(WireModel):
    """Append-only free text; deduplicated by id so a resend never doubles it."""

    id: WireUUID
    text: NoteText
    author: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    device_time: WireDatetime | None = None
    created_at: WireDatetime


class PhotoRef(WireModel):
    """A content-addressed photo reference; bytes travel separately over tus (I8)."""

    sha256: Sha256Hex
    kind: PhotoKindField
    taken_at: WireDatetime
    state: PhotoStateField
    lat: Lat | None = None
    lon: Lon | None = None


class ItemLine(WireModel):
    """One collected item type and its count (e.g. 2 mattresses)."""

    item_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    count: Annotated[int, Field(ge=0, le=999)]


def check_unique_items(items: list[ItemLine]) -> None:
    """Item lines are keyed by type; two lines of one type would make a merge ambiguous."""
    seen: set[str] = set()
    for line in items:
        if line.item_type in seen:
            raise ValueError(f"duplicate item_type {line.item_type!r}")
        seen.add(line.item_type)


class Ticket(WireModel):
    """The whole current ticket as the device stores it; canonical form is defined on it."""

    id: WireUUID
    sr_number: Name | None = None
    service_type: Name
    department: Name
    status: TicketStatusField
    priority: PriorityField
    address: Annotated[str, StringConstraints(max_length=500)]
    zip: Annotated[str, StringConstraints(max_length=16)] | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    council_district: Annotated[int, Field(ge=0, le=9999)] | None = None
    description: Annotated[str, StringConstraints(max_length=8000)] = ""
    source: Name | None = None
    requested_at: WireDatetime
    service_date: WireDate | None = None
    due_at: WireDatetime | None = None
    crew: Name | None = None
    notes: Annotated[list[Note], Field(max_length=MAX_NOTES)] = Field(default_factory=list)
    photos: Annotated[list[PhotoRef], Field(max_length=MAX_PHOTOS)] = Field(
        default_factory=list
    )
    items: Annotated[list[ItemLine], Field(max_length=MAX_ITEM_LINES)] = Field(
        default_factory=list
    )
    resolution_code: Code64 | None = None
    reason_code: Code64 | None = None
    created_by_device: Name | None = None
    updated_at: WireDatetime
    version: Version

    @model_validator(mode="after")
    def _unique_items(self) -> Self:
        """Reject duplicate item types (see check_unique_items)."""
        check_unique_items(self.items)
        return self


class PullRequest(WireModel):
    """Ask for the next page; a null cursor starts a fresh snapshot."""

    # No max_length here: SPEC §9 promises `cursor_invalid` (pull with null) for a cursor over 2048 characters, and
    # CursorSigner.decode refuses it so; a schema bound made it validation_failed, which a client cannot recover from.
    cursor: Annotated[str, StringConstraints(min_length=1)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 500


class TicketUpsert(WireModel):
    """The whole current ticket: entering scope is a back-fill, never a log replay (I3)."""

    kind: Literal["upsert"]
    ticket: Ticket


class TicketRemoval(WireModel):
    """The ticket left the device's scope; the reason tells the crew why."""

    kind: Literal["remove"]
    ticket_id: WireUUID
    reason: RemovalReasonField


Change = Annotated[TicketUpsert | TicketRemoval, Field(discriminator="kind")]


class PullResponse(WireModel):
    """One page of one consistent snapshot; apply the page set all or nothing (I7)."""

    changes: list[Change]
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    has_more: bool
    reset: bool = False
    scope_checksum: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    watermark: BigInt
    server_time: WireDatetime

"""Push messages: mutations are intents with a device seq, never row overwrites (I1, I5, I6)."""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self, Union

from pydantic import Field, StringConstraints, model_validator

from .errors import ReasonCode
from .fields import (
    BigInt,
    Code64,
    DeviceDatetime,
    Lat,
    Lon,
    MutationStatusField,
    NoteText,
    PhotoKindField,
    RemovalReasonField,
    Sha256Hex,
    WireModel,
    WireUUID,
)
from .models import MAX_ITEM_LINES, GeoPoint, ItemLine, Ticket, check_unique_items

__all__ = [
    "MAX_MUTATIONS",
    "OPS",
    "AcknowledgeArgs",
    "AcknowledgeMutation",
    "AddNoteArgs",
    "AddNoteMutation",
    "AttachPhotoArgs",
    "AttachPhotoMutation",
    "CompleteArgs",
    "CompleteMutation",
    "ConflictInfo",
    "DeclineArgs",
    "DeclineMutation",
    "Mutation",
    "MutationResult",
    "PauseArgs",
    "PauseMutation",
    "PushRequest",
    "PushResponse",
    "ResumeArgs",
    "ResumeMutation",
    "SelfReportArgs",
    "SelfReportMutation",
    "SetItemsArgs",
    "SetItemsMutation",
    "SetResolutionArgs",
    "SetResolutionMutation",
    "StartArgs",
    "StartMutation",
    "UnableToCompleteArgs",
    "UnableToCompleteMutation",
]

MAX_MUTATIONS: Final = 500
OptionalNote = Annotated[str, StringConstraints(min_length=1, max_length=4000)] | None
Scalar = str | int | float | bool | None


# --- args, one model per op; all forbid unknown fields (inherited from WireModel) ---


class AcknowledgeArgs(WireModel):
    """No arguments: the crew has seen the assignment."""


class StartArgs(WireModel):
    """No arguments: work begins on site."""


class PauseArgs(WireModel):
    """Why work stopped (e.g. waiting for a second truck)."""

    reason: Annotated[str, StringConstraints(max_length=255)] | None = None


class ResumeArgs(WireModel):
    """No arguments: work continues after a pause."""


class AddNoteArgs(WireModel):
    """The note id is client-generated so a replay deduplicates instead of doubling."""

    note_id: WireUUID
    text: NoteText


class SetItemsArgs(WireModel):
    """The full item list; crew-owned, merged field-level with other devices."""

    items: Annotated[list[ItemLine], Field(min_length=1, max_length=MAX_ITEM_LINES)]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        """Item types are keys; duplicates would be ambiguous."""
        check_unique_items(self.items)
        return self


class SetResolutionArgs(WireModel):
    """Crew-owned resolution code, settable before completing."""

    resolution_code: Code64


class AttachPhotoArgs(WireModel):
    """Reference to photo bytes uploaded (or to be uploaded) over tus by SHA-256."""

    sha256: Sha256Hex
    kind: PhotoKindField
    taken_at: DeviceDatetime
    lat: Lat | None = None
    lon: Lon | None = None


class CompleteArgs(WireModel):
    """Terminal crew transition; wins over concurrent non-terminal transitions."""

    resolution_code: Code64
    note: OptionalNote = None


class UnableToCompleteArgs(WireModel):
    """Terminal crew transition with the reason the work could not be done."""

    reason_code: Code64
    note: OptionalNote = None


class DeclineArgs(WireModel):
    """Hand the ticket back to the supervisor (it becomes unassigned)."""

    reason_code: Code64
    note: OptionalNote = None


class SelfReportArgs(WireModel):
    """Create-and-close a proactive ticket (e.g. graffiti painted over)."""

    service_type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    address: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    lat: Lat
    lon: Lon
    zip: Annotated[str, StringConstraints(max_length=16)] | None = None
    description: Annotated[str, StringConstraints(max_length=8000)] = ""
    resolution_code: Code64
    items: Annotated[list[ItemLine], Field(max_length=MAX_ITEM_LINES)] = Field(
        default_factory=list
    )
    note: OptionalNote = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        """Item types are keys; duplicates would be ambiguous."""
        check_unique_items(self.items)
        return self


# --- mutations, discriminated on `op` ---


class _MutationBase(WireModel):
    """Fields every op carries: the exactly-once key and the device's context."""

    seq: Annotated[int, Field(ge=1, le=2**63 - 1)]
    ticket_id: WireUUID
    base_version: BigInt | None = None
    device_time: DeviceDatetime
    gps: GeoPoint | None = None


class AcknowledgeMutation(_MutationBase):
    """assigned → acknowledged."""

    op: Literal["acknowledge"]
    args: AcknowledgeArgs


class StartMutation(_MutationBase):
    """assigned, acknowledged or reopened → in_progress (crews may skip acknowledge)."""

    op: Literal["start"]
    args: StartArgs


class PauseMutation(_MutationBase):
    """in_progress → paused."""

    op: Literal["pause"]
    args: PauseArgs


class ResumeMutation(_MutationBase):
    """paused → in_progress."""

    op: Literal["resume"]
    args: ResumeArgs


class AddNoteMutation(_MutationBase):
    """Append a note (append-only, never conflicts)."""

    op: Literal["add_note"]
    args: AddNoteArgs


class SetItemsMutation(_MutationBase):
    """Replace the item lines (crew-owned, field-level merge)."""

    op: Literal["set_items"]
    args: SetItemsArgs


class SetResolutionMutation(_MutationBase):
    """Set the resolution code (crew-owned, field-level merge)."""

    op: Literal["set_resolution"]
    args: SetResolutionArgs


class AttachPhotoMutation(_MutationBase):
    """Attach a photo reference (append-only, dedup by sha256 and kind)."""

    op: Literal["attach_photo"]
    args: AttachPhotoArgs


class CompleteMutation(_MutationBase):
    """→ completed."""

    op: Literal["complete"]
    args: CompleteArgs


class UnableToCompleteMutation(_MutationBase):
    """→ unable_to_complete."""

    op: Literal["unable_to_complete"]
    args: UnableToCompleteArgs


class DeclineMutation(_MutationBase):
    """→ unassigned, leaves the crew's scope."""

    op: Literal["decline"]
    args: DeclineArgs


class SelfReportMutation(_MutationBase):
    """Create and complete a new ticket whose id is `ticket_id` (client-generated)."""

    op: Literal["self_report"]
    args: SelfReportArgs


Mutation = Annotated[
    Union[
        AcknowledgeMutation,
        StartMutation,
        PauseMutation,
        ResumeMutation,
        AddNoteMutation,
        SetItemsMutation,
        SetResolutionMutation,
        AttachPhotoMutation,
        CompleteMutation,
        UnableToCompleteMutation,
        DeclineMutation,
        SelfReportMutation,
    ],
    Field(discriminator="op"),
]

OPS: Final[tuple[str, ...]] = (
    "acknowledge",
    "start",
    "pause",
    "resume",
    "add_note",
    "set_items",
    "set_resolution",
    "attach_photo",
    "complete",
    "unable_to_complete",
    "decline",
    "self_report",
)


class PushRequest(WireModel):
    """A run of consecutive seqs from the device outbox, oldest first."""

    mutations: Annotated[list[Mutation], Field(min_length=1, max_length=MAX_MUTATIONS)]

    @model_validator(mode="after")
    def _consecutive(self) -> Self:
        """Seqs are gap-free per device (I1), so a batch must be one consecutive run."""
        first = self.mutations[0].seq
        for offset, mutation in enumerate(self.mutations):
            if mutation.seq != first + offset:
                raise ValueError(
                    f"seqs must be consecutive: expected {first + offset}, got {mutation.seq}"
                )
        return self


class ConflictInfo(WireModel):
    """What a merge kept and discarded, so the device can show the crew (I5, I9)."""

    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    # a ticket field, or `items.<item_type>` for an item line: item types are up to 64 characters, so 6 + 64
    field: Annotated[str, StringConstraints(max_length=70)] | None = None
    kept: Scalar = None
    discarded: Scalar = None
    detail: Annotated[str, StringConstraints(max_length=4000)] | None = None


class MutationResult(WireModel):
    """The outcome of one seq; stored by the server and returned unchanged on replay."""

    seq: Annotated[int, Field(ge=1, le=2**63 - 1)]
    status: MutationStatusField
    reason: Annotated[ReasonCode | None, Field(strict=False)] = None
    message: Annotated[str, StringConstraints(max_length=4000)] | None = None
    ticket: Ticket | None = None
    removed: RemovalReasonField | None = None
    conflicts: list[ConflictInfo] = Field(default_factory=list)
    server_version: BigInt
    replayed: bool = False

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> Self:
        """A rejection without a typed reason would be a silent failure (I5)."""
        if self.status == "rejected" and self.reason is None:
            raise ValueError("a rejected result must carry a reason")
        return self


class PushResponse(WireModel):
    """Results in seq order, plus the server version the batch committed at (I7)."""

    results: list[MutationResult]
    server_version: BigInt
    last_seq: BigInt



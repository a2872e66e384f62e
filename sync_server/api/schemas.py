"""Request and response models of the supervisor/admin API: the same frozen, strict wire base as the device protocol, so unknown fields and wrong types are typed errors and OpenAPI is generated from them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from protocol import Priority, Ticket, WireModel
from protocol.fields import Lat, Lon, PriorityField, WireDate, WireDatetime, WireUUID
from sync_server.api.params import ParamInt, ParamModel, parse_query, read_query

MAX_BULK = 500  # tickets per bulk request: one lock set, one transaction, bounded lock time
MAX_PAGE = 500

Text1 = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
TicketIds = Annotated[list[WireUUID], Field(min_length=1, max_length=MAX_BULK)]
# A Literal (not the enum) so the query parameter's schema is inline: OpenAPI parameters cannot use the query
# model's private $defs.
# tests/test_openapi.py checks it lists exactly the TicketStatus values.
StatusName = Literal["unassigned", "assigned", "acknowledged", "in_progress", "paused", "completed",
                     "unable_to_complete", "closed", "cancelled", "duplicate", "reopened"]


# ---- requests -------------------------------------------------------------------------------------------------


class CreateTicketRequest(WireModel):
    """A ticket from the supervisor's desk; with a crew it starts assigned, else unassigned."""

    service_type: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description="Service type name (e.g. 'Bulky Items') or code (e.g. 'bulky_items').")
    address: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    zip: Annotated[str, StringConstraints(max_length=16)] | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    council_district: Annotated[int, Field(ge=0, le=9999)] | None = None
    description: Annotated[str, StringConstraints(max_length=8000)] = ""
    priority: PriorityField = Priority.NORMAL
    due_at: WireDatetime | None = None
    service_date: WireDate | None = None
    requested_at: WireDatetime | None = Field(default=None, description="When the resident asked; defaults to now.")
    crew: Text1 | None = None
    sr_number: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="City service-request number; unique (a duplicate answers 409 conflict).")


class TicketListQuery(ParamModel):
    """Filters and keyset position of a ticket listing; query strings are text, so this model converts types."""

    # at least one: `status=` (empty) filtered on no status at all and listed nothing, silently
    status: Annotated[list[StatusName], Field(min_length=1)] | None = Field(
        default=None, description="Repeatable, or a comma-separated list; at least one status.")
    crew: Text1 | None = None
    service_type: Text1 | None = Field(default=None, description="Service type name or code.")
    updated_since: WireDatetime | None = Field(default=None, description="Inclusive lower bound on updated_at (ISO 8601 with offset).")
    q: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="SR number, exact match.")
    limit: ParamInt(1, MAX_PAGE) = 100  # type: ignore[valid-type]
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None, description="Opaque next_cursor of the previous page.")


class TicketPath(ParamModel):
    """A ticket in the path; a malformed id is a ticket that does not exist (404)."""

    id: WireUUID


class AssignRequest(WireModel):
    """Assign or reassign one ticket to a crew of its department."""

    crew: Text1


class BulkAssignRequest(WireModel):
    """Assign many tickets to one crew, all or nothing."""

    ticket_ids: TicketIds
    crew: Text1


def _not_nullable(*names: str) -> Any:
    """Drop the null default pydantic documents for fields that are optional but never null."""

    def edit(schema: dict[str, Any]) -> None:
        for name in names:
            schema["properties"][name].pop("default", None)
        schema["minProperties"] = 1  # an empty patch is refused (below)

    return edit


class PatchTicketRequest(WireModel):
    """Supervisor-owned fields; an omitted field is left alone, an explicit null clears a date."""

    # priority and description cannot be cleared, so their schema has no null (defaults only mark them optional)
    model_config = ConfigDict(json_schema_extra=_not_nullable("priority", "description"))
    priority: PriorityField = None  # type: ignore[assignment]
    due_at: WireDatetime | None = None
    service_date: WireDate | None = None
    description: Annotated[str, StringConstraints(max_length=8000)] = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _something(self) -> Self:
        """An empty patch is almost certainly a client bug; say so instead of answering 200."""
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        for name in ("priority", "description"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class BulkPriorityRequest(WireModel):
    """Reprioritise many tickets, all or nothing."""

    ticket_ids: TicketIds
    priority: PriorityField


class CancelRequest(WireModel):
    """Cancelling takes work away from a crew, so the reason is mandatory (crews see it)."""

    reason: Reason


class DuplicateRequest(WireModel):
    """Merge a ticket into another open request of the same department."""

    of: WireUUID
    reason: Reason | None = None


class CloseRequest(WireModel):
    """Close field-finished work."""

    reason: Reason | None = None


class ReopenRequest(WireModel):
    """Reopening sends work back to the field, so the crew is told why."""

    reason: Reason


class DeviceListQuery(ParamModel):
    """Optional crew filter of the device listing."""

    crew: Text1 | None = None


class EnrollDeviceRequest(WireModel):
    """Enrol a phone or tablet to a crew."""

    crew: Text1
    label: Annotated[str, StringConstraints(max_length=255)] | None = None


class CreateUserRequest(WireModel):
    """A supervisor (bound to one department) or another admin."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")]
    role: Literal["supervisor", "admin"]
    department: Text1 | None = Field(default=None, description="Department code; required for supervisors, absent for admins.")

    @model_validator(mode="after")
    def _department_matches_role(self) -> Self:
        """The users table enforces the same rule; checking here turns it into a 422 instead of a 500."""
        if (self.role == "supervisor") != (self.department is not None):
            raise ValueError("a supervisor needs a department; an admin has none")
        return self


# ---- responses ------------------------------------------------------------------------------------------------


class AuditEntry(WireModel):
    """One audit row (I9): who did what to the ticket, with the changed fields before and after."""

    at: WireDatetime
    actor_kind: str
    actor: str
    action: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    reason: str | None = None


class TicketPage(WireModel):
    """One keyset page, ordered by (updated_at, id); next_cursor is null on the last page."""

    tickets: list[Ticket]
    next_cursor: str | None = None


class TicketDetail(WireModel):
    """A ticket with its audit history, oldest first."""

    ticket: Ticket
    duplicate_of: WireUUID | None = None
    history: list[AuditEntry]
    history_truncated: bool = False


class BulkResult(WireModel):
    """Every requested ticket as it is now; `changed` lists those that were not already in the asked state."""

    tickets: list[Ticket]
    changed: list[WireUUID]


class CrewInfo(WireModel):
    """A crew with its active-device and open-ticket counts."""

    id: int
    name: str
    display_name: str | None = None
    department: str
    active: bool
    retired_at: WireDatetime | None = None
    devices: int
    open_tickets: int


class CrewList(WireModel):
    """Crews visible to the caller."""

    crews: list[CrewInfo]


class DeviceInfo(WireModel):
    """An enrolled device; token hashes are never exposed."""

    id: str
    crew: str
    department: str
    label: str | None = None
    enrolled_at: WireDatetime
    last_seen_at: WireDatetime | None = None
    revoked_at: WireDatetime | None = None


class DeviceList(WireModel):
    """Devices visible to the caller."""

    devices: list[DeviceInfo]


class EnrolledDevice(WireModel):
    """A new device and its token; the token is shown only in this response."""

    device_id: str
    token: str
    crew: str


class CreatedUser(WireModel):
    """A new user and its token; the token is shown only in this response."""

    name: str
    role: str
    department: str | None = None
    token: str


# ---- query decoding lives in sync_server/api/params.py (one typed layer for query and path parameters) ----------

__all__ = ["read_query", "parse_query"]

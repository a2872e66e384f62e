"""Wire enums: lowercase string values so JSON, msgpack and SQL all carry the same text."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FIELD_DONE_STATUSES",
    "HELD_STATUSES",
    "MutationStatus",
    "OPEN_STATUSES",
    "PhotoKind",
    "PhotoState",
    "Priority",
    "RemovalReason",
    "TERMINAL_STATUSES",
    "TicketStatus",
    "WORKABLE_STATUSES",
]


class TicketStatus(StrEnum):
    """Ticket lifecycle states; the transition table lives in sync_server/domain."""

    UNASSIGNED = "unassigned"
    ASSIGNED = "assigned"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    COMPLETED = "completed"
    UNABLE_TO_COMPLETE = "unable_to_complete"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    DUPLICATE = "duplicate"
    REOPENED = "reopened"


_S = TicketStatus
# The status sets SPEC §2 names, here once so clients and the server share them instead of keeping copies.
# Open: not finished in the field and not closed; a supervisor may assign, cancel or mark it a duplicate.
OPEN_STATUSES: frozenset[TicketStatus] = frozenset({_S.UNASSIGNED, _S.ASSIGNED, _S.ACKNOWLEDGED, _S.IN_PROGRESS,
                                                    _S.PAUSED, _S.REOPENED})
# Workable: a crew may still work the ticket (acknowledge, start, complete, ...).
WORKABLE_STATUSES: frozenset[TicketStatus] = frozenset({_S.ASSIGNED, _S.ACKNOWLEDGED, _S.IN_PROGRESS, _S.PAUSED,
                                                        _S.REOPENED})
# Field-done: the crew finished (or could not); it waits for a supervisor to close it.
FIELD_DONE_STATUSES: frozenset[TicketStatus] = frozenset({_S.COMPLETED, _S.UNABLE_TO_COMPLETE})
# Held: the assigned crew's devices hold the ticket (it is in their scope), finished work until it is closed.
HELD_STATUSES: frozenset[TicketStatus] = WORKABLE_STATUSES | FIELD_DONE_STATUSES
# Terminal: no crew holds it and only a reopen (from closed) brings it back.
TERMINAL_STATUSES: frozenset[TicketStatus] = frozenset({_S.CLOSED, _S.CANCELLED, _S.DUPLICATE})


class Priority(StrEnum):
    """Supervisor-owned urgency; devices sort their work list by it."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class PhotoKind(StrEnum):
    """Before/after evidence, required by the city's closure rules."""

    BEFORE = "before"
    AFTER = "after"


class PhotoState(StrEnum):
    """Whether the bytes behind a photo reference have been uploaded and verified (I8)."""

    PENDING = "pending"
    AVAILABLE = "available"


class MutationStatus(StrEnum):
    """Outcome of one pushed mutation, so nothing is ever silently dropped (I5)."""

    APPLIED = "applied"
    MERGED = "merged"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class RemovalReason(StrEnum):
    """Why a ticket left a device's scope, so the UI can tell the crew (I3)."""

    REASSIGNED = "reassigned"
    CANCELLED = "cancelled"
    DUPLICATE = "duplicate"
    CLOSED = "closed"
    DECLINED = "declined"
    UNASSIGNED = "unassigned"

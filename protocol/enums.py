"""Wire enums: lowercase string values so JSON, msgpack and SQL all carry the same text."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "MutationStatus",
    "PhotoKind",
    "PhotoState",
    "Priority",
    "RemovalReason",
    "TicketStatus",
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

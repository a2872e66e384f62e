"""The merge/conflict table for crew mutations: one place that decides what a queued offline intent does to the server's ticket.

Pure: no I/O. The push engine loads the locked tickets, folds each mutation through `apply`, and writes the result.
Read the tables first; the code below them only looks rows up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from protocol import MutationStatus, ReasonCode, RemovalReason, TicketStatus
from sync_server.domain.states import (
    FIELD_DONE,
    OPEN,
    RANK,
    Action,
    Actor,
    TransitionError,
    holder,
    removal_reason,
    transition,
)

S = TicketStatus


class Where(StrEnum):
    """The ticket's relation to the pushing device's crew at apply time."""

    HELD = "held"          # the crew holds it now
    LEFT = "left"          # the crew held it once; it was reassigned, cancelled, closed or marked duplicate since
    FOREIGN = "foreign"    # never the crew's (or does not exist): answered exactly like "does not exist" (I3)


class Rule(StrEnum):
    """What to do with one mutation."""

    APPLY = "apply"                # do it
    STALE = "stale"                # already at or past the target state: no change, the device is told (merged)
    APPLY_LATE = "apply_late"      # late field report whose effect is still applied (work that happened)
    KEEP_LATE = "keep_late"        # late field report kept for the supervisor, ticket unchanged
    REJECT_SCOPE = "reject_scope"  # rejected: not in the crew's scope
    REJECT_ILLEGAL = "reject_illegal"


STATUS_OPS: dict[str, Action] = {
    "acknowledge": Action.ACKNOWLEDGE,
    "start": Action.START,
    "pause": Action.PAUSE,
    "resume": Action.RESUME,
    "complete": Action.COMPLETE,
    "unable_to_complete": Action.UNABLE_TO_COMPLETE,
    "decline": Action.DECLINE,
}
APPEND_OPS = frozenset({"add_note", "attach_photo"})
FIELD_OPS = frozenset({"set_items", "set_resolution"})

# Late field reports: (op, current status of a ticket the crew no longer holds) -> rule. docs/architecture.md, conflict rules:
# field work is never dropped; a completed pickup stays completed even if it was cancelled or reassigned meanwhile,
# because the truck really took the mattress away. A duplicate or closed ticket is left as the supervisor set it and
# the report is kept for review. "Unable to complete" on a ticket another crew now owns changes nothing: they will go.
_LEFT_OPEN = OPEN
LATE: dict[tuple[str, TicketStatus], Rule] = {
    **{("complete", s): Rule.APPLY_LATE for s in _LEFT_OPEN},
    ("complete", S.CANCELLED): Rule.APPLY_LATE,
    ("complete", S.DUPLICATE): Rule.KEEP_LATE,
    ("complete", S.CLOSED): Rule.KEEP_LATE,
    ("complete", S.COMPLETED): Rule.KEEP_LATE,
    ("complete", S.UNABLE_TO_COMPLETE): Rule.KEEP_LATE,
    **{("unable_to_complete", s): Rule.KEEP_LATE for s in S},
    **{("add_note", s): Rule.APPLY_LATE for s in S},
    **{("attach_photo", s): Rule.APPLY_LATE for s in S},
    **{("set_items", s): Rule.KEEP_LATE for s in S},
    **{("set_resolution", s): Rule.KEEP_LATE for s in S},
}
# acknowledge/start/pause/resume/decline on a ticket the crew no longer holds do no work worth keeping: rejected.


@dataclass
class DeviceCtx:
    """The pushing device, as the rules need it."""

    device_id: str
    crew_id: int
    department_id: int


@dataclass
class WorkTicket:
    """The mutable, crew-relevant part of a locked ticket, folded through a batch of mutations in memory."""

    id: UUID
    status: TicketStatus
    crew_id: int | None
    department_id: int
    version: int
    resolution_code: str | None
    reason_code: str | None
    items: dict[str, int]
    note_ids: set[UUID]
    photos: set[tuple[str, str]]
    field_meta: dict[str, dict[str, Any]]
    ever_held_by: set[int]
    created_by_device: str | None = None
    touched: bool = False

    def where(self, dev: DeviceCtx) -> Where:
        """HELD / LEFT / FOREIGN for this device's crew."""
        if holder(self.status, self.crew_id) == dev.crew_id:
            return Where.HELD
        if dev.crew_id in self.ever_held_by or self.created_by_device == dev.device_id:
            return Where.LEFT
        return Where.FOREIGN

    def copy(self) -> WorkTicket:
        """Independent copy, so a rejected mutation leaves no trace (containers copied one level: values are immutable)."""
        # instance dict copied, not dataclasses.replace: the fold copies once per mutation, and replace() re-runs
        # __init__ through keyword introspection (a measurable share of a push)
        new = WorkTicket.__new__(WorkTicket)
        new.__dict__.update(self.__dict__)
        new.items, new.note_ids, new.photos = dict(self.items), set(self.note_ids), set(self.photos)
        new.field_meta = {k: dict(v) for k, v in self.field_meta.items()}
        new.ever_held_by = set(self.ever_held_by)
        return new


@dataclass
class Conflict:
    """A conflict or late-report record, for the supervisor and the device."""

    kind: str
    field: str | None = None
    kept: Any = None
    discarded: Any = None
    detail: str | None = None


@dataclass
class Outcome:
    """What one mutation did: result status for the device plus the writes the engine must make."""

    status: MutationStatus
    reason: ReasonCode | None = None
    message: str | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    new_note: tuple[UUID, str] | None = None
    new_photo: dict[str, Any] | None = None
    audit_action: str | None = None

    @property
    def changed_ticket(self) -> bool:
        """Whether the ticket must be written (rejections and pure no-ops write nothing but the result)."""
        return self.status in (MutationStatus.APPLIED, MutationStatus.MERGED) and self.audit_action is not None


def rejected(reason: ReasonCode, message: str) -> Outcome:
    """A permanent, typed refusal (I6): the seq still advances."""
    return Outcome(MutationStatus.REJECTED, reason, message)


def apply(t: WorkTicket, op: str, args: Any, dev: DeviceCtx, *, base_version: int | None, device_time: datetime,
          note_id: UUID | None = None) -> Outcome:
    """Fold one crew mutation into `t` (in place) and say what happened; never raises for domain reasons.

    A `note` argument (complete, unable_to_complete, decline) becomes a ticket note with id `note_id` (derived from
    device and seq by the caller, protocol.canonical.op_note_id) whenever the mutation is not rejected: the same
    append-only, dedup-by-id rule as `add_note`, so a replay can never add it twice.
    """
    out = _apply(t, op, args, dev, base_version, device_time)
    note = op_note(args)
    if note and note_id is not None and out.status is not MutationStatus.REJECTED and note_id not in t.note_ids:
        t.note_ids.add(note_id)
        t.touched = True
        out.new_note = (note_id, note)
        if out.audit_action is None:
            out.audit_action = "add_note"
    return out


def op_note(args: Any) -> str | None:
    """The `note` argument of an op that carries one (complete, unable_to_complete, decline, self_report), else None.

    Looked up in the model's declared fields first: getattr with a default on a pydantic model without the field
    raises and catches an AttributeError, a measurable cost when every mutation of a push asks. The class's plain
    `__pydantic_fields__` dict, not `model_fields`: pydantic serves that through a deprecation-checking descriptor that
    cost a 25-mutation push ~15 % of its Python time."""
    fields = getattr(type(args), "__pydantic_fields__", None)
    if fields is not None:
        return args.note if "note" in fields else None
    return getattr(args, "note", None)


def _apply(t: WorkTicket, op: str, args: Any, dev: DeviceCtx, base_version: int | None, device_time: datetime) -> Outcome:
    where = t.where(dev)
    if where is Where.FOREIGN:
        return rejected(ReasonCode.NOT_IN_SCOPE, "ticket is not in your crew's scope")
    if where is Where.LEFT:
        rule = LATE.get((op, t.status), Rule.REJECT_SCOPE)
        if rule is Rule.REJECT_SCOPE:
            return rejected(ReasonCode.NOT_IN_SCOPE, f"ticket left your crew's scope ({t.status.value})")
        return _late(t, op, args, dev, rule, base_version, device_time)
    if op in STATUS_OPS:
        return _status(t, op, args, dev, device_time)
    if op in APPEND_OPS:
        return _append(t, op, args, dev)
    if op in FIELD_OPS:
        return _fields(t, op, args, dev, base_version, device_time)
    return rejected(ReasonCode.UNKNOWN_OP, f"unknown op {op!r}")


def _status(t: WorkTicket, op: str, args: Any, dev: DeviceCtx, device_time: datetime) -> Outcome:
    """State-machine ops on a held ticket: legal moves apply; moves to a state already reached or passed are stale."""
    action = STATUS_OPS[op]
    try:
        target = transition(t.status, action, Actor.CREW)
    except TransitionError as exc:
        _, _, wanted = _target(action)
        if RANK[wanted] <= RANK[t.status] or t.status in FIELD_DONE:
            out = Outcome(MutationStatus.MERGED, ReasonCode.STALE_TRANSITION, f"ticket is already {t.status.value}")
            if action in (Action.COMPLETE, Action.UNABLE_TO_COMPLETE) and t.status in FIELD_DONE:
                # Two devices of one crew finished the same job: the first report stands, the second is kept.
                out.conflicts.append(Conflict("terminal_conflict", "status", t.status.value, wanted.value,
                                              f"{op} arrived after the ticket was {t.status.value}"))
                out.audit_action = "conflict"
            return out
        return rejected(ReasonCode.ILLEGAL_TRANSITION, str(exc))
    _set_status(t, target, args, dev, device_time)
    return Outcome(MutationStatus.APPLIED, audit_action=op)


def _target(action: Action) -> tuple[Actor, frozenset[TicketStatus], TicketStatus]:
    from sync_server.domain.states import TRANSITIONS

    return TRANSITIONS[action]


def _set_status(t: WorkTicket, target: TicketStatus, args: Any, dev: DeviceCtx, device_time: datetime) -> None:
    """Apply a status move with the codes it carries; a decline hands the ticket back to the supervisor."""
    t.status = target
    t.touched = True
    if target is S.COMPLETED:
        t.resolution_code = args.resolution_code
        # Stamped like a set_resolution (device time included): without it any concurrent edit, however older,
        # would beat the completion's code in _fields (an empty time sorts first).
        t.field_meta["resolution_code"] = {"v": t.version + 1, "t": device_time.isoformat(), "d": dev.device_id}
    elif target is S.UNABLE_TO_COMPLETE:
        t.reason_code = args.reason_code
    elif target is S.UNASSIGNED:
        t.reason_code = args.reason_code
        t.crew_id = None


def _append(t: WorkTicket, op: str, args: Any, dev: DeviceCtx) -> Outcome:
    """Notes and photos are append-only and keyed by id, so they never conflict; a repeat is a duplicate."""
    if op == "add_note":
        if args.note_id in t.note_ids:
            return Outcome(MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS, "note already recorded")
        t.note_ids.add(args.note_id)
        t.touched = True
        return Outcome(MutationStatus.APPLIED, new_note=(args.note_id, args.text), audit_action=op)
    key = (args.sha256, args.kind.value)
    if key in t.photos:
        return Outcome(MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS, "photo already attached")
    t.photos.add(key)
    t.touched = True
    return Outcome(
        MutationStatus.APPLIED,
        new_photo={"sha256": args.sha256, "kind": args.kind.value, "taken_at": args.taken_at, "lat": args.lat, "lon": args.lon},
        audit_action=op,
    )


def _fields(t: WorkTicket, op: str, args: Any, dev: DeviceCtx, base_version: int | None, device_time: datetime) -> Outcome:
    """Crew-owned scalars merge field by field; concurrent edits resolve by (device_time, device_id), loser recorded."""
    updates: dict[str, Any] = (
        {f"items.{i.item_type}": i.count for i in args.items} if op == "set_items" else {"resolution_code": args.resolution_code}
    )
    out = Outcome(MutationStatus.APPLIED, audit_action=op)
    for fname, value in updates.items():
        meta = t.field_meta.get(fname)
        current = _get_field(t, fname)
        if current == value:
            continue
        concurrent = meta is not None and meta.get("d") != dev.device_id and (
            base_version is None or int(meta.get("v", 0)) > base_version
        )
        stamp = (device_time.isoformat(), dev.device_id)
        if concurrent:
            other = (str(meta.get("t", "")), str(meta.get("d", "")))  # type: ignore[union-attr]
            if stamp > other:
                out.conflicts.append(Conflict("field_conflict", fname, value, current, f"newer edit from {dev.device_id} wins"))
            else:
                out.conflicts.append(Conflict("field_conflict", fname, current, value, f"newer edit from {other[1]} kept"))
                continue
        _set_field(t, fname, value)
        t.field_meta[fname] = {"v": t.version + 1, "t": stamp[0], "d": dev.device_id}
        t.touched = True
    if out.conflicts:
        out.status = MutationStatus.MERGED
        out.reason = ReasonCode.CONFLICT_RESOLVED
    return out


def _get_field(t: WorkTicket, fname: str) -> Any:
    if fname.startswith("items."):
        return t.items.get(fname[len("items."):])
    return getattr(t, fname)


def _set_field(t: WorkTicket, fname: str, value: Any) -> None:
    if fname.startswith("items."):
        t.items[fname[len("items."):]] = value
    else:
        setattr(t, fname, value)


def _late(t: WorkTicket, op: str, args: Any, dev: DeviceCtx, rule: Rule, base_version: int | None, device_time: datetime) -> Outcome:
    """Work on a ticket that left the crew while it was offline: kept as a late field report (I5), applied where the table says."""
    report = Conflict("late_field_report", None, None, None, f"{op} by {dev.device_id} after the ticket became {t.status.value}")
    if rule is Rule.APPLY_LATE:
        if op in APPEND_OPS:
            out = _append(t, op, args, dev)
            if out.status is MutationStatus.DUPLICATE:
                return out
        else:  # complete: the work happened, so the ticket records it whatever the supervisor did meanwhile
            report.field, report.kept, report.discarded = "status", S.COMPLETED.value, t.status.value
            _set_status(t, S.COMPLETED, args, dev, device_time)
            if t.crew_id is None:  # nobody owns it any more: the crew that did the work keeps the record
                t.crew_id = dev.crew_id
            out = Outcome(MutationStatus.MERGED, audit_action=op)
    else:
        report.discarded = _describe(op, args)
        out = Outcome(MutationStatus.MERGED, audit_action="late_report")
    out.status = MutationStatus.MERGED
    out.reason = ReasonCode.LATE_FIELD_REPORT
    out.message = report.detail
    out.conflicts.append(report)
    return out


def _describe(op: str, args: Any) -> Any:
    """A JSON-able record of what the crew reported, kept on the conflict row."""
    return {"op": op, "args": args.model_dump(mode="json")}


def removed_reason(t: WorkTicket, dev: DeviceCtx, crew_changed: bool) -> RemovalReason | None:
    """Why the device no longer holds the ticket after its own mutation (None when it still does)."""
    if holder(t.status, t.crew_id) == dev.crew_id:
        return None
    return removal_reason(t.status, crew_changed)

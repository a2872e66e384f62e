"""Supervisor and admin use cases, one transaction each: validate against the state machine, change, log and audit together (I3, I9)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from protocol import ErrorCode, Priority, ProtocolError, TicketStatus
from sync_server.auth import Principal, Role, create_user, enroll_device
from sync_server.domain.states import TERMINAL, Action, Actor, TransitionError, transition
from sync_server.engine.changes import commit_changes
from sync_server.engine.intake import NewTicket, insert_tickets
from sync_server.engine.tx import run_in_tx
from sync_server.storage import queries
from sync_server.storage.queries import TicketFilter
from sync_server.domain.ticket import TicketRecord
from sync_server.storage.tickets import audit, load_tickets, lock_tickets, stored_documents, update_tickets

HISTORY_LIMIT = 1000  # audit rows returned with one ticket; a ticket with more is flagged as truncated
Values = dict[str, Any]
Decide = Callable[[TicketRecord], Values | None]


class _Refused(Exception):
    """A per-ticket refusal collected while planning a bulk action, so every offender is reported at once."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.value)
        self.code = code


# ---- scope ----------------------------------------------------------------------------------------------------


def scope(who: Principal) -> int | None:
    """The department a caller is confined to; None for admins, who see every department."""
    return None if who.role is Role.ADMIN else who.department_id


def visible(who: Principal, department_id: int) -> bool:
    """Whether a row of `department_id` exists as far as this caller can tell (I3: never leak other departments)."""
    return who.role is Role.ADMIN or who.department_id == department_id


async def resolve_crew(conn: asyncpg.Connection, who: Principal, name: str, department_id: int | None) -> asyncpg.Record:
    """A usable crew: unknown and other-department crews look the same (404); a visible crew of the wrong department or an inactive one is a 422."""
    row = await queries.find_crew(conn, name)
    if row is None or not visible(who, row["department_id"]):
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no such crew {name!r}", {"crew": name})
    if department_id is not None and row["department_id"] != department_id:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "the crew belongs to another department than the ticket",
                            {"field": "crew", "crew": name})
    if not row["active"]:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"crew {name!r} is inactive", {"field": "crew", "crew": name})
    return row


async def _service_type(conn: asyncpg.Connection, who: Principal, name: str) -> asyncpg.Record:
    """A service type the caller may use; other departments' types answer exactly like unknown ones."""
    row = await queries.find_service_type(conn, name)
    if row is None or not visible(who, row["department_id"]):
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"unknown service type {name!r}", {"field": "service_type"})
    return row


# ---- keyset cursor --------------------------------------------------------------------------------------------


def encode_cursor(key: tuple[datetime, UUID]) -> str:
    """Opaque to clients; it only says "after this (updated_at, id)", and the query re-applies the caller's scope."""
    raw = json.dumps([key[0].isoformat(), str(key[1])], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, UUID]:
    """Inverse of encode_cursor; anything else is a typed 400, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, tid = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, UUID(tid)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ProtocolError(ErrorCode.CURSOR_INVALID, "cursor is not one this endpoint issued; start without it") from None


# ---- tickets: create and read ---------------------------------------------------------------------------------


async def create_ticket(pool: asyncpg.Pool, who: Principal, new: NewTicket, crew: str | None) -> TicketRecord:
    """Create one ticket in the caller's department, assigned when a crew is named."""

    async def body(conn: asyncpg.Connection) -> TicketRecord:
        st = await _service_type(conn, who, new.service_type)
        crew_id = (await resolve_crew(conn, who, crew, st["department_id"]))["id"] if crew is not None else None
        if new.sr_number is not None and await queries.sr_number_exists(conn, new.sr_number):
            raise ProtocolError(ErrorCode.CONFLICT, "a ticket with this sr_number exists", {"field": "sr_number"})
        item = dataclasses.replace(new, service_type=st["name"], crew_id=crew_id, status=None)
        try:
            recs = await insert_tickets(conn, [item], actor_kind=who.actor_kind, actor=who.name)
        except asyncpg.UniqueViolationError as exc:  # lost a race with a concurrent create of the same SR
            if exc.constraint_name == "tickets_sr_number_key":
                raise ProtocolError(ErrorCode.CONFLICT, "a ticket with this sr_number exists", {"field": "sr_number"}) from None
            raise
        return recs[item.id]

    return await run_in_tx(pool, body)


@dataclasses.dataclass(frozen=True)
class ListFilters:
    """Listing filters as the caller named them."""

    statuses: Sequence[str] | None = None
    crew: str | None = None
    service_type: str | None = None
    updated_since: datetime | None = None
    sr_number: str | None = None


async def list_tickets(
    pool: asyncpg.Pool, who: Principal, filters: ListFilters, cursor: str | None, limit: int, *, packed: bool
) -> tuple[list[str | bytes], str | None]:
    """One keyset page (never OFFSET) and the cursor of the next one, read from one snapshot: each ticket as its stored
    document (msgpack when `packed`, else canonical JSON text), spliced into the answer like a pull's (rendering and
    validating every ticket of a 500-ticket page was most of the request's CPU, and supervisors poll it)."""
    after = decode_cursor(cursor) if cursor is not None else None

    async def body(conn: asyncpg.Connection) -> tuple[list[str | bytes], str | None]:
        crew_id = (await resolve_crew(conn, who, filters.crew, None))["id"] if filters.crew is not None else None
        st_id = (await _service_type(conn, who, filters.service_type))["id"] if filters.service_type is not None else None
        f = TicketFilter(scope(who), filters.statuses, crew_id, st_id, filters.updated_since, filters.sr_number)
        keys = await queries.ticket_page_ids(conn, f, after, limit + 1)
        more = len(keys) > limit
        keys = keys[:limit]
        docs = await stored_documents(conn, [k[1] for k in keys], packed)
        return [docs[k[1]] for k in keys], encode_cursor(keys[-1]) if more else None

    return await run_in_tx(pool, body, isolation="repeatable_read", readonly=True)


async def get_ticket(pool: asyncpg.Pool, who: Principal, ticket_id: UUID) -> tuple[TicketRecord, list[dict[str, Any]], bool]:
    """A ticket and its audit history, or 404 when it is not in the caller's scope."""

    async def body(conn: asyncpg.Connection) -> tuple[TicketRecord, list[dict[str, Any]], bool]:
        rec = (await load_tickets(conn, [ticket_id])).get(ticket_id)
        if rec is None or not visible(who, rec.department_id):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket")
        history, truncated = await queries.ticket_history(conn, ticket_id, HISTORY_LIMIT)
        return rec, history, truncated

    return await run_in_tx(pool, body, isolation="repeatable_read", readonly=True)


# ---- tickets: changes -----------------------------------------------------------------------------------------


async def _apply(
    conn: asyncpg.Connection, who: Principal, ids: Sequence[UUID], *, action: str, decide: Decide,
    reason: str | None, bulk: bool, expect: Mapping[UUID, int] | None = None,
) -> tuple[list[TicketRecord], list[UUID]]:
    """Lock → load → plan every ticket → refuse all if any is refused → update → log and audit, in the caller's transaction.

    `expect` (ticket id → version the caller saw, e.g. a console page) refuses the whole action when any ticket has
    changed since, checked under the row locks so nothing can slip in between the check and the change.
    """
    ids = list(dict.fromkeys(ids))
    locked = await lock_tickets(conn, ids)
    unknown = [t for t in ids if t not in locked or not visible(who, locked[t]["department_id"])]
    if unknown:
        if not bulk:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket")
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "unknown tickets; nothing was changed",
                            {"field": "ticket_ids", "unknown_ids": [str(t) for t in unknown]})
    before = await load_tickets(conn, ids)
    if expect is not None:
        _check_versions(before, expect)
    plans: dict[UUID, Values] = {}
    refused: dict[ErrorCode, list[TicketRecord]] = {}
    for tid in ids:
        try:
            values = decide(before[tid])
        except TransitionError:
            refused.setdefault(ErrorCode.ILLEGAL_TRANSITION, []).append(before[tid])
            continue
        except _Refused as exc:
            refused.setdefault(exc.code, []).append(before[tid])
            continue
        if values:
            plans[tid] = values
    if refused:
        raise _refusal(refused, action)
    changed = sorted(plans)  # lock order, so change-log ids follow it
    groups: dict[tuple[tuple[str, Any], ...], list[UUID]] = {}
    for tid in changed:
        groups.setdefault(tuple(sorted(plans[tid].items())), []).append(tid)
    for key, group in groups.items():
        await update_tickets(conn, group, dict(key))
    after = await commit_changes(conn, {t: before[t] for t in changed}, actor_kind=who.actor_kind, actor=who.name,
                                 action=action, reason=reason) if changed else {}
    return [after.get(t, before[t]) for t in ids], changed


def _check_versions(before: Mapping[UUID, TicketRecord], expect: Mapping[UUID, int]) -> None:
    """A stale page must not act blindly: name every ticket that moved on, with what it is now."""
    moved = [r for t, r in before.items() if t in expect and r.ticket.version != expect[t]]
    if moved:
        raise ProtocolError(ErrorCode.CONFLICT, "tickets changed since the page was loaded; nothing was changed",
                            {"stale": [{"id": str(r.ticket.id), "version": r.ticket.version, "status": r.ticket.status.value,
                                        "crew": r.ticket.crew, "priority": r.ticket.priority.value} for r in moved]})


def _refusal(refused: dict[ErrorCode, list[TicketRecord]], action: str) -> ProtocolError:
    """One typed error naming every offending ticket; a transition problem wins over a crew/department mismatch."""
    code = ErrorCode.ILLEGAL_TRANSITION if ErrorCode.ILLEGAL_TRANSITION in refused else next(iter(refused))
    recs = refused[code]
    details: dict[str, Any] = {"action": action,
                               "tickets": [{"id": str(r.ticket.id), "status": r.ticket.status.value} for r in recs]}
    if len(recs) == 1:
        details["status"] = recs[0].ticket.status.value
    if code is ErrorCode.ILLEGAL_TRANSITION:
        return ProtocolError(code, f"cannot {action} a ticket in its current status; nothing was changed", details)
    return ProtocolError(code, "the crew belongs to another department than some tickets; nothing was changed",
                         {**details, "field": "crew"})


async def assign(
    pool: asyncpg.Pool, who: Principal, ids: Sequence[UUID], crew: str, *, bulk: bool,
    expect: Mapping[UUID, int] | None = None,
) -> tuple[list[TicketRecord], list[UUID]]:
    """Assign or reassign tickets to a crew of their department; re-assigning to the holder is a no-op."""

    async def body(conn: asyncpg.Connection) -> tuple[list[TicketRecord], list[UUID]]:
        row = await resolve_crew(conn, who, crew, None)
        return await assign_in_tx(conn, who, ids, row, bulk=bulk, expect=expect)

    return await run_in_tx(pool, body)


async def assign_in_tx(
    conn: asyncpg.Connection, who: Principal, ids: Sequence[UUID], row: asyncpg.Record, *, bulk: bool,
    reason: str | None = None, expect: Mapping[UUID, int] | None = None,
) -> tuple[list[TicketRecord], list[UUID]]:
    """The one assignment path (audit, change log, removals to the old crew's devices), inside the caller's
    transaction, so retiring a crew moves its tickets exactly as a supervisor's bulk reassign would."""

    def decide(rec: TicketRecord) -> Values | None:
        target = transition(rec.ticket.status, Action.ASSIGN, Actor.SUPERVISOR)
        if rec.department_id != row["department_id"]:
            raise _Refused(ErrorCode.VALIDATION_FAILED)
        if rec.crew_id == row["id"] and rec.ticket.status is not TicketStatus.UNASSIGNED:
            return None  # already this crew's work; resetting its progress would undo field work
        return {"status": target.value, "crew_id": row["id"]}

    return await _apply(conn, who, ids, action=Action.ASSIGN.value, decide=decide, reason=reason, bulk=bulk,
                        expect=expect)


async def update_fields(
    pool: asyncpg.Pool, who: Principal, ids: Sequence[UUID], values: Values, *, bulk: bool, action: str = "update",
    expect: Mapping[UUID, int] | None = None,
) -> tuple[list[TicketRecord], list[UUID]]:
    """Set supervisor-owned fields (priority, due_at, service_date, description) on tickets that are not finished for good."""
    allowed = {"priority", "due_at", "service_date", "description"}
    if not values or set(values) - allowed:
        raise ValueError(f"only {sorted(allowed)} may be set here")
    stored = {k: (v.value if isinstance(v, Priority) else v) for k, v in values.items()}

    def decide(rec: TicketRecord) -> Values | None:
        if rec.ticket.status in TERMINAL:
            raise _Refused(ErrorCode.ILLEGAL_TRANSITION)
        current = rec.ticket.model_dump(include=set(stored))
        diff = {k: v for k, v in stored.items() if _comparable(current[k]) != _comparable(v)}
        return diff or None

    async def body(conn: asyncpg.Connection) -> tuple[list[TicketRecord], list[UUID]]:
        return await _apply(conn, who, ids, action=action, decide=decide, reason=None, bulk=bulk, expect=expect)

    return await run_in_tx(pool, body)


def _comparable(value: Any) -> Any:
    """Enums compare by their wire value, so a no-op patch is recognised as one."""
    return value.value if isinstance(value, Priority) else value


_TARGET_FIELDS: dict[Action, Callable[[UUID | None], Values]] = {
    Action.CANCEL: lambda _: {},
    Action.CLOSE: lambda _: {},
    Action.REOPEN: lambda _: {},
    Action.MARK_DUPLICATE: lambda of: {"duplicate_of": of},
}


async def change_status(
    pool: asyncpg.Pool, who: Principal, ticket_id: UUID, action: Action, *, reason: str | None = None,
    duplicate_of: UUID | None = None, expect: int | None = None,
) -> TicketRecord:
    """Cancel, close, reopen or mark a duplicate: the state machine table decides legality (409 otherwise)."""
    if action not in _TARGET_FIELDS:
        raise ValueError(f"{action} is not a status change of this API")
    if action is Action.MARK_DUPLICATE and duplicate_of == ticket_id:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "a ticket cannot duplicate itself", {"field": "of"})

    async def body(conn: asyncpg.Connection) -> TicketRecord:
        if action is Action.MARK_DUPLICATE:
            assert duplicate_of is not None
            await _check_original(conn, who, ticket_id, duplicate_of)

        def decide(rec: TicketRecord) -> Values | None:
            target = transition(rec.ticket.status, action, Actor.SUPERVISOR)
            return {"status": target.value, **_TARGET_FIELDS[action](duplicate_of)}

        recs, _ = await _apply(conn, who, [ticket_id], action=action.value, decide=decide, reason=reason, bulk=False,
                               expect=None if expect is None else {ticket_id: expect})
        return recs[0]

    return await run_in_tx(pool, body)


async def _check_original(conn: asyncpg.Connection, who: Principal, ticket_id: UUID, original: UUID) -> None:
    """The ticket being duplicated must be a visible, non-duplicate ticket of the same department."""
    # Lock both in id order (the same order lock_tickets uses) so this never deadlocks with a bulk action.
    locked = await lock_tickets(conn, sorted({ticket_id, original}))
    this, orig = locked.get(ticket_id), locked.get(original)
    if this is None or not visible(who, this["department_id"]):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket")
    if orig is None or orig["department_id"] != this["department_id"]:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "no such ticket in this ticket's department", {"field": "of"})
    if orig["status"] == TicketStatus.DUPLICATE.value:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "that ticket is itself a duplicate; name its original",
                            {"field": "of"})


# ---- crews, devices, users ------------------------------------------------------------------------------------


async def list_crews(pool: asyncpg.Pool, who: Principal) -> list[asyncpg.Record]:
    """Crews in scope with their device and open-ticket counts."""
    async with pool.acquire() as conn:
        return await queries.crews_with_counts(conn, scope(who))


async def list_devices(pool: asyncpg.Pool, who: Principal, crew: str | None) -> list[asyncpg.Record]:
    """Devices in scope, optionally of one crew."""

    async def body(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        crew_id = (await queries.find_crew(conn, crew)) if crew is not None else None
        if crew is not None and (crew_id is None or not visible(who, crew_id["department_id"])):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such crew {crew!r}", {"crew": crew})
        return await queries.list_devices(conn, scope(who), crew_id["id"] if crew_id is not None else None)

    return await run_in_tx(pool, body, readonly=True)


async def enroll(pool: asyncpg.Pool, who: Principal, crew: str, label: str | None) -> tuple[str, str, str]:
    """Enrol a device to a crew in scope, audited; returns (device_id, token, crew), the token shown once."""

    async def body(conn: asyncpg.Connection) -> tuple[str, str, str]:
        row = await resolve_crew(conn, who, crew, None)
        device_id, token = await enroll_device(conn, row["id"], label, who.name)
        await audit(conn, [(who.actor_kind, who.name, "device_enroll", None, row["department_id"], None,
                            {"device_id": device_id, "crew": row["name"], "label": label}, None)])
        return device_id, token, row["name"]

    return await run_in_tx(pool, body)


async def revoke(pool: asyncpg.Pool, who: Principal, device_id: str) -> asyncpg.Record:
    """Revoke a device in scope; its token fails on the next request. Revoking twice keeps the first time and audits once."""

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        row = await queries.device_for_update(conn, device_id)
        if row is None or not visible(who, row["department_id"]):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such device")
        if row["revoked_at"] is not None:
            return row
        after = await queries.revoke_device(conn, device_id)
        await audit(conn, [(who.actor_kind, who.name, "device_revoke", None, row["department_id"],
                            {"device_id": device_id, "revoked_at": None},
                            {"device_id": device_id, "revoked_at": after["revoked_at"]}, None)])
        return after

    return await run_in_tx(pool, body)


async def add_user(pool: asyncpg.Pool, who: Principal, name: str, role: Role, department: str | None) -> tuple[str, str | None]:
    """Create a supervisor or admin (admins only), audited; returns (token, department code)."""
    if who.role is not Role.ADMIN:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only an admin may create users")

    async def body(conn: asyncpg.Connection) -> tuple[str, str | None]:
        dept = None
        if department is not None:
            dept = await queries.find_department(conn, department)
            if dept is None:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"unknown department {department!r}", {"field": "department"})
        if await queries.user_exists(conn, name):
            raise ProtocolError(ErrorCode.CONFLICT, "a user with this name exists", {"field": "name"})
        try:
            token = await create_user(conn, name, role, dept["id"] if dept else None)
        except asyncpg.UniqueViolationError:  # lost a race with a concurrent create of the same name
            raise ProtocolError(ErrorCode.CONFLICT, "a user with this name exists", {"field": "name"}) from None
        await audit(conn, [(who.actor_kind, who.name, "user_create", None, dept["id"] if dept else None, None,
                            {"name": name, "role": role.value, "department": dept["code"] if dept else None}, None)])
        return token, dept["code"] if dept else None

    return await run_in_tx(pool, body)

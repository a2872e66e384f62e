"""Organisation use cases (departments, crews, service types, staff accounts), one transaction each, audited (I9).

Only admins change the organisation; supervisors read their own department. A refused change writes nothing but
one `<action>_refused` audit row in its own transaction, so an operator can see who tried what and why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from protocol import ErrorCode, ProtocolError
from sync_server.auth import USER_PREFIX, Principal, Role, hash_token, new_token
from sync_server.engine.supervise import assign_in_tx, scope
from sync_server.engine.tx import run_in_tx
from sync_server.storage import org as store
from sync_server.storage.tickets import audit

T = TypeVar("T")
MAX_NAMED_TICKETS = 100  # a refusal names at most this many open tickets (details.count has the total)


def require_admin(who: Principal) -> None:
    """Organisation changes are the operator's job (city IT), not a department supervisor's."""
    if who.role is not Role.ADMIN:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only an admin may change the organisation")


async def record_refusal(pool: asyncpg.Pool, who: Principal, action: str, request: dict[str, Any], err: ProtocolError) -> None:
    """One `<action>_refused` audit row in its own transaction (the refused work itself was rolled back or never begun)."""
    async with pool.acquire() as conn:
        await audit(conn, [(who.actor_kind, who.name, f"{action}_refused", None, None, None, request,
                            f"{err.code.value}: {err.message}"[:1000])])


async def _audited(
    pool: asyncpg.Pool, who: Principal, action: str, request: dict[str, Any],
    body: Callable[[asyncpg.Connection], Awaitable[T]],
) -> T:
    """Run `body` in a transaction; on a typed refusal record the attempt (rolled-back work leaves no trace) and re-raise."""
    try:
        return await run_in_tx(pool, body)
    except ProtocolError as err:
        await record_refusal(pool, who, action, request, err)
        raise


async def _department(conn: asyncpg.Connection, code: str) -> asyncpg.Record:
    """A department named by its code, or a typed 422 naming the field."""
    row = await store.department_by_code(conn, code)
    if row is None:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"unknown department {code!r}",
                            {"field": "department", "department": code})
    return row


# ---- departments ----------------------------------------------------------------------------------------------


async def list_departments(pool: asyncpg.Pool, who: Principal) -> list[asyncpg.Record]:
    """All departments for an admin, the caller's own for a supervisor or device."""
    async with pool.acquire() as conn:
        return await store.list_departments(conn, scope(who))


async def create_department(pool: asyncpg.Pool, who: Principal, code: str, name: str, agency_code: str | None) -> asyncpg.Record:
    """A new department; a taken code or name is a 409 naming the field."""
    request = {"code": code, "name": name, "agency_code": agency_code}

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        clash = await store.department_clash(conn, code, name)
        if clash is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"a department with this {clash} exists", {"field": clash})
        try:
            row = await store.insert_department(conn, code, name, agency_code)
        except asyncpg.UniqueViolationError:  # lost a race with a concurrent create
            raise ProtocolError(ErrorCode.CONFLICT, "a department with this code or name exists", {"field": "code"}) from None
        await audit(conn, [(who.actor_kind, who.name, "department_create", None, row["id"], None, request, None)])
        return row

    return await _audited(pool, who, "department_create", request, body)


# ---- crews ----------------------------------------------------------------------------------------------------


async def create_crew(pool: asyncpg.Pool, who: Principal, name: str, display_name: str | None, department: str) -> int:
    """A new active crew of an existing department; returns its id."""
    request = {"name": name, "display_name": display_name, "department": department}

    async def body(conn: asyncpg.Connection) -> int:
        require_admin(who)
        dept = await _department(conn, department)
        try:
            async with conn.transaction():  # savepoint: the unique index decides, the outer transaction survives
                crew_id = await store.insert_crew(conn, name, display_name, dept["id"])
        except asyncpg.UniqueViolationError:
            raise ProtocolError(ErrorCode.CONFLICT, f"a crew named {name!r} exists", {"field": "name", "crew": name}) from None
        await audit(conn, [(who.actor_kind, who.name, "crew_create", None, dept["id"], None, request, None)])
        return crew_id

    return await _audited(pool, who, "crew_create", request, body)


@dataclass(frozen=True)
class Retired:
    """A retired crew and the tickets moved to another crew on the way (empty unless `to` was given)."""

    crew: str
    department: str
    moved: list[UUID]
    to: str | None


async def retire_crew(pool: asyncpg.Pool, who: Principal, name: str, to: str | None) -> Retired:
    """Retire a crew. Open tickets block it (409 naming them) unless `to` names an active crew of the same
    department; they then move through the assignment path, so devices get removals and the audit shows each move.

    Its devices stay enrolled: an offline phone may still hold field work, which arrives as a late field report
    (I5). Revoke them once their outboxes are drained."""
    request = {"crew": name, "to": to}

    async def body(conn: asyncpg.Connection) -> Retired:
        require_admin(who)
        crew = await store.crew_for_update(conn, name)
        if crew is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such crew {name!r}", {"crew": name})
        open_rows = await store.open_ticket_ids(conn, crew["id"])
        target = None
        if to is not None:
            target = await store.crew_for_update(conn, to)
            if target is None or target["id"] == crew["id"] or not target["active"] \
                    or target["department_id"] != crew["department_id"]:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED,
                                    f"--to must name another active crew of department {crew['department']!r}",
                                    {"field": "to", "crew": to})
        if open_rows and target is None:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"crew {name!r} has {len(open_rows)} open tickets; reassign them first, or move them with --to CREW"
                " (API: \"to\")",
                {"crew": name, "count": len(open_rows),
                 "tickets": [{"id": str(r["id"]), "sr_number": r["sr_number"], "status": r["status"]}
                             for r in open_rows[:MAX_NAMED_TICKETS]]},
            )
        moved: list[UUID] = []
        if open_rows and target is not None:
            _, changed = await assign_in_tx(conn, who, [r["id"] for r in open_rows], target, bulk=True,
                                            reason=f"crew {name} retired")
            moved = list(changed)
        if crew["active"]:
            await store.retire_crew(conn, crew["id"])
            await audit(conn, [(who.actor_kind, who.name, "crew_retire", None, crew["department_id"],
                                {"crew": name, "active": True},
                                {"crew": name, "active": False, "moved_to": to, "moved": len(moved)}, None)])
        return Retired(name, crew["department"], moved, to if moved else None)

    return await _audited(pool, who, "crew_retire", request, body)


# ---- service types --------------------------------------------------------------------------------------------


async def list_service_types(pool: asyncpg.Pool, who: Principal, department: str | None = None) -> list[asyncpg.Record]:
    """Service types in the caller's scope; an admin may narrow to one department."""
    async with pool.acquire() as conn:
        dept_id = scope(who)
        if dept_id is None and department is not None:
            dept_id = (await _department(conn, department))["id"]
        return await store.list_service_types(conn, dept_id)


@dataclass(frozen=True)
class NewServiceType:
    """A service type as the operator describes it; None code lists mean "today's codes" (the column defaults)."""

    code: str
    name: str
    department: str
    default_priority: str = "normal"
    resolution_codes: list[str] | None = None
    reason_codes: list[str] | None = None


async def create_service_type(pool: asyncpg.Pool, who: Principal, new: NewServiceType) -> asyncpg.Record:
    """A new service type of an existing department; a taken code or name is a 409 naming the field."""
    request = {k: v for k, v in new.__dict__.items()}

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        dept = await _department(conn, new.department)
        clash = await store.service_type_clash(conn, new.code, new.name)
        if clash is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"a service type with this {clash} exists", {"field": clash})
        for field, codes in (("resolution_codes", new.resolution_codes), ("reason_codes", new.reason_codes)):
            if codes is not None and (not codes or len(set(codes)) != len(codes)):
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"{field} must be a non-empty list without repeats",
                                    {"field": field})
        try:
            async with conn.transaction():
                row = await store.insert_service_type(conn, new.code, new.name, dept["id"], new.default_priority,
                                                      new.resolution_codes, new.reason_codes)
        except asyncpg.UniqueViolationError:
            raise ProtocolError(ErrorCode.CONFLICT, "a service type with this code or name exists", {"field": "code"}) from None
        await audit(conn, [(who.actor_kind, who.name, "service_type_create", None, dept["id"], None,
                            {**request, "resolution_codes": list(row["resolution_codes"]),
                             "reason_codes": list(row["reason_codes"])}, None)])
        return row

    return await _audited(pool, who, "service_type_create", request, body)


# ---- staff accounts -------------------------------------------------------------------------------------------


async def list_users(pool: asyncpg.Pool, who: Principal) -> list[asyncpg.Record]:
    """Every supervisor and admin; account management is admin-only."""
    require_admin(who)
    async with pool.acquire() as conn:
        return await store.list_users(conn)


async def disable_user(pool: asyncpg.Pool, who: Principal, name: str) -> asyncpg.Record:
    """Disable an account: its token fails on the next request (token_revoked). Never the last active admin."""
    request = {"name": name}

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        row = await store.user_for_update(conn, name)
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such user {name!r}", {"user": name})
        if row["revoked_at"] is not None:
            return row
        if row["role"] == Role.ADMIN.value and await store.count_active_admins(conn) <= 1:
            raise ProtocolError(ErrorCode.CONFLICT, "cannot disable the last active admin; create another first",
                                {"user": name})
        after = await store.disable_user(conn, row["id"])
        await audit(conn, [(who.actor_kind, who.name, "user_disable", None, row["department_id"],
                            {"name": name, "revoked_at": None}, {"name": name, "revoked_at": after["revoked_at"]}, None)])
        return after

    return await _audited(pool, who, "user_disable", request, body)


async def rotate_user_token(pool: asyncpg.Pool, who: Principal, name: str) -> tuple[asyncpg.Record, str]:
    """A new token for an active account, shown once; the old one fails from the commit on."""
    request = {"name": name}

    async def body(conn: asyncpg.Connection) -> tuple[asyncpg.Record, str]:
        require_admin(who)
        row = await store.user_for_update(conn, name)
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such user {name!r}", {"user": name})
        if row["revoked_at"] is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"user {name!r} is disabled", {"user": name})
        token = new_token(USER_PREFIX)
        await store.set_user_token(conn, row["id"], hash_token(token))
        await audit(conn, [(who.actor_kind, who.name, "user_rotate_token", None, row["department_id"], None,
                            {"name": name}, None)])
        return row, token

    return await _audited(pool, who, "user_rotate_token", request, body)

"""SQL behind the supervisor/admin API: scoped listings, keyset pages, history, crews and devices.

Every function takes a `department_id`: None means "all departments" (admin); an id restricts the query to that
department, so scoping is a WHERE clause the database enforces, not a filter applied afterwards in Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from sync_server.domain.states import OPEN


@dataclass(frozen=True)
class TicketFilter:
    """Resolved listing filters (names already turned into ids by the caller)."""

    department_id: int | None = None
    statuses: Sequence[str] | None = None
    crew_id: int | None = None
    service_type_id: int | None = None
    updated_since: datetime | None = None  # inclusive
    sr_number: str | None = None


async def ticket_page_ids(
    conn: asyncpg.Connection, f: TicketFilter, after: tuple[datetime, UUID] | None, limit: int
) -> list[tuple[datetime, UUID]]:
    """Up to `limit` (updated_at, id) keys strictly after `after`, in key order: keyset, so a page costs the same at any depth."""
    # Only the filters in use become conditions (fixed SQL fragments, values always bound), so the planner sees
    # e.g. `department_id = $1 AND (updated_at, id) > ($2, $3)` and walks the (department_id, updated_at, id)
    # index, which a generic plan of `$1 IS NULL OR ...` would not.
    conds: list[str] = []
    args: list[Any] = []

    def add(fragment: str, *values: Any) -> None:
        args.extend(values)
        conds.append(fragment.format(*range(len(args) - len(values) + 1, len(args) + 1)))

    if f.department_id is not None:
        add("t.department_id = ${0}", f.department_id)
    if f.statuses is not None:
        add("t.status = ANY(${0}::text[])", list(f.statuses))
    if f.crew_id is not None:
        add("t.crew_id = ${0}", f.crew_id)
    if f.service_type_id is not None:
        add("t.service_type_id = ${0}", f.service_type_id)
    if f.updated_since is not None:
        add("t.updated_at >= ${0}", f.updated_since)
    if f.sr_number is not None:
        add("t.sr_number = ${0}", f.sr_number)
    if after is not None:
        add("(t.updated_at, t.id) > (${0}, ${1})", after[0], after[1])
    args.append(limit)
    where = " WHERE " + " AND ".join(conds) if conds else ""
    rows = await conn.fetch(
        f"SELECT t.updated_at, t.id FROM tickets t{where} ORDER BY t.updated_at, t.id LIMIT ${len(args)}", *args
    )
    return [(r["updated_at"], r["id"]) for r in rows]


async def ticket_history(conn: asyncpg.Connection, ticket_id: UUID, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The newest `limit` audit rows of a ticket, returned oldest first, and whether older ones were left out."""
    rows = await conn.fetch(
        "SELECT at, actor_kind, actor, action, before, after, reason FROM audit_log"
        " WHERE ticket_id = $1 ORDER BY id DESC LIMIT $2",
        ticket_id, limit + 1,
    )
    truncated = len(rows) > limit
    out = [
        {"at": r["at"], "actor_kind": r["actor_kind"], "actor": r["actor"], "action": r["action"],
         "before": _jsonb(r["before"]), "after": _jsonb(r["after"]), "reason": r["reason"]}
        for r in rows[:limit]
    ]
    out.reverse()
    return out, truncated


def _jsonb(value: Any) -> Any:
    """asyncpg hands jsonb over as text unless a codec is set; the pool sets none."""
    return json.loads(value) if isinstance(value, str) else value


async def find_crew(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """A crew by its unique name, with its department; the caller decides what the caller may see."""
    return await conn.fetchrow(
        "SELECT c.id, c.name, c.active, c.department_id, d.code AS department FROM crews c"
        " JOIN departments d ON d.id = c.department_id WHERE c.name = $1",
        name,
    )


async def find_service_type(conn: asyncpg.Connection, name_or_code: str) -> asyncpg.Record | None:
    """A service type by name or Open311 code."""
    return await conn.fetchrow(
        "SELECT id, name, code, department_id FROM service_types WHERE name = $1 OR code = $1 ORDER BY id LIMIT 1",
        name_or_code,
    )


async def find_department(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    """A department by its code (or, for convenience, its display name)."""
    return await conn.fetchrow("SELECT id, code, name FROM departments WHERE code = $1 OR name = $1 LIMIT 1", code)


async def crews_with_counts(conn: asyncpg.Connection, department_id: int | None) -> list[asyncpg.Record]:
    """Crews with active-device and open-ticket counts, in two grouped subqueries (never a count per crew)."""
    return await conn.fetch(
        """
        SELECT c.id, c.name, c.display_name, d.code AS department, c.active, c.retired_at,
               COALESCE(dv.n, 0)::int AS devices, COALESCE(tk.n, 0)::int AS open_tickets
        FROM crews c
        JOIN departments d ON d.id = c.department_id
        LEFT JOIN (SELECT crew_id, count(*) AS n FROM devices WHERE revoked_at IS NULL GROUP BY crew_id) dv
               ON dv.crew_id = c.id
        LEFT JOIN (SELECT crew_id, count(*) AS n FROM tickets WHERE status = ANY($2::text[]) GROUP BY crew_id) tk
               ON tk.crew_id = c.id
        WHERE $1::smallint IS NULL OR c.department_id = $1
        ORDER BY d.code, c.name
        """,
        department_id, sorted(s.value for s in OPEN),
    )


_DEVICE_SQL = """
SELECT v.id, c.name AS crew, d.code AS department, c.department_id, v.label, v.enrolled_at, v.last_seen_at,
       v.revoked_at
FROM devices v JOIN crews c ON c.id = v.crew_id JOIN departments d ON d.id = c.department_id
"""


async def list_devices(conn: asyncpg.Connection, department_id: int | None, crew_id: int | None) -> list[asyncpg.Record]:
    """Devices in scope, never their token hashes."""
    return await conn.fetch(
        _DEVICE_SQL + " WHERE ($1::smallint IS NULL OR c.department_id = $1) AND ($2::integer IS NULL OR v.crew_id = $2)"
        " ORDER BY c.name, v.enrolled_at, v.id",
        department_id, crew_id,
    )


async def device_for_update(conn: asyncpg.Connection, device_id: str) -> asyncpg.Record | None:
    """A device row locked for a revoke, so two revokes record one revocation time."""
    row = await conn.fetchrow("SELECT id FROM devices WHERE id = $1 FOR UPDATE", device_id)
    if row is None:
        return None
    return await conn.fetchrow(_DEVICE_SQL + " WHERE v.id = $1", device_id)


async def revoke_device(conn: asyncpg.Connection, device_id: str) -> asyncpg.Record:
    """Set revoked_at once (a second revoke keeps the first time); auth reads it on every request, so the token fails at once."""
    await conn.execute("UPDATE devices SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1", device_id)
    row = await conn.fetchrow(_DEVICE_SQL + " WHERE v.id = $1", device_id)
    assert row is not None  # locked by device_for_update in this transaction
    return row


async def user_exists(conn: asyncpg.Connection, name: str) -> bool:
    """Whether a user name is taken (the unique index still decides under a race)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE name = $1)", name))


async def sr_number_exists(conn: asyncpg.Connection, sr_number: str) -> bool:
    """Whether an SR number is taken (the unique index still decides under a race)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tickets WHERE sr_number = $1)", sr_number))

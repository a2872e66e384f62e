"""SQL behind the console board: one filtered, sorted page of a department's tickets, its total, and map points.

Sort columns and directions come from fixed tables below, never from input; every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from sync_server.domain.states import OPEN

# Sort key name -> SQL expression; id breaks ties so pages never overlap or skip rows.
SORTS = {
    "sr": "t.sr_number", "status": "t.status", "priority": "t.priority", "address": "t.address", "crew": "c.name",
    "type": "st.name", "requested": "t.requested_at", "due": "t.due_at", "updated": "t.updated_at",
}
# Priorities sort by urgency, not alphabetically.
_PRIORITY_RANK = "array_position(ARRAY['low','normal','high','urgent'], t.priority)"
MAP_POINTS_MAX = 5000  # a map of more points than this is unreadable anyway; the table stays complete


@dataclass(frozen=True)
class BoardQuery:
    """Resolved board filters; department_id None only for admins."""

    department_id: int | None
    statuses: Sequence[str] = ()
    crew_id: int | None = None
    unassigned: bool = False
    service_type_id: int | None = None
    priority: str | None = None
    overdue: bool = False
    text: str | None = None
    sort: str = "requested"
    descending: bool = True


def _where(q: BoardQuery) -> tuple[str, list[Any]]:
    """Only the filters in use become (fixed) conditions, so the planner sees a specific query."""
    conds: list[str] = []
    args: list[Any] = []

    def add(fragment: str, *values: Any) -> None:
        args.extend(values)
        conds.append(fragment.format(*range(len(args) - len(values) + 1, len(args) + 1)))

    if q.department_id is not None:
        add("t.department_id = ${0}", q.department_id)
    if q.statuses:
        add("t.status = ANY(${0}::text[])", list(q.statuses))
    if q.crew_id is not None:
        add("t.crew_id = ${0}", q.crew_id)
    if q.unassigned:
        add("t.crew_id IS NULL")
    if q.service_type_id is not None:
        add("t.service_type_id = ${0}", q.service_type_id)
    if q.priority is not None:
        add("t.priority = ${0}", q.priority)
    if q.overdue:
        add("t.due_at < now() AND t.status = ANY(${0}::text[])", sorted(s.value for s in OPEN))
    if q.text:
        pattern = "%" + q.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        add("(t.address ILIKE ${0} OR t.sr_number ILIKE ${0} OR t.id::text = ${1})", pattern, q.text.lower())
    return (" WHERE " + " AND ".join(conds)) if conds else "", args


_FROM = (" FROM tickets t JOIN service_types st ON st.id = t.service_type_id LEFT JOIN crews c ON c.id = t.crew_id")


async def page(conn: asyncpg.Connection, q: BoardQuery, offset: int, limit: int) -> tuple[list[asyncpg.Record], int]:
    """One page of rows (offset paging: supervisors jump to page N, and a department holds thousands, not millions) and the total."""
    where, args = _where(q)
    key = _PRIORITY_RANK if q.sort == "priority" else SORTS[q.sort]
    direction = "DESC" if q.descending else "ASC"
    n = len(args)
    rows = await conn.fetch(
        "SELECT t.id, t.sr_number, t.status, t.priority, t.address, t.requested_at, t.due_at, t.updated_at, t.version,"
        " t.lat, t.lon, c.name AS crew, st.name AS service_type,"
        " (t.due_at < now() AND t.status = ANY(${0}::text[])) AS overdue".format(n + 1)
        + _FROM + where + f" ORDER BY {key} {direction} NULLS LAST, t.id {direction} OFFSET ${n + 2} LIMIT ${n + 3}",
        *args, sorted(s.value for s in OPEN), offset, limit,
    )
    total = await conn.fetchval("SELECT count(*)" + _FROM + where, *args)
    return rows, int(total)


async def points(conn: asyncpg.Connection, q: BoardQuery) -> list[asyncpg.Record]:
    """Coordinates and status of every matching ticket that has them, for the offline map."""
    where, args = _where(q)
    where = (where + " AND " if where else " WHERE ") + "t.lat IS NOT NULL AND t.lon IS NOT NULL"
    return await conn.fetch(
        "SELECT t.id, t.lat, t.lon, t.status" + _FROM + where + f" ORDER BY t.id LIMIT {MAP_POINTS_MAX}", *args)


async def versions(conn: asyncpg.Connection, ids: Sequence[Any]) -> list[asyncpg.Record]:
    """Current version, status and crew of tickets a page acted on, to tell a stale page what changed."""
    return await conn.fetch(
        "SELECT t.id, t.sr_number, t.version, t.status, t.priority, t.due_at, t.department_id, c.name AS crew"
        " FROM tickets t LEFT JOIN crews c ON c.id = t.crew_id WHERE t.id = ANY($1::uuid[])", list(ids))


async def options(conn: asyncpg.Connection, department_id: int | None) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Crews and service types a filter or dispatch menu may offer (the caller's department only)."""
    crews = await conn.fetch(
        "SELECT id, name, active FROM crews WHERE ($1::smallint IS NULL OR department_id = $1) ORDER BY name", department_id)
    types = await conn.fetch(
        "SELECT id, name FROM service_types WHERE ($1::smallint IS NULL OR department_id = $1) ORDER BY name", department_id)
    return crews, types

"""Conflicts and late field reports (I5) read and resolved in one place, so the API and the console cannot drift."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from protocol import ErrorCode, ProtocolError, WireModel
from protocol.fields import WireDatetime, WireUUID
from sync_server.auth import Principal, Role
from sync_server.storage.tickets import audit


class ConflictView(WireModel):
    """One conflict or late field report as a supervisor sees it."""

    id: int
    ticket_id: WireUUID
    kind: str
    crew: str | None
    device_id: str | None
    seq: int | None
    field: str | None
    kept: Any = None
    discarded: Any = None
    detail: str | None
    created_at: WireDatetime
    resolved_at: WireDatetime | None
    resolved_by: str | None
    resolution: str | None


_COLS = ("SELECT c.id, c.ticket_id, c.kind, cr.name AS crew, c.device_id, c.seq, c.field, c.kept::text AS kept,"
         " c.discarded::text AS discarded, c.detail, c.created_at, c.resolved_at, c.resolved_by, c.resolution"
         " FROM conflicts c LEFT JOIN crews cr ON cr.id = c.crew_id")
# Filters all optional (NULL: any); `state` is open, resolved or all; keyset paging by id, newest first.
_LIST = (_COLS + " WHERE ($1::smallint IS NULL OR c.department_id = $1)"
         " AND ($2 = 'all' OR ($2 = 'open') = (c.resolved_at IS NULL))"
         " AND ($3::text IS NULL OR c.kind = $3) AND ($4::text IS NULL OR cr.name = $4)"
         " AND ($5::uuid IS NULL OR c.ticket_id = $5) AND ($6::bigint IS NULL OR c.id < $6)"
         " ORDER BY c.id DESC LIMIT $7")


def _view(r: asyncpg.Record) -> ConflictView:
    """kept/discarded are stored as JSON; the view carries the decoded values."""
    d = dict(r)
    d["kept"] = json.loads(d["kept"]) if d["kept"] is not None else None
    d["discarded"] = json.loads(d["discarded"]) if d["discarded"] is not None else None
    return ConflictView.model_validate(d)


async def list_conflicts(conn: asyncpg.Connection, department_id: int | None, *, state: str = "open",
                         kind: str | None = None, crew: str | None = None, ticket_id: UUID | None = None,
                         before: int | None = None, limit: int = 100) -> list[ConflictView]:
    """Conflicts of one department (None: every department, for admins), newest first."""
    rows = await conn.fetch(_LIST, department_id, state, kind, crew, ticket_id, before, limit)
    return [_view(r) for r in rows]


async def resolve(conn: asyncpg.Connection, who: Principal, cid: int, resolution: str) -> ConflictView:
    """Mark resolved once, audited in the same transaction (I9); another department's conflict does not exist."""
    row = await conn.fetchrow("SELECT department_id, resolved_at, ticket_id FROM conflicts WHERE id = $1 FOR UPDATE", cid)
    if row is None or (who.role is not Role.ADMIN and row["department_id"] != who.department_id):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such conflict")
    if row["resolved_at"] is not None:
        raise ProtocolError(ErrorCode.CONFLICT, "conflict already resolved")
    await conn.execute("UPDATE conflicts SET resolved_at = now(), resolved_by = $2, resolution = $3 WHERE id = $1",
                       cid, who.name, resolution)
    await audit(conn, [(who.actor_kind, who.name, "resolve_conflict", row["ticket_id"], row["department_id"],
                        None, {"conflict_id": cid, "resolution": resolution}, None)])
    return _view(await conn.fetchrow(_COLS + " WHERE c.id = $1", cid))

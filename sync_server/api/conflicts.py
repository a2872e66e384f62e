"""Conflicts and late field reports for supervisors (I5): list, filter, resolve — nothing a crew did is silently dropped."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from aiohttp import web
from pydantic import Field, StringConstraints

from protocol import ErrorCode, ProtocolError, WireModel
from protocol.fields import WireDatetime, WireUUID
from sync_server.api.http import principal, read_model, respond
from sync_server.api.params import ParamInt, ParamModel, read_path, read_query
from sync_server.api.registry import route
from sync_server.auth import Principal, Role
from sync_server.engine.tx import run_in_tx
from sync_server.keys import POOL
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


class ConflictList(WireModel):
    """A page of conflicts, newest first."""

    conflicts: list[ConflictView]
    next_before: int | None


class ConflictQuery(ParamModel):
    """Filters: open/resolved, kind, crew, ticket; keyset paging by id."""

    state: Literal["open", "resolved", "all"] = "open"
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    crew: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    ticket_id: WireUUID | None = None
    before: ParamInt(1) | None = Field(default=None, description="Exclusive upper bound on id, from next_before.")  # type: ignore[valid-type]
    limit: ParamInt(1, 500) = 100  # type: ignore[valid-type]


class ConflictPath(ParamModel):
    """A conflict id in the path: a bigint, so anything larger names no conflict."""

    id: ParamInt(1)  # type: ignore[valid-type]


class ResolveRequest(WireModel):
    """How the supervisor settled it (free text, kept in the audit log)."""

    resolution: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


_COLS = ("SELECT c.id, c.ticket_id, c.kind, cr.name AS crew, c.device_id, c.seq, c.field, c.kept::text AS kept,"
         " c.discarded::text AS discarded, c.detail, c.created_at, c.resolved_at, c.resolved_by, c.resolution"
         " FROM conflicts c LEFT JOIN crews cr ON cr.id = c.crew_id")


def _view(r: asyncpg.Record) -> ConflictView:
    d = dict(r)
    d["kept"] = json.loads(d["kept"]) if d["kept"] is not None else None
    d["discarded"] = json.loads(d["discarded"]) if d["discarded"] is not None else None
    return ConflictView.model_validate(d)


async def list_conflicts(request: web.Request) -> web.Response:
    """GET /v1/conflicts."""
    who = principal(request, Role.SUPERVISOR, Role.ADMIN)
    q = read_query(request, ConflictQuery)
    dept = None if who.role is Role.ADMIN else who.department_id
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            _COLS + " WHERE ($1::smallint IS NULL OR c.department_id = $1)"
            " AND ($2 = 'all' OR ($2 = 'open') = (c.resolved_at IS NULL))"
            " AND ($3::text IS NULL OR c.kind = $3) AND ($4::text IS NULL OR cr.name = $4)"
            " AND ($5::uuid IS NULL OR c.ticket_id = $5) AND ($6::bigint IS NULL OR c.id < $6)"
            " ORDER BY c.id DESC LIMIT $7",
            dept, q.state, q.kind, q.crew, q.ticket_id, q.before, q.limit + 1,
        )
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return respond(request, ConflictList(conflicts=[_view(r) for r in rows], next_before=rows[-1]["id"] if more else None))


async def resolve_conflict(request: web.Request) -> web.Response:
    """POST /v1/conflicts/{id}/resolve."""
    who = principal(request, Role.SUPERVISOR, Role.ADMIN)
    body = await read_model(request, ResolveRequest)
    cid = read_path(request, ConflictPath).id
    view = await run_in_tx(request.app[POOL], lambda conn: _resolve(conn, who, cid, body.resolution))
    return respond(request, view)


async def _resolve(conn: asyncpg.Connection, who: Principal, cid: int, resolution: str) -> ConflictView:
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


def setup(app: web.Application) -> None:
    """Register conflict routes."""
    route(app, "GET", "/v1/conflicts", list_conflicts, summary="Conflicts and late field reports (filterable)",
          roles=("supervisor", "admin"), query=ConflictQuery, response=ConflictList, tags=("conflicts",))
    route(app, "POST", "/v1/conflicts/{id}/resolve", resolve_conflict, summary="Resolve a conflict or late report",
          roles=("supervisor", "admin"), request=ResolveRequest, response=ConflictView, tags=("conflicts",),
          path_model=ConflictPath)


__all__ = ["setup", "UUID"]

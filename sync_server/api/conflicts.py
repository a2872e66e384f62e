"""Conflicts and late field reports for supervisors (I5): list, filter, resolve — nothing a crew did is silently dropped."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from protocol import WireModel
from protocol.fields import WireUUID
from sync_server.api.http import principal, read_model, respond
from sync_server.api.params import ParamInt, ParamModel, read_path, read_query
from sync_server.api.registry import route
from sync_server.auth import Role
from sync_server.engine import conflicts
from sync_server.engine.conflicts import ConflictView
from sync_server.engine.tx import run_in_tx
from sync_server.keys import POOL


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


async def list_conflicts(request: web.Request) -> web.Response:
    """GET /v1/conflicts."""
    who = principal(request, Role.SUPERVISOR, Role.ADMIN)
    q = read_query(request, ConflictQuery)
    dept = None if who.role is Role.ADMIN else who.department_id
    async with request.app[POOL].acquire() as conn:
        rows = await conflicts.list_conflicts(conn, dept, state=q.state, kind=q.kind, crew=q.crew, ticket_id=q.ticket_id,
                                              before=q.before, limit=q.limit + 1)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return respond(request, ConflictList(conflicts=rows, next_before=rows[-1].id if more else None))


async def resolve_conflict(request: web.Request) -> web.Response:
    """POST /v1/conflicts/{id}/resolve."""
    who = principal(request, Role.SUPERVISOR, Role.ADMIN)
    body = await read_model(request, ResolveRequest)
    cid = read_path(request, ConflictPath).id
    view = await run_in_tx(request.app[POOL], lambda conn: conflicts.resolve(conn, who, cid, body.resolution))
    return respond(request, view)


def setup(app: web.Application) -> None:
    """Register conflict routes."""
    route(app, "GET", "/v1/conflicts", list_conflicts, summary="Conflicts and late field reports (filterable)",
          roles=("supervisor", "admin"), query=ConflictQuery, response=ConflictList, tags=("conflicts",))
    route(app, "POST", "/v1/conflicts/{id}/resolve", resolve_conflict, summary="Resolve a conflict or late report",
          roles=("supervisor", "admin"), request=ResolveRequest, response=ConflictView, tags=("conflicts",),
          path_model=ConflictPath)


__all__ = ["ConflictView", "setup"]

"""Supervisor and admin ticket API: decode → authorise → engine.supervise → encode; supervisors see their department only."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import msgpack
from aiohttp import web

from protocol import Ticket, WireModel
from protocol.codec import MSGPACK, negotiate
from sync_server.api import admin
from sync_server.api.http import principal, read_model, respond
from sync_server.api.registry import route
from sync_server.api.schemas import (
    AssignRequest,
    AuditEntry,
    BulkAssignRequest,
    BulkPriorityRequest,
    BulkResult,
    CancelRequest,
    CloseRequest,
    CreateTicketRequest,
    DuplicateRequest,
    PatchTicketRequest,
    ReopenRequest,
    TicketDetail,
    TicketListQuery,
    TicketPage,
    TicketPath,
    read_query,
)
from sync_server.api.params import read_path
from sync_server.auth import Principal, Role
from sync_server.domain.states import Action
from sync_server.engine import supervise
from sync_server.engine.intake import NewTicket
from sync_server.keys import POOL

STAFF = (Role.SUPERVISOR, Role.ADMIN)
ROLES = tuple(r.value for r in STAFF)
TAGS = ("supervisor",)
# Only id-shaped segments match, so /v1/tickets/assign answers 405 (with Allow) to a PATCH instead of "no such ticket".
ID = "{id:[0-9a-fA-F-]+}"
M = TypeVar("M", bound=WireModel)


def staff(request: web.Request) -> Principal:
    """A supervisor or admin; devices get 403 before their body is even read."""
    return principal(request, *STAFF)


def ticket_id(request: web.Request) -> UUID:
    """The path's ticket id, validated by the route (a malformed id is simply a ticket that does not exist)."""
    return read_path(request, TicketPath).id


async def read_optional(request: web.Request, model: type[M]) -> M:
    """Bodies whose every field is optional may be omitted altogether (e.g. close without a reason)."""
    if not request.body_exists:
        return model()
    return await read_model(request, model)


async def create_ticket(request: web.Request) -> web.Response:
    """POST /v1/tickets."""
    who = staff(request)
    body = await read_model(request, CreateTicketRequest)
    new = NewTicket(
        service_type=body.service_type, address=body.address, sr_number=body.sr_number, priority=body.priority,
        zip=body.zip, lat=body.lat, lon=body.lon, council_district=body.council_district, description=body.description,
        service_date=body.service_date, due_at=body.due_at, source="supervisor",
    )
    if body.requested_at is not None:
        new = dataclasses.replace(new, requested_at=body.requested_at)
    rec = await supervise.create_ticket(request.app[POOL], who, new, body.crew)
    return respond(request, rec.ticket, 201)


async def list_tickets(request: web.Request) -> web.Response:
    """GET /v1/tickets."""
    who = staff(request)
    q = read_query(request, TicketListQuery)
    filters = supervise.ListFilters(q.status, q.crew, q.service_type, q.updated_since, q.q)
    media = negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"))
    docs, nxt = await supervise.list_tickets(request.app[POOL], who, filters, q.cursor, q.limit, packed=media == MSGPACK)
    return web.Response(body=_page_body(docs, nxt, media), content_type=media)


def _page_body(docs: list[str | bytes], next_cursor: str | None, media: str) -> bytes:
    """A TicketPage written around the stored documents (decodes to what encoding the model would give; documents
    keep their stored, sorted key order)."""
    if media == MSGPACK:
        packer = msgpack.Packer(use_bin_type=True)
        head = packer.pack_map_header(2) + packer.pack("tickets") + packer.pack_array_header(len(docs))
        packed = [d for d in docs if isinstance(d, bytes)]
        assert len(packed) == len(docs), "a msgpack answer needs documents read as doc_mp"
        return b"".join([head, *packed, packer.pack("next_cursor"), packer.pack(next_cursor)])
    texts = [d for d in docs if isinstance(d, str)]
    assert len(texts) == len(docs), "a JSON answer needs documents read as doc_json"
    items = ",".join(texts)
    return ('{"tickets":[' + items + '],"next_cursor":' + json.dumps(next_cursor) + "}").encode("utf-8")


async def get_ticket(request: web.Request) -> web.Response:
    """GET /v1/tickets/{id}."""
    who = staff(request)
    rec, history, truncated = await supervise.get_ticket(request.app[POOL], who, ticket_id(request))
    return respond(request, TicketDetail(ticket=rec.ticket, duplicate_of=rec.duplicate_of,
                                         history=[AuditEntry(**h) for h in history], history_truncated=truncated))


async def assign_one(request: web.Request) -> web.Response:
    """POST /v1/tickets/{id}/assign."""
    who = staff(request)
    body = await read_model(request, AssignRequest)
    recs, _ = await supervise.assign(request.app[POOL], who, [ticket_id(request)], body.crew, bulk=False)
    return respond(request, recs[0].ticket)


async def assign_bulk(request: web.Request) -> web.Response:
    """POST /v1/tickets/assign."""
    who = staff(request)
    body = await read_model(request, BulkAssignRequest)
    recs, changed = await supervise.assign(request.app[POOL], who, body.ticket_ids, body.crew, bulk=True)
    return respond(request, BulkResult(tickets=[r.ticket for r in recs], changed=changed))


async def patch_ticket(request: web.Request) -> web.Response:
    """PATCH /v1/tickets/{id}."""
    who = staff(request)
    body = await read_model(request, PatchTicketRequest)
    values = {k: getattr(body, k) for k in body.model_fields_set}
    recs, _ = await supervise.update_fields(request.app[POOL], who, [ticket_id(request)], values, bulk=False)
    return respond(request, recs[0].ticket)


async def priority_bulk(request: web.Request) -> web.Response:
    """POST /v1/tickets/priority."""
    who = staff(request)
    body = await read_model(request, BulkPriorityRequest)
    recs, changed = await supervise.update_fields(request.app[POOL], who, body.ticket_ids, {"priority": body.priority},
                                                  bulk=True, action="set_priority")
    return respond(request, BulkResult(tickets=[r.ticket for r in recs], changed=changed))


def status_handler(action: Action, model: type[WireModel]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """One handler per status action; they differ only in body model and table row."""

    async def handler(request: web.Request) -> web.Response:
        who = staff(request)
        body = await read_optional(request, model) if action is Action.CLOSE else await read_model(request, model)
        rec = await supervise.change_status(request.app[POOL], who, ticket_id(request), action,
                                            reason=getattr(body, "reason", None), duplicate_of=getattr(body, "of", None))
        return respond(request, rec.ticket)

    handler.__doc__ = f"POST /v1/tickets/{{id}}/{action.value}."
    return handler


def setup(app: web.Application) -> None:
    """Register the supervisor ticket routes, then the crew/device/user routes."""
    r = ROLES
    route(app, "POST", "/v1/tickets", create_ticket, summary="Create a ticket (assigned when a crew is given)",
          roles=r, request=CreateTicketRequest, response=Ticket, status=201, tags=TAGS)
    route(app, "GET", "/v1/tickets", list_tickets, summary="List tickets: filters and keyset pagination",
          roles=r, query=TicketListQuery, response=TicketPage, tags=TAGS)
    route(app, "POST", "/v1/tickets/assign", assign_bulk, summary="Assign many tickets to a crew (all or nothing)",
          roles=r, request=BulkAssignRequest, response=BulkResult, tags=TAGS)
    route(app, "POST", "/v1/tickets/priority", priority_bulk, summary="Set the priority of many tickets (all or nothing)",
          roles=r, request=BulkPriorityRequest, response=BulkResult, tags=TAGS)
    route(app, "GET", f"/v1/tickets/{ID}", get_ticket, summary="One ticket with its audit history",
          roles=r, response=TicketDetail, tags=TAGS, path_model=TicketPath)
    route(app, "PATCH", f"/v1/tickets/{ID}", patch_ticket, summary="Change supervisor-owned fields",
          roles=r, request=PatchTicketRequest, response=Ticket, tags=TAGS, path_model=TicketPath)
    route(app, "POST", f"/v1/tickets/{ID}/assign", assign_one, summary="Assign or reassign a ticket to a crew",
          roles=r, request=AssignRequest, response=Ticket, tags=TAGS, path_model=TicketPath)
    for path, action, model, summary in (
        ("cancel", Action.CANCEL, CancelRequest, "Cancel an open ticket"),
        ("duplicate", Action.MARK_DUPLICATE, DuplicateRequest, "Mark an open ticket a duplicate of another"),
        ("close", Action.CLOSE, CloseRequest, "Close a completed or unable-to-complete ticket (body optional)"),
        ("reopen", Action.REOPEN, ReopenRequest, "Reopen a closed ticket"),
    ):
        route(app, "POST", f"/v1/tickets/{ID}/{path}", status_handler(action, model), summary=summary,
              roles=r, request=model, response=Ticket, tags=TAGS, path_model=TicketPath)
    admin.setup(app)

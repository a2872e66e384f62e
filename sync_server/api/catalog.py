"""GET /v1/catalog: the service types, codes, priorities, statuses and limits a device (or the console) may use."""

from __future__ import annotations

from aiohttp import web

from protocol import MAX_MUTATIONS, Catalog, CatalogLimits, CatalogServiceType, Priority, RemovalReason, TicketStatus
from protocol.models import MAX_ITEM_LINES
from sync_server.api.http import principal, respond
from sync_server.api.org_schemas import ServiceTypeQuery
from sync_server.api.registry import route
from sync_server.api.schemas import read_query
from sync_server.auth import Role
from sync_server.engine import org
from sync_server.keys import POOL, SETTINGS

MAX_PULL_LIMIT = 1000  # PullRequest.limit's upper bound (protocol/models.py)


async def catalog(request: web.Request) -> web.Response:
    """GET /v1/catalog."""
    who = principal(request, Role.DEVICE, Role.SUPERVISOR, Role.ADMIN)
    q = read_query(request, ServiceTypeQuery)
    rows = await org.list_service_types(request.app[POOL], who, q.department)
    s = request.app[SETTINGS]
    department = q.department
    if who.role is not Role.ADMIN:  # devices and supervisors see exactly their own department
        department = next((d["code"] for d in await org.list_departments(request.app[POOL], who)), None)
    return respond(request, Catalog(
        department=department,
        service_types=[CatalogServiceType(code=r["code"], name=r["name"], department=r["department"],
                                          default_priority=r["default_priority"],
                                          resolution_codes=list(r["resolution_codes"]),
                                          reason_codes=list(r["reason_codes"])) for r in rows],
        priorities=list(Priority), statuses=list(TicketStatus), removal_reasons=list(RemovalReason),
        limits=CatalogLimits(
            max_push_bytes=s.max_push_bytes, max_body_bytes=s.max_body_bytes, max_mutations_per_push=MAX_MUTATIONS,
            max_item_lines=MAX_ITEM_LINES, max_pull_limit=MAX_PULL_LIMIT, max_photo_bytes=s.max_photo_bytes,
            max_photo_pixels=s.max_photo_pixels, max_uploads_per_device=s.max_uploads_per_device,
            retention_days=s.retention_days,
        ),
    ))


def setup(app: web.Application) -> None:
    """Register the catalogue route."""
    route(app, "GET", "/v1/catalog", catalog,
          summary="Service types of the caller's department with allowed resolution/reason codes, priorities, "
                  "statuses and server limits (admins: all departments, or ?department=)",
          roles=(Role.DEVICE.value, Role.SUPERVISOR.value, Role.ADMIN.value), query=ServiceTypeQuery,
          response=Catalog, tags=("sync",))

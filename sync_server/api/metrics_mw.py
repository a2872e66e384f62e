"""Request metrics as their own middleware (outermost), so latency and status are recorded per route template after
every error has been mapped to its final status, without touching the error/auth middleware."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from sync_server.dbpool import REQUEST, RequestTag
from sync_server.metrics import METRICS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Long-lived WebSockets are measured as sockets (fieldsync_live_sockets), not as request latency.
UNTIMED_ROUTES = frozenset({"/v1/live"})


def route_label(request: web.Request) -> str:
    """The route template ("/v1/uploads/{upload_id}"), never the raw path: ids and junk URLs must not become series."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe one latency sample per request, labelled by method, route template and final status."""
    started = time.perf_counter()
    status = 500
    route = route_label(request)
    token = REQUEST.set(RequestTag(route))  # pool timings are labelled with it; admission reads whether it was served
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        REQUEST.reset(token)
        if route not in UNTIMED_ROUTES:
            request.app[METRICS].observe_request(request.method, route, status, time.perf_counter() - started)

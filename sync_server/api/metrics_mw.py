"""What request metrics are labelled with: the route template, never the raw path. The latency sample itself is taken
by api/middleware.pipeline, after every error has been mapped to its final status."""

from __future__ import annotations

from aiohttp import web

# Long-lived WebSockets are measured as sockets (fieldsync_live_sockets), not as request latency.
UNTIMED_ROUTES = frozenset({"/v1/live"})


def route_label(request: web.Request) -> str:
    """The route template ("/v1/uploads/{upload_id}"), never the raw path: ids and junk URLs must not become series."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"

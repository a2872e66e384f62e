"""`GET /console/live`: the supervisor live feed (the same hub and events as /v1/live) for a console page, authenticated
by the session cookie instead of a bearer token, so no token ever reaches the browser."""

from __future__ import annotations

import asyncpg
import structlog
from aiohttp import WSMsgType, web

from protocol import JSON
from sync_server.api.live import LIVE
from sync_server.engine.live import CLOSE_TRY_AGAIN, Subscriber
from sync_server.keys import SETTINGS
from sync_server.web.console import session as sessions
from sync_server.web.console.frame import SESSION, page

log = structlog.get_logger(__name__)


@page()
async def live(request: web.Request) -> web.StreamResponse:
    """Follow the department's events from `?after=` (the position the page was rendered at), JSON text frames."""
    sess = request[SESSION]
    if not sessions.same_origin(request):  # cookies ride along on cross-site upgrades; the Origin says who asked
        raise web.HTTPForbidden(text="cross-origin live feed refused")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=settings.live_heartbeat_s, compress=False, max_msg_size=4 << 10, timeout=5.0)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="this endpoint speaks WebSocket")
    after_q = request.query.get("after", "")
    after = int(after_q) if after_q.isdigit() and len(after_q) < 20 else None
    await ws.prepare(request)
    hub = request.app[LIVE]
    who = sess.principal
    sub = Subscriber(ws, request.transport, JSON, who.role.value, department_id=who.department_id, user_id=who.user_id)  # type: ignore[arg-type]
    try:
        await hub.follow(sub, after)
        async for msg in ws:  # the page says nothing; reading keeps pings and closes flowing
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("console.live_database_unavailable", error=str(exc))
        await ws.close(code=CLOSE_TRY_AGAIN, message=b"database unavailable, reconnect")
    finally:
        hub.remove(sub)
    return ws

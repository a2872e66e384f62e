"""`GET /v1/live`: the WebSocket that pokes devices and streams department events to supervisors.

Authentication: a bearer token in the upgrade's Authorization header (checked before upgrading, so a bad token is
an ordinary 401 envelope), or, for browsers that cannot set WebSocket headers, a `LiveHello` as the first frame
within `live_auth_timeout_s`. Encoding: `?encoding=msgpack|json`, the `fieldsync.msgpack`/`fieldsync.json`
subprotocol, or the hello's `encoding`; JSON travels in text frames, msgpack in binary frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import asyncpg
import structlog
from aiohttp import WSMsgType, web
from pydantic import Field, StringConstraints

from protocol import JSON, MSGPACK, DecodeError, ErrorCode, ProtocolError
from protocol.codec import decode_live
from protocol.live import LiveHello
from sync_server.api.params import ParamInt, ParamModel, read_query
from sync_server.api.registry import route
from sync_server.api.middleware import authorization, cached_principal
from sync_server.auth import Principal, Role
from sync_server.engine.live import (
    CLOSE_BAD_REQUEST,
    CLOSE_REVOKED,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    LiveHub,
    Subscriber,
)
from sync_server.keys import AUTH_CACHE, DSN, POOL, SETTINGS
from sync_server.storage import feed
from sync_server.metrics import METRICS

log = structlog.get_logger(__name__)
LIVE: web.AppKey[LiveHub] = web.AppKey("live_hub")
SUBPROTOCOLS = ("fieldsync.msgpack", "fieldsync.json")


class LiveQuery(ParamModel):
    """The upgrade's query: encoding, a supervisor's resume position, an admin's department."""

    encoding: Literal["json", "msgpack"] | None = None
    after: ParamInt(0) | None = Field(default=None, description="Resume after this feed position (supervisors).")  # type: ignore[valid-type]
    department: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Department code an admin follows.")


def media_of(name: str | None) -> str | None:
    """'json' / 'msgpack' (query, hello, or subprotocol suffix) to a media type."""
    return {"json": JSON, "msgpack": MSGPACK}.get(name or "")


async def _authenticate(request: web.Request, header: str) -> Principal:
    """Same token rules and device-principal cache as a sync request: a fleet's phones reconnect after every dead
    spot, and a query (plus a contact write) per reconnect was a sixth of the pool's acquires in a 1,000-device
    shift. A revoked device's socket is closed by the hub's revocation sweep either way."""
    return await cached_principal(request, header, any_role=True)


async def _hello(ws: web.WebSocketResponse, timeout: float) -> LiveHello | int:
    """The first frame must be a hello, in time; otherwise the close code to use."""
    try:
        msg = await ws.receive(timeout=timeout)
    except asyncio.TimeoutError:
        return CLOSE_UNAUTHORIZED
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return CLOSE_BAD_REQUEST
    try:
        hello = decode_live(msg.data, JSON if msg.type is WSMsgType.TEXT else MSGPACK)
    except (DecodeError, ProtocolError):
        return CLOSE_BAD_REQUEST
    return hello if isinstance(hello, LiveHello) else CLOSE_BAD_REQUEST


async def live(request: web.Request) -> web.StreamResponse:
    """Authenticate, upgrade, register with the process's hub, then read until the peer or the hub closes."""
    settings = request.app[SETTINGS]
    hub = request.app[LIVE]
    header = authorization(request)
    ws = web.WebSocketResponse(heartbeat=settings.live_heartbeat_s, protocols=SUBPROTOCOLS, compress=False,
                               max_msg_size=16 << 10, timeout=5.0)
    who: Principal | None = None
    if header is not None or not ws.can_prepare(request).ok:
        who = await _authenticate(request, header or "")  # a plain GET without a token is a 401, like everywhere
        if not ws.can_prepare(request).ok:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "this endpoint speaks WebSocket: send an Upgrade request")
    q = read_query(request, LiveQuery)  # validated by the route before the upgrade: a bad query is a plain 422
    media = media_of(q.encoding)
    await ws.prepare(request)
    if ws.ws_protocol:
        media = media or media_of(ws.ws_protocol.removeprefix("fieldsync."))
    after = q.after
    try:
        return await _session(request, ws, hub, who, media, after)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # headers are sent: no HTTP envelope now
        log.warning("live.database_unavailable", error=str(exc))
        await ws.close(code=CLOSE_TRY_AGAIN, message=b"database unavailable, reconnect")
        return ws


async def _session(request: web.Request, ws: web.WebSocketResponse, hub: LiveHub, who: Principal | None,
                   media: str | None, after: int | None) -> web.WebSocketResponse:
    """Everything after the upgrade: hello (if needed), registration, then read until closed."""
    settings = request.app[SETTINGS]
    if who is None:
        hello = await _hello(ws, settings.live_auth_timeout_s)
        if isinstance(hello, int):
            await ws.close(code=hello, message=b"send a hello with a token first")
            return ws
        try:
            who = await _authenticate(request, "Bearer " + hello.token)
        except ProtocolError as err:
            code = CLOSE_REVOKED if err.code is ErrorCode.TOKEN_REVOKED else CLOSE_UNAUTHORIZED
            await ws.close(code=code, message=err.code.value.encode())
            return ws
        if "encoding" in hello.model_fields_set or media is None:
            media = media_of(hello.encoding)
        after = hello.after if hello.after is not None else after
    sub = await _subscriber(request, ws, who, media or JSON)
    if sub is None:
        await ws.close(code=CLOSE_BAD_REQUEST, message=b"admins name a department: ?department=<code>")
        return ws
    structlog.contextvars.bind_contextvars(principal=who.name)
    sockets = request.app[METRICS].live_sockets.labels(role=sub.role)
    sockets.inc()
    try:
        if sub.role == Role.DEVICE.value:
            hub.add_device(sub)
        else:
            await hub.follow(sub, after)
        async for msg in ws:  # clients have nothing to say after the hello; reading keeps pings and closes flowing
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
    finally:
        hub.remove(sub)
        sockets.dec()
        request.app[METRICS].live_closes.labels(code=str(ws.close_code)).inc()
    return ws


async def _subscriber(request: web.Request, ws: web.WebSocketResponse, who: Principal, media: str) -> Subscriber | None:
    """The hub's view of this socket: devices by crew, supervisors (and admins naming one) by department."""
    transport = request.transport
    if who.role is Role.DEVICE:
        return Subscriber(ws, transport, media, Role.DEVICE.value, crew_id=who.crew_id, device_id=who.device_id)  # type: ignore[arg-type]
    department = who.department_id
    if who.role is Role.ADMIN:
        code = read_query(request, LiveQuery).department or ""
        async with request.app[POOL].acquire() as conn:
            department = await feed.department_id(conn, code) if code else None
    if department is None:
        return None
    return Subscriber(ws, transport, media, who.role.value, department_id=department, user_id=who.user_id)  # type: ignore[arg-type]


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """One hub per process, after the pool exists; on shutdown sockets get 1001 and reconnect elsewhere."""
    hub = LiveHub(app[POOL], app[DSN], app[SETTINGS], app[AUTH_CACHE])
    await hub.start()
    app[LIVE] = hub
    yield
    await hub.stop()


async def _on_shutdown(app: web.Application) -> None:
    """Open WebSockets would hold graceful shutdown for its whole timeout; close them first."""
    if LIVE in app:
        await app[LIVE].stop()


def setup(app: web.Application) -> None:
    """Register the route and the hub's lifetime."""
    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(_on_shutdown)
    route(app, "GET", "/v1/live", live, summary="Live feed WebSocket: pokes for devices, department events for supervisors",
          roles=(Role.DEVICE.value, Role.SUPERVISOR.value, Role.ADMIN.value), query=LiveQuery, tags=("live",))

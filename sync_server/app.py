"""The aiohttp application factory: resources in cleanup_ctx, routes from the api modules, nothing at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from protocol.cursor import CursorSigner
from sync_server import metrics
from sync_server.api import catalog, conflicts, devices, live, middleware, ops, org, supervisor, sync, uploads
from sync_server.api.budget import BUDGETS, Budgets
from sync_server.engine import maintenance
from sync_server.engine.pull_batch import FirstPages
from sync_server.engine.push_batch import PushBatcher
from sync_server.engine.wakeups import wakeups_ctx
from sync_server import auth
from sync_server.auth import AuthCache, TouchMemo, flush_touches, touch_loop
from sync_server.dbpool import Admission, MeteredPool, pool_kwargs
from sync_server.keys import AUTH_CACHE, CODES, CURSORS, DSN, FIRST_PAGES, POOL, PUSHES, SETTINGS, TOUCHED
from sync_server.settings import Settings
from sync_server.storage import pull_sql
from sync_server.storage.org import CodeCache
from sync_server.storage.errors import DatabaseUnreachable
from sync_server.storage.migrate import check_schema
from sync_server import open311
from sync_server.web import console, crewapp

log = structlog.get_logger(__name__)


def session_settings(settings: Settings) -> dict[str, str]:
    """Startup parameters of every pool connection; JIT off because our queries are short and latency-bound (the
    benchmark's pgbench replay of a push sets the same, to measure what the server's sessions would)."""
    if settings.database_pgbouncer:  # pgbouncer refuses startup parameters it does not track (set them per database)
        return {"application_name": "fieldsync"}
    # generic plans: the push and ticket-render statements were re-planned on every call, costing more than they ran
    return {"application_name": "fieldsync", "jit": "off", "plan_cache_mode": "force_generic_plan"}


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    """One pool per process, sized by settings."""
    server_settings = session_settings(settings)
    extra: dict[str, Any] = {}
    if settings.database_pgbouncer:
        # Transaction pooling hands each transaction any server connection: named prepared statements would be
        # missing on the next one.
        extra["statement_cache_size"] = 0
    else:
        extra["init"] = _warm  # a named statement behind a transaction pooler would land on another backend
    return await MeteredPool(  # asyncpg.create_pool, with per-route wait and hold timings (dbpool)
        dsn,
        # asyncpg replaces a connection after 50,000 queries by default: at a few thousand statements a second that is
        # every minute per connection, each time a new backend, a SCRAM exchange, cold catalogue caches and the type
        # introspection again. Our statement set is small and fixed, so a backend does not bloat.
        # A whole-pool floor never closes an idle connection, so no per-release inactivity timer is armed for it.
        **(pool_kwargs() | {"max_queries": 5_000_000,
                            "max_inactive_connection_lifetime": 0.0 if settings.pool_floor() == settings.pool_max_size else 300.0}),
        # Opened before the server reports ready (asyncpg's init_size defaults to min_size) and kept while idle: the
        # first burst of requests would otherwise wait for new backends, ~10-30 ms of CPU each on a busy machine.
        min_size=settings.pool_floor(),
        max_size=settings.pool_max_size,
        admission=Admission(settings.pool_max_size, settings.db_queue_limit, settings.db_queue_timeout_s),
        server_settings=server_settings,
        **extra,
        command_timeout=60,
        reset=_no_reset,
        connect=_connect,
    )


# Every array type our SQL binds or returns. asyncpg has built-in codecs for scalars (and text[]/oid[]) only, so a new
# connection runs its catalogue introspection (a recursive query, ~16 ms of planning on a cold backend) the first time
# each statement brings a new array type: about four times per connection on the push path, under load.
_ARRAY_TYPES = ("uuid", "integer", "smallint", "bigint", "bytea", "timestamptz", "jsonb", "boolean", "double precision",
                "numeric", "date", "character varying")
_WARM_SQL = "SELECT " + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_ARRAY_TYPES, 1))


async def _warm(conn: asyncpg.Connection) -> None:
    """Learn every array codec in one introspection when the pool opens a connection, not one per first statement of a
    type inside a request; and plan a device's first-pull statements (login, snapshot, delta) there, not in the burst
    of first pulls after a start."""
    await conn.prepare(_WARM_SQL)
    await pull_sql.warm(conn)
    await auth.warm(conn)


async def _connect(dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
    """The pool's connect: a socket-level failure becomes DatabaseUnreachable, so the error boundary maps it to 503
    by class without guessing whether an OSError came from the database or from a client."""
    try:
        return await asyncpg.connect(dsn, **kwargs)
    except (OSError, TimeoutError, asyncpg.TargetServerAttributeNotMatched) as exc:
        # TargetServerAttributeNotMatched: a multi-host DSN (target_session_attrs=read-write) found only standbys,
        # e.g. between a primary's crash and the standby's promotion; the next request tries again.
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL: {type(exc).__name__}") from exc


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL/UNLISTEN round trip: no code here leaves session state on a pooled
    connection (advisory locks are transaction-scoped, LISTEN uses its own connection)."""


def create_app(settings: Settings, dsn: str) -> web.Application:
    """Build the app; the pool opens on startup and closes on cleanup, so tests and workers get clean lifetimes."""
    app = web.Application(
        middlewares=[middleware.pipeline],  # one layer: metrics, request id, errors, limits, auth (api/middleware.py)
        client_max_size=max(settings.max_push_bytes, settings.max_body_bytes),
        # aiohttp buffers up to 2x this per connection before pausing the socket; 64 KiB (not 3.14's 256 KiB) keeps
        # dozens of concurrent photo uploads from parking tens of MiB in memory (issue 5 benchmark).
        # after an answer, aiohttp closes a connection whose next request head has not arrived within keepalive_timeout;
        # the first head of a connection is bounded by guard_request_heads (below).
        handler_args={"read_bufsize": 64 << 10, "keepalive_timeout": settings.header_timeout_s},
    )
    app[SETTINGS] = settings
    app[DSN] = settings.database_direct_url or dsn  # LISTEN and session advisory locks never go through a pooler
    app[CURSORS] = CursorSigner(settings.resolved_cursor_secret())
    app[metrics.METRICS] = metrics.Metrics()
    app[TOUCHED] = TouchMemo()
    app[FIRST_PAGES] = FirstPages()
    app[PUSHES] = PushBatcher(max_batch=settings.push_batch_max) if settings.push_batch_max > 1 else None
    app[AUTH_CACHE] = AuthCache()
    app[BUDGETS] = Budgets()
    app[CODES] = CodeCache()

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(dsn, settings)
        if isinstance(pool, MeteredPool):
            pool.set_observer(app[metrics.METRICS].observe_db)
            if pool.admission is not None:
                pool.admission.on_shed = app[metrics.METRICS].pool_shed.inc
        async with pool.acquire() as conn:
            await check_schema(conn)
        app[POOL] = pool
        log.info("app.pool_ready", min=settings.pool_floor(), max=settings.pool_max_size)
        yield
        try:
            async with asyncio.timeout(10):  # graceful: let in-flight transactions finish...
                await pool.close()
        except TimeoutError:  # ...but a stuck one must not hold shutdown forever
            log.warning("app.pool_close_timeout")
            pool.terminate()

    async def touch_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(touch_loop(app[POOL], app[TOUCHED]))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:  # the contacts of the last second, before the pool closes
            await flush_touches(app[POOL], app[TOUCHED])
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("app.touch_flush_failed", error=type(exc).__name__)

    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(touch_ctx)
    app.cleanup_ctx.append(wakeups_ctx)
    app.cleanup_ctx.append(maintenance.prune_ctx)
    app.cleanup_ctx.append(metrics.listener_ctx)
    for module in (ops, supervisor, org, catalog, sync, conflicts, uploads, live, devices):
        module.setup(app)
    console.setup(app)
    crewapp.setup(app)
    open311.setup(app)
    return app


def guard_request_heads(server: web.Server, timeout: float) -> None:
    """Close a connection whose first request head is not complete `timeout` s after it opened (slowloris, issue
    10.13): aiohttp bounds later heads by keepalive_timeout but, before 3.14.1, not the first one.

    Works on the runner's public `server`: arms a timer when the connection is made, disarms it when aiohttp builds
    the first request (its head parsed). Must run before the server accepts connections.
    """
    loop = asyncio.get_running_loop()
    timers: dict[object, asyncio.TimerHandle] = {}
    made, lost, factory = server.connection_made, server.connection_lost, server.request_factory

    def expire(handler: web.RequestHandler) -> None:
        timers.pop(handler, None)
        log.info("http.header_timeout", timeout_s=timeout)
        handler.force_close()

    def connection_made(handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        made(handler, transport)
        timers[handler] = loop.call_later(timeout, expire, handler)

    def connection_lost(handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        timer = timers.pop(handler, None)
        if timer is not None:
            timer.cancel()
        lost(handler, exc)

    def request_factory(message: Any, payload: Any, protocol: web.RequestHandler, writer: Any, task: Any) -> Any:
        timer = timers.pop(protocol, None)
        if timer is not None:
            timer.cancel()
        return factory(message, payload, protocol, writer, task)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
    server.request_factory = request_factory


async def start_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """AppRunner set up with the request-head guard; every server (cli, tests) starts through here."""
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    assert runner.server is not None
    guard_request_heads(runner.server, app[SETTINGS].header_timeout_s)
    return runner

"""The aiohttp application factory: resources in cleanup_ctx, routes from the api modules, nothing at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from protocol.cursor import CursorSigner
from sync_server.api import catalog, conflicts, live, middleware, ops, org, supervisor, sync, uploads
from sync_server.engine import maintenance
from sync_server.keys import CURSORS, DSN, POOL, SETTINGS
from sync_server.settings import Settings
from sync_server.storage.migrate import check_schema

log = structlog.get_logger(__name__)


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    """One pool per process, sized by settings; JIT off because our queries are short and latency-bound."""
    return await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        server_settings={"application_name": "fieldsync", "jit": "off"},
        command_timeout=60,
        reset=_no_reset,
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL/UNLISTEN round trip: no code here leaves session state on a pooled
    connection (advisory locks are transaction-scoped, LISTEN uses its own connection)."""


def create_app(settings: Settings, dsn: str) -> web.Application:
    """Build the app; the pool opens on startup and closes on cleanup, so tests and workers get clean lifetimes."""
    app = web.Application(
        middlewares=[middleware.request_context, middleware.errors, middleware.auth],
        client_max_size=max(settings.max_push_bytes, settings.max_body_bytes),
        # aiohttp buffers up to 2x this per connection before pausing the socket; 64 KiB (not 3.14's 256 KiB) keeps
        # dozens of concurrent photo uploads from parking tens of MiB in memory (issue 5 benchmark).
        handler_args={"read_bufsize": 64 << 10},
    )
    app[SETTINGS] = settings
    app[DSN] = dsn
    app[CURSORS] = CursorSigner(settings.resolved_cursor_secret())

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(dsn, settings)
        async with pool.acquire() as conn:
            await check_schema(conn)
        app[POOL] = pool
        log.info("app.pool_ready", min=settings.pool_min_size, max=settings.pool_max_size)
        yield
        try:
            async with asyncio.timeout(10):  # graceful: let in-flight transactions finish...
                await pool.close()
        except TimeoutError:  # ...but a stuck one must not hold shutdown forever
            log.warning("app.pool_close_timeout")
            pool.terminate()

    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(maintenance.prune_ctx)
    for module in (ops, supervisor, org, catalog, sync, conflicts, uploads, live):
        module.setup(app)
    return app

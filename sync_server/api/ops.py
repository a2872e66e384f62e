"""Operator endpoints: liveness, readiness and the generated API description."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from sync_server import __version__
from sync_server.api.registry import openapi, route
from sync_server.keys import POOL
from sync_server.storage.migrate import current_version, expected_version


async def healthz(request: web.Request) -> web.Response:
    """Process is alive and serving; says nothing about the database, so an orchestrator does not restart us for its outage."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready for traffic: database reachable and schema exactly what this build expects."""
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            have = await current_version(conn)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return web.json_response({"status": "unavailable", "database": str(exc)[:200]}, status=503)
    want = expected_version()
    if have != want:
        return web.json_response({"status": "unavailable", "schema": have, "expected": want}, status=503)
    return web.json_response({"status": "ready", "schema": have})


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document, generated from the registered routes' pydantic models so it cannot drift."""
    return web.json_response(openapi(request.app, __version__))


def setup(app: web.Application) -> None:
    """Register operator routes."""
    route(app, "GET", "/healthz", healthz, summary="Liveness probe", roles=(), tags=("ops",))
    route(app, "GET", "/readyz", readyz, summary="Readiness probe (database and schema)", roles=(), tags=("ops",))
    app.router.add_get("/openapi.json", openapi_json)

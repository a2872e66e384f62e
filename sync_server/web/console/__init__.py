"""The supervisor console at /console/: server-rendered pages, vendored htmx, a strict CSP, sessions by cookie."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from sync_server.web.console import board, live, pages
from sync_server.web.console.frame import TEMPLATES, environment, secure_headers

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"


async def _to_board(request: web.Request) -> web.StreamResponse:
    """/console without the slash."""
    raise web.HTTPPermanentRedirect(PREFIX + "/")


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Static files get the console's security headers and may be cached (their URLs carry a version)."""
    if request.path.startswith(PREFIX + "/static/"):
        response.headers["Cache-Control"] = "public, max-age=86400"
        secure_headers(request, response)


def setup(app: web.Application) -> None:
    """Register the console's routes on the main app (the token middleware lets /console paths through)."""
    app[TEMPLATES] = environment()
    r = app.router
    r.add_get(PREFIX, _to_board)
    r.add_get(PREFIX + "/", board.board)
    r.add_post(PREFIX + "/dispatch", board.dispatch)
    r.add_get(PREFIX + "/login", pages.login_form)
    r.add_post(PREFIX + "/login", pages.login)
    r.add_post(PREFIX + "/logout", pages.logout)
    r.add_get(PREFIX + "/tickets/{id}", pages.ticket)
    r.add_get(PREFIX + "/conflicts", pages.conflicts)
    r.add_post(PREFIX + "/conflicts/{id}/resolve", pages.resolve)
    r.add_get(PREFIX + "/crews", pages.crews)
    r.add_post(PREFIX + "/devices", pages.enroll)
    r.add_post(PREFIX + "/devices/{id}/revoke", pages.revoke)
    r.add_get(PREFIX + "/photos/{sha256}", pages.photo)
    r.add_get(PREFIX + "/live", live.live)
    r.add_static(PREFIX + "/static/", STATIC, append_version=False)
    app.on_response_prepare.append(_static_headers)

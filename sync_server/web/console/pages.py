"""Console pages other than the board: sign-in/out, ticket detail, conflicts inbox, crews and devices, photos."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote
from uuid import UUID

import segno
from aiohttp import web

from protocol import ErrorCode, ProtocolError
from sync_server.api import uploads
from sync_server.engine import conflicts as engine_conflicts
from sync_server.engine import supervise
from sync_server.engine.tx import run_in_tx
from sync_server.keys import AUTH_CACHE, POOL, PRINCIPAL, SETTINGS
from sync_server.web.console import session as sessions
from sync_server.api.params import MAX_BIGINT
from sync_server.web.console.frame import SESSION, page, read_form, render

ONLINE_WINDOW = timedelta(minutes=5)  # a device that talked to us this recently counts as online


def _login_page(request: web.Request, status: int = 200, error: str | None = None, username: str = "") -> web.Response:
    """The sign-in form with a fresh login-CSRF token, double-submitted as a cookie (no session exists yet)."""
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", status, error=error, username=username, login_csrf=token)
    resp.set_cookie(sessions.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/console/",
                    secure=sessions.is_https(request, request.app[SETTINGS]))
    return resp


@page(public=True)
async def login_form(request: web.Request) -> web.Response:
    """GET /console/login."""
    return _login_page(request)


@page(public=True)
async def login(request: web.Request) -> web.StreamResponse:
    """POST /console/login: throttled password check, then a fresh session cookie."""
    settings = request.app[SETTINGS]
    form = await read_form(request)
    name = str(form.get("username", "")).strip()[:200]
    password = str(form.get("password", ""))
    if not sessions.same_origin(request) or not sessions.csrf_ok(request.cookies.get(sessions.LOGIN_CSRF_COOKIE, ""),
                                                                 str(form.get("login_csrf", "")) or None):
        return _login_page(request, 403, "The sign-in form expired or did not come from this site. Try again.", name)
    try:
        cookie, _ = await sessions.sign_in(request.app[POOL], settings, name, password, sessions.client_address(request))
    except ProtocolError as err:
        resp = _login_page(request, err.http_status, err.message, name)
        if err.code is ErrorCode.RATE_LIMITED:
            resp.headers["Retry-After"] = str(err.details.get("retry_after", 1))
        return resp
    resp = web.HTTPSeeOther("/console/")
    resp.set_cookie(sessions.cookie_name(request, settings), cookie, httponly=True, samesite="Strict", path="/",
                    secure=sessions.is_https(request, settings), max_age=settings.session_max_hours * 3600)
    resp.del_cookie(sessions.LOGIN_CSRF_COOKIE, path="/console/")
    raise resp


@page()
async def logout(request: web.Request) -> web.StreamResponse:
    """POST /console/logout: the session ends server-side and the cookie is cleared."""
    await sessions.sign_out(request.app[POOL], request[SESSION])
    resp = web.HTTPSeeOther("/console/login")
    resp.del_cookie(sessions.cookie_name(request, request.app[SETTINGS]), path="/")
    raise resp


def _ticket_id(request: web.Request) -> UUID:
    """A malformed id is a ticket that does not exist."""
    try:
        return UUID(request.match_info["id"])
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket") from None


@page()
async def ticket(request: web.Request) -> web.Response:
    """GET /console/tickets/{id}: fields, audit timeline, notes, photos, conflicts."""
    who = request[SESSION].principal
    tid = _ticket_id(request)
    rec, history, truncated = await supervise.get_ticket(request.app[POOL], who, tid)
    async with request.app[POOL].acquire() as conn:
        found = await engine_conflicts.list_conflicts(conn, supervise.scope(who), state="all", ticket_id=tid, limit=500)
        photos = await conn.fetch("SELECT sha256, kind, taken_at, added_by FROM ticket_photos WHERE ticket_id = $1"
                                  " ORDER BY taken_at, sha256", tid)
    return render(request, "ticket.html", t=rec.ticket, duplicate_of=rec.duplicate_of, history=history,
                  truncated=truncated, conflicts=found, photos=photos, flash=None, error=None)


async def _conflicts(request: web.Request, state: str, kind: str | None, crew: str | None) -> list[Any]:
    """The inbox rows for these filters, newest first (the caller's department only)."""
    who = request[SESSION].principal
    async with request.app[POOL].acquire() as conn:
        rows = await engine_conflicts.list_conflicts(conn, supervise.scope(who), state=state, kind=kind, crew=crew, limit=200)
        crews = await conn.fetch("SELECT name FROM crews WHERE ($1::smallint IS NULL OR department_id = $1) ORDER BY name",
                                 supervise.scope(who))
    return [rows, [c["name"] for c in crews]]


async def _conflicts_page(request: web.Request, status: int = 200, flash: str | None = None,
                          error: ProtocolError | None = None) -> web.Response:
    """Render the inbox with the filters in the query string."""
    q = request.query
    state = q.get("state", "open") if q.get("state") in ("open", "resolved", "all") else "open"
    kind = q.get("kind") or None
    crew = q.get("crew") or None
    rows, crews = await _conflicts(request, state, kind, crew)
    return render(request, "conflicts.html", status, conflicts=rows, crews=crews, state=state, kind=kind or "",
                  crew=crew or "", flash=flash, error=error)


@page()
async def conflicts(request: web.Request) -> web.Response:
    """GET /console/conflicts."""
    return await _conflicts_page(request)


@page()
async def resolve(request: web.Request) -> web.Response:
    """POST /console/conflicts/{id}/resolve: resolved once, with the comment, audited (same path as the API)."""
    who = request[SESSION].principal
    form = await read_form(request)
    comment = str(form.get("resolution", "")).strip()
    try:
        cid = int(request.match_info["id"])
        if not 1 <= cid <= MAX_BIGINT:  # beyond bigint names no conflict (the driver refused it: a 500)
            raise ValueError
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such conflict") from None
    if not 1 <= len(comment) <= 2000:
        return await _conflicts_page(request, 422, error=ProtocolError(
            ErrorCode.VALIDATION_FAILED, "Write a comment (up to 2,000 characters) saying how it was resolved."))
    try:
        await run_in_tx(request.app[POOL], lambda conn: engine_conflicts.resolve(conn, who, cid, comment))
    except ProtocolError as err:
        return await _conflicts_page(request, err.http_status, error=err)
    return await _conflicts_page(request, flash=f"Conflict {cid} resolved.")


async def _crews_page(request: web.Request, status: int = 200, **extra: Any) -> web.Response:
    """Crews with open-ticket counts and their devices, online state from last contact."""
    who = request[SESSION].principal
    pool = request.app[POOL]
    crews = await supervise.list_crews(pool, who)
    devices = await supervise.list_devices(pool, who, None)
    now = datetime.now(timezone.utc)
    by_crew: dict[str, list[dict[str, Any]]] = {}
    for d in devices:
        online = d["revoked_at"] is None and d["last_seen_at"] is not None and now - d["last_seen_at"] < ONLINE_WINDOW
        by_crew.setdefault(d["crew"], []).append({**dict(d), "online": online})
    ctx: dict[str, Any] = {"flash": None, "error": None, "enrolled": None, "qr": None, **extra}
    return render(request, "crews.html", status, crews=crews, devices=by_crew, **ctx)


@page()
async def crews(request: web.Request) -> web.Response:
    """GET /console/crews."""
    return await _crews_page(request)


@page()
async def enroll(request: web.Request) -> web.Response:
    """POST /console/devices: enrol a device; the token is shown once, also as a QR code (SVG drawn here, no network)."""
    who = request[SESSION].principal
    form = await read_form(request)
    crew = str(form.get("crew", "")).strip()
    label = str(form.get("label", "")).strip()[:100] or None
    try:
        device_id, token, crew_name = await supervise.enroll(request.app[POOL], who, crew, label)
    except ProtocolError as err:
        return await _crews_page(request, err.http_status, error=err)
    settings = request.app[SETTINGS]
    server = settings.public_url or f"{request.scheme}://{request.host}"
    # A URL a phone camera opens: the crew app reads the token from the fragment (never sent to any server or log).
    link = f"{server.rstrip('/')}/app/#enrol={quote(token, safe='')}"
    qr = segno.make(link, error="m").svg_inline(scale=5, dark="#111", light="#fff", title="Enrolment code for " + device_id)
    resp = await _crews_page(request, enrolled={"device_id": device_id, "token": token, "crew": crew_name, "server": server,
                                                       "link": link},
                             qr=qr, flash=f"Device {device_id} enrolled to {crew_name}.")
    return resp


@page()
async def revoke(request: web.Request) -> web.Response:
    """POST /console/devices/{id}/revoke: the device's token fails on its next request."""
    who = request[SESSION].principal
    device_id = request.match_info["id"]
    try:
        await supervise.revoke(request.app[POOL], who, device_id)
    except ProtocolError as err:
        return await _crews_page(request, err.http_status, error=err)
    request.app[AUTH_CACHE].clear()  # refused at once here; other processes on its NOTIFY (within 1 s if they miss it)
    return await _crews_page(request, flash=f"Device {device_id} revoked.")


@page()
async def photo(request: web.Request) -> web.StreamResponse:
    """GET /console/photos/{sha256}: the API's download path with the session's principal (scope rules included)."""
    request[PRINCIPAL] = request[SESSION].principal
    return await uploads.download(request)

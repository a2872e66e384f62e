"""What every console page shares: templates (autoescaped), security headers with a strict CSP, the session and CSRF
gate, and typed errors rendered in words instead of the API's JSON envelope."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import MultiDictProxy

from protocol import ErrorCode, ProtocolError
from sync_server.api.params import text_ok
from sync_server.keys import POOL, SETTINGS
from sync_server.web.console import session as sessions
from sync_server.web.console.session import ConsoleSession

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION: web.RequestKey[ConsoleSession] = web.RequestKey("fieldsync.console_session")
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("console_templates")
STATIC_VERSION = "1"  # bump when static files change, so browsers fetch them again

# What a supervisor reads when the engine refuses (the code stays in the page for support).
WORDS: dict[ErrorCode, str] = {
    ErrorCode.ILLEGAL_TRANSITION: "Not allowed in the ticket's current status.",
    ErrorCode.CONFLICT: "Someone changed this meanwhile.",
    ErrorCode.NOT_FOUND: "Not found (or not in your department).",
    ErrorCode.VALIDATION_FAILED: "Some input was not accepted.",
    ErrorCode.UNAUTHORIZED: "You are not signed in (or your session expired).",
    ErrorCode.FORBIDDEN: "Not allowed for your account.",
    ErrorCode.RATE_LIMITED: "Too many attempts.",
}


def environment() -> jinja2.Environment:
    """Autoescaping on for every template: notes and addresses come from the street and may hold HTML."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sync_server.web.console", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return env


def local_time(value: datetime | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC instant in the city's zone, for display."""
    return "" if value is None else value.astimezone(tz).strftime(fmt)


def csp(request: web.Request) -> str:
    """No inline script or style anywhere; images may also come from the configured tile server."""
    img = "'self' data:"
    tile = request.app[SETTINGS].map_tile_url
    if tile:
        parts = urlsplit(tile)
        img += f" {parts.scheme}://{parts.netloc}"
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src " + img + "; connect-src 'self';"
            " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def secure_headers(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Headers every console response carries."""
    resp.headers["Content-Security-Policy"] = csp(request)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    """Render a template with what every page needs (session, CSRF token, time zone filter)."""
    settings = request.app[SETTINGS]
    tz = ZoneInfo(settings.city_timezone)
    env = request.app[TEMPLATES]
    sess = request.get(SESSION)
    html = env.get_template(template).render(
        session=sess, csrf=sess.csrf if sess else "", static_version=STATIC_VERSION, tz_name=settings.city_timezone,
        when=lambda v, fmt="%Y-%m-%d %H:%M": local_time(v, tz, fmt), path=request.path, **ctx)
    resp = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    if len(html) > 4096:
        resp.enable_compression()
    return resp


def is_htmx(request: web.Request) -> bool:
    """Requests sent by htmx get fragments and errors retargeted to the flash area."""
    return request.headers.get("HX-Request") == "true"


def error_page(request: web.Request, err: ProtocolError) -> web.Response:
    """A refusal in words; htmx requests get it swapped into the page's message area."""
    words = WORDS.get(err.code, "The request was refused.")
    if is_htmx(request):
        resp = render(request, "_flash.html", 200, flash=None, error=err, words=words)
        resp.headers["HX-Retarget"] = "#flash"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp
    return render(request, "error.html", err.http_status, flash=None, error=err, words=words)


def page(*, public: bool = False) -> Callable[[Handler], Handler]:
    """Wrap a console handler: session required (unless public), CSRF and Origin checked on every POST, errors in words."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            settings = request.app[SETTINGS]
            try:
                # PostgreSQL text cannot hold NUL: a filter or id holding one names nothing (they reached SQL: 500s)
                if not all(text_ok(k) and text_ok(v) for k, v in request.query.items()):
                    raise ProtocolError(ErrorCode.VALIDATION_FAILED, "A filter holds a character that cannot be used.")
                if not all(text_ok(v) for v in request.match_info.values()):
                    raise ProtocolError(ErrorCode.NOT_FOUND, "No such page.")
                if not public:
                    sess = await sessions.load(request.app[POOL], settings,
                                               request.cookies.get(sessions.cookie_name(request, settings)))
                    if sess is None:
                        if request.method == "GET" and not is_htmx(request):
                            raise web.HTTPSeeOther("/console/login")
                        raise ProtocolError(ErrorCode.UNAUTHORIZED, "Your session has expired. Sign in again; nothing was changed.")
                    request[SESSION] = sess
                    if request.method == "POST":
                        await _check_csrf(request, sess)
                resp = await handler(request)
            except ProtocolError as err:
                log.info("console.refused", code=err.code.value, path=request.path)
                resp = error_page(request, err)
            except web.HTTPException as exc:
                secure_headers(request, exc)
                raise
            return secure_headers(request, resp)

        return wrapped

    return wrap


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form, or a typed refusal: a malformed body (a multipart without its boundary was a 500) or a field
    PostgreSQL cannot store (a NUL in a user name reached the audit INSERT) changes nothing."""
    try:
        form = await request.post()
    except (ValueError, RequestPayloadError):  # RequestPayloadError: a Content-Encoding that does not decode
        raise ProtocolError(ErrorCode.MALFORMED_BODY, "The form could not be read. Nothing was changed.") from None
    if not all(text_ok(k) and (not isinstance(v, str) or text_ok(v)) for k, v in form.items()):
        raise ProtocolError(ErrorCode.VALIDATION_FAILED,
                            "A field holds a character that cannot be stored (such as NUL). Nothing was changed.")
    return form


async def _check_csrf(request: web.Request, sess: ConsoleSession) -> None:
    """Every state-changing request carries the session's token (form field or htmx header) from our own origin."""
    form = await read_form(request)
    given = request.headers.get("X-CSRF-Token") or form.get("csrf")
    if not sessions.same_origin(request) or not sessions.csrf_ok(sess.csrf, given if isinstance(given, str) else None):
        log.warning("console.csrf_refused", path=request.path)
        raise ProtocolError(ErrorCode.FORBIDDEN,
                            "This form was not sent by your console page (security check failed). Nothing was changed; "
                            "reload the page and try again.")

"""Cross-cutting request handling in one middleware: metrics, request ids in every log line, one error envelope, rate
limits, authentication and the protocol version."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import hdrs, web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

from protocol import ErrorCode, ProtocolError
from protocol.codec import encode_error
from protocol.version import VERSION_HEADER, check_version
from sync_server.api import limits
from sync_server.api.http import ClientGone, response_type
from sync_server.api.metrics_mw import UNTIMED_ROUTES, route_label
from sync_server.auth import Principal, Role, authenticate
from sync_server.dbpool import REQUEST, RequestTag
from sync_server.keys import AUTH_CACHE, POOL, PRINCIPAL, SETTINGS, TOUCHED
from sync_server.logging import REQUEST_FIELDS
from sync_server.metrics import METRICS
from sync_server.open311 import render as open311_render
from sync_server.storage.errors import database_unavailable_cause

log = structlog.get_logger("sync_server.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths served without a token: probes, the API description and the tus discovery OPTIONS.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/", "/app"})
# The crew app's static files: they hold no data, and the app sends the device token on every API call it makes.
# Open311 GeoReport v2 is public by the spec (POST carries an api_key, checked by sync_server/open311).
PUBLIC_PREFIXES = ("/app/", "/open311/")
# Handlers that authenticate themselves: browsers cannot set headers on a WebSocket upgrade, so the live feed also
# accepts its token in the first message (sync_server/api/live.py).
SELF_AUTHENTICATED = frozenset({"/v1/live"})
# Browser pages authenticate with a session cookie of their own (sync_server/web/console), never a bearer token.
COOKIE_AUTHENTICATED_PREFIXES = ("/console",)
# Device sync endpoints speak the versioned protocol; every request carries the version header.
VERSIONED_PREFIXES = ("/v1/sync/",)
UPLOAD_PREFIX = "/v1/uploads"
TUS_RESUMABLE = "1.0.0"  # the tus version our uploads speak (sync_server/api/uploads.py)
OPEN311_PREFIX = "/open311/"


# Content codings aiohttp decodes before a handler reads the body (one coding, as aiohttp's parser takes it); br and zstd
# only with their optional libraries. Any other value would reach the handler as undecoded bytes.
DECODED_CODINGS = frozenset({"identity", "gzip", "deflate"} | ({"br"} if HAS_BROTLI else set())
                            | ({"zstd"} if HAS_ZSTD else set()))
ACCEPT_ENCODING = ", ".join(sorted(DECODED_CODINGS - {"identity"}))

# A sync answer slower than this is always logged, whatever access_log_sample says.
SLOW_SYNC_MS = 250.0
_RETRY_AFTER = (ErrorCode.RATE_LIMITED, ErrorCode.TOO_MANY_UPLOADS, ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.REQUEST_TIMEOUT)


def error_response(request: web.Request, err: ProtocolError, headers: dict[str, str] | None = None) -> web.Response:
    """The single error envelope, in the media type the client reads; under /open311/ the GeoReport error list
    instead (its clients parse `[{code, description}]` or `<errors>`, whoever refuses: a handler, the body limit, the
    router's 404/405 or the address rate limit)."""
    if request.path.startswith(OPEN311_PREFIX):
        fmt = open311_render.format_of_path(request.path)
        body = open311_render.error_body(fmt, open311_render.Open311Error(err.http_status, err.message))
        resp = web.Response(body=body, status=err.http_status, content_type=open311_render.MEDIA[fmt], charset="utf-8",
                            headers=headers)
    else:
        media = response_type(request)
        resp = web.Response(body=encode_error(err, media), status=err.http_status, content_type=media, headers=headers)
    if err.code in _RETRY_AFTER:
        resp.headers["Retry-After"] = str(err.details.get("retry_after", 1))
    if request.path.startswith(UPLOAD_PREFIX) and request.method != "OPTIONS":
        # tus 1.0.0: on every answer but OPTIONS, also the refusals made before the tus handler (token, role, method)
        resp.headers["Tus-Resumable"] = TUS_RESUMABLE
    if err.code is ErrorCode.REQUEST_TIMEOUT:
        resp.force_close()  # the rest of a stalled body must not be read as the next request
    return resp


@web.middleware
async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's cross-cutting work in ONE middleware: six aiohttp middlewares were six coroutines and partials per
    request, each looking the app's resources up again (~0.1 ms of server CPU per empty poll, measured). In order, from
    the outside in: latency metrics by route template and final status; the request id on every log line and one access
    line; the error envelope; the per-address limit (and the failed-login count); authentication and the protocol
    version; the per-device limit."""
    started = time.perf_counter()
    app = request.app
    route = route_label(request)
    route_token = REQUEST.set(RequestTag(route))  # pool timings are labelled with it; admission reads whether it was served
    rid = (request.headers.get("X-Request-Id") or f"{random.getrandbits(64):016x}")[:64]  # noqa: S311 - an id, not a secret
    fields = {"request_id": rid}  # authentication adds the principal: every later line of this request names its caller
    fields_token = REQUEST_FIELDS.set(fields)
    status = 500
    try:
        try:
            resp = await _guarded(request, handler, app, fields)
        except web.HTTPException as exc:
            resp = _mapped_http(request, exc)
        except ClientGone as exc:  # no one to answer; not the database's fault and not ours
            log.info("http.client_disconnected", error=str(exc))
            resp = error_response(request, ProtocolError(ErrorCode.MALFORMED_BODY, "connection closed mid-body"))
        except Exception as exc:  # noqa: BLE001 - outermost boundary of a request
            resp = _unexpected(request, exc)
        status = resp.status
        resp.headers["X-Request-Id"] = rid
        if not resp.prepared:  # streamed and websocket responses have sent their headers already
            resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        REQUEST.reset(route_token)
        _access_line(request, app, status, round(elapsed * 1000, 2))
        REQUEST_FIELDS.reset(fields_token)
        if route not in UNTIMED_ROUTES:
            app[METRICS].observe_request(request.method, route, status, elapsed)


async def _guarded(request: web.Request, handler: Handler, app: web.Application,
                   fields: dict[str, str]) -> web.StreamResponse:
    """The limits and authentication around the handler; a ProtocolError it raises is answered with the envelope."""
    try:
        settings = app[SETTINGS]
        limited = limits.limited_address(request, settings)  # None: exempt (loopback unless configured)
        if limited is not None and settings.rate_limit_address_per_minute and request.path not in limits.EXEMPT_PATHS:
            await limits.check(request, "address", limited, settings.rate_limit_address_per_minute)
        try:
            who = await _authenticate(request, app)
            if who is not None:
                request[PRINCIPAL] = who
                fields["principal"] = who.name
                if who.device_id is not None and settings.rate_limit_device_per_minute and limited is not None:
                    await limits.check(request, "device", who.device_id, settings.rate_limit_device_per_minute)
            coding = request.headers.get(hdrs.CONTENT_ENCODING)
            if coding is not None and coding.strip().lower() not in DECODED_CODINGS:
                return _unsupported_coding(request, coding)
            return await handler(request)
        except ProtocolError as err:
            if err.code in limits.AUTH_FAILURES and PRINCIPAL not in request:
                app[METRICS].auth_failures.labels(code=err.code.value).inc()
            raise
    except ProtocolError as err:
        return error_response(request, err)


def _unsupported_coding(request: web.Request, coding: str) -> web.Response:
    """RFC 9110 §8.4.1: a body in a coding the server cannot decode is refused with 415 and Accept-Encoding naming
    those it can, before the handler reads it (it would read the coded bytes as the body)."""
    err = ProtocolError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"Content-Encoding {coding[:40]!r} is not supported; use one of: {ACCEPT_ENCODING} (or none)",
                        {"field": "Content-Encoding"})
    return error_response(request, err, {"Accept-Encoding": ACCEPT_ENCODING})


def _mapped_http(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """aiohttp's own refusals (no route, wrong method, body too large) in the protocol envelope; any other HTTP
    exception (a redirect, say) is raised on for aiohttp to send."""
    if isinstance(exc, web.HTTPNotFound):
        return error_response(request, ProtocolError(ErrorCode.NOT_FOUND, "no such resource"))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))  # RFC 9110 §15.5.6: a 405 carries Allow
        return error_response(request, ProtocolError(ErrorCode.METHOD_NOT_ALLOWED, "method not allowed",
                                                     {"allowed": sorted(exc.allowed_methods)}), {"Allow": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(request, ProtocolError(ErrorCode.BODY_TOO_LARGE, "body too large"))
    raise exc


def _unexpected(request: web.Request, exc: Exception) -> web.Response:
    """Map a failure nothing inside handled: storage failures by class and cause (sync_server/storage/errors.py: a
    connection lost inside a transaction surfaces as the InterfaceError asyncpg raises while rolling back, with the
    real cause in its chain); a client reset is re-raised (nobody to answer); anything else is a logged 500."""
    cause = database_unavailable_cause(exc)
    if cause is not None:
        log.warning("http.database_unavailable", error=type(cause).__name__, detail=str(cause)[:200])
        return error_response(request, ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "database unavailable, retry",
                                                     {"retry_after": 2}))
    if isinstance(exc, ConnectionError):  # the client reset the socket while we wrote or read: nothing to map
        log.info("http.client_disconnected", error=type(exc).__name__)
        raise exc
    log.exception("http.unhandled")
    return error_response(request, ProtocolError(ErrorCode.INTERNAL_ERROR, "internal error"))


def _access_line(request: web.Request, app: web.Application, status: int, ms: float) -> None:
    """One access line per request; successful device sync requests only one in access_log_sample: a structlog line
    costs about as much server CPU as the empty poll it describes."""
    sample = app[SETTINGS].access_log_sample
    if (sample == 1 or status >= 300 or ms >= SLOW_SYNC_MS or request.method != "POST"
            or not request.path.startswith(VERSIONED_PREFIXES)):
        log.info("http.request", method=request.method, path=request.path, status=status, ms=ms)
    elif random.random() * sample < 1.0:  # noqa: S311 - sampling, not security
        log.info("http.request", method=request.method, path=request.path, status=status, ms=ms, sampled=sample)


def authorization(request: web.Request) -> str | None:
    """The one Authorization header; two are refused: a proxy or log that reads the other one would disagree with us
    on who is asking (RFC 9110 defines Authorization as a single value)."""
    values = request.headers.getall("Authorization", ())
    if len(values) > 1:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "more than one Authorization header")
    return values[0] if values else None


async def _login(request: web.Request, header: str | None) -> Principal:
    """One login query; a device's contact is queued for auth.touch_loop, written off the request."""
    async with request.app[POOL].acquire() as conn:
        who = await authenticate(conn, header)
    if who.role is Role.DEVICE and who.device_id is not None:
        request.app[TOUCHED].seen(who.device_id, time.monotonic())
    return who


async def cached_principal(request: web.Request, header: str | None, *, any_role: bool) -> Principal:
    """A phone's requests and reconnects answered from the revoke-invalidated login cache instead of a query each;
    `any_role=False` caches and trusts device principals only (staff revocations send no NOTIFY)."""
    cache = request.app[AUTH_CACHE]
    who = cache.get(header, time.monotonic())
    if who is not None and (any_role or who.role is Role.DEVICE):
        return who
    mark = cache.mark()
    who = await _login(request, header)
    if any_role or who.role is Role.DEVICE:
        cache.put(header, who, time.monotonic(), mark)
    return who


async def _authenticate(request: web.Request, app: web.Application) -> Principal | None:
    """The caller of every non-public request, before any handler runs (None: a public path, or no such route or
    method, which is 404/405 for anyone: a 401 would suggest a token could open it); device sync also checks the
    protocol version, after the credentials (a request without a token is a 401 whatever else is wrong with it)."""
    if request.match_info.http_exception is not None:
        return None
    path = request.path
    if path.startswith(COOKIE_AUTHENTICATED_PREFIXES):
        return None
    if (path in PUBLIC_PATHS or path in SELF_AUTHENTICATED or path.startswith(PUBLIC_PREFIXES)
            or (request.method == "OPTIONS" and path.startswith(UPLOAD_PREFIX))):
        return None
    header = authorization(request)
    # sync and photo uploads are the fleet's hot paths: no query per request for a device (the cache is invalidated by
    # NOTIFY on every revoke/rotate/move of a device; staff credentials have no such trigger, so uploads cache devices only)
    if path.startswith(VERSIONED_PREFIXES):
        who = app[AUTH_CACHE].get(header, time.monotonic())  # the hit, without a coroutine of its own
        if who is None:
            who = await cached_principal(request, header, any_role=True)
        versions = request.headers.getall(VERSION_HEADER, ())
        # two version headers: a proxy or log reading the other one would disagree with us on what the client speaks
        check_version(versions[0] if len(versions) == 1 else None)
        return who
    if path.startswith(UPLOAD_PREFIX):
        return await cached_principal(request, header, any_role=False)
    return await _login(request, header)

"""GeoReport v2 over HTTP at /open311/v2/: decode, check the jurisdiction, call the use case, render JSON or XML.

These routes are public (citizen apps carry no FieldSync token); POST requests takes an api_key instead. Every
refusal is the spec's error body in the format the path asked for, never FieldSync's own envelope.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web
from multidict import MultiMapping

from sync_server.api.http import read_body
from sync_server.api.params import query_is_utf8, text_ok
from sync_server.api.registry import route
from sync_server.keys import POOL, SETTINGS
from sync_server.open311 import service
from sync_server.open311.params import check_text, posted_request, request_query
from sync_server.open311.render import FORMATS, JSON, MEDIA, XML, Open311Error, error_body, format_of_path, render

log = structlog.get_logger(__name__)
PREFIX = "/open311"
V2 = PREFIX + "/v2"
_FMT = "{fmt}"
Handler = Callable[[web.Request, str], Awaitable[web.Response]]


def _fmt_of(request: web.Request) -> str:
    """The format named by the path's extension; anything else answers in XML, the spec's mandatory format."""
    fmt = request.match_info.get("fmt", "")
    if fmt in FORMATS:
        return fmt
    return format_of_path(request.path)


def answer(fmt: str, body: bytes, status: int = 200) -> web.Response:
    """A GeoReport body with its media type."""
    return web.Response(body=body, status=status, content_type=MEDIA[fmt], charset="utf-8")


def endpoint(fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a handler: jurisdiction check first, then the spec's error body for every Open311Error."""

    async def wrapped(request: web.Request) -> web.Response:
        fmt = _fmt_of(request)
        try:
            if request.match_info.get("fmt") not in FORMATS:
                raise Open311Error(404, "no such format: Open311 paths end in .json or .xml")
            if not all(text_ok(v) for v in request.match_info.values()):  # NUL or a lone surrogate names nothing
                raise Open311Error(404, "no such resource: the path holds a NUL or an invalid character")
            if not query_is_utf8(request):
                raise Open311Error(400, "a query parameter is not UTF-8")
            check_text({k: request.query.getall(k) for k in request.query})
            check_jurisdiction(request, request.query)
            return await fn(request, fmt)
        except Open311Error as err:
            log.info("open311.refused", status=err.status, description=err.description)
            resp = answer(fmt, error_body(fmt, err), err.status)
            if err.retry_after is not None:
                resp.headers["Retry-After"] = str(err.retry_after)
            return resp

    wrapped.__doc__ = fn.__doc__
    return wrapped


def check_jurisdiction(request: web.Request, fields: MultiMapping[str] | dict[str, list[str]]) -> None:
    """The configured jurisdiction only: another one is a 404, a missing one a 400 when the setting requires it."""
    s = request.app[SETTINGS]
    given = fields.get("jurisdiction_id")
    if isinstance(given, list):
        given = given[0] if given else None
    if given is None or given == "":
        if s.open311_jurisdiction_required:
            raise Open311Error(400, "jurisdiction_id is required")
        return
    if given != s.open311_jurisdiction_id:
        raise Open311Error(404, f"jurisdiction_id {given} not found")


def base_url(request: web.Request) -> str:
    """The URL residents reach this server at, for photo links."""
    public = request.app[SETTINGS].public_url
    return public.rstrip("/") if public else str(request.url.origin())


def _single(query: MultiMapping[str]) -> dict[str, str]:
    """Query parameters, each at most once (a repeated one would be guessed at otherwise)."""
    out: dict[str, str] = {}
    for k in query:
        values = query.getall(k)
        if len(values) > 1:
            raise Open311Error(400, f"{k} was given more than once")
        out[k] = values[0]
    return out


@endpoint
async def get_services(request: web.Request, fmt: str) -> web.Response:
    """GET services.{fmt}."""
    return answer(fmt, render(fmt, "services", "service", await service.list_services(request.app[POOL])))


@endpoint
async def get_service(request: web.Request, fmt: str) -> web.Response:
    """GET services/{service_code}.{fmt}."""
    rec = await service.service_definition(request.app[POOL], request.match_info["code"])
    return answer(fmt, render(fmt, "service_definition", None, rec))


@endpoint
async def get_requests(request: web.Request, fmt: str) -> web.Response:
    """GET requests.{fmt}."""
    q = request_query(_single(request.query), datetime.now(timezone.utc))
    recs = await service.list_requests(request.app[POOL], q, base_url(request))
    return answer(fmt, render(fmt, "service_requests", "request", recs))


@endpoint
async def get_request(request: web.Request, fmt: str) -> web.Response:
    """GET requests/{id}.{fmt}: a list of one, as the spec shows."""
    extra = _single(request.query)
    unknown = sorted(set(extra) - {"jurisdiction_id", "extensions"})
    if unknown:
        raise Open311Error(400, f"unknown parameter {unknown[0]}")
    q = request_query({**extra, "service_request_id": request.match_info["id"]}, datetime.now(timezone.utc))
    recs = await service.list_requests(request.app[POOL], q, base_url(request))
    if not recs:
        raise Open311Error(404, f"service_request_id {request.match_info['id']} not found")
    return answer(fmt, render(fmt, "service_requests", "request", recs))


@endpoint
async def get_token(request: web.Request, fmt: str) -> web.Response:
    """GET tokens/{token}.{fmt}."""
    recs = await service.token_lookup(request.app[POOL], request.match_info["token"])
    return answer(fmt, render(fmt, "service_requests", "request", recs))


async def _post_fields(request: web.Request) -> dict[str, list[str]]:
    """The body as the spec sends it (form-urlencoded) or as JSON (an object of strings or string lists)."""
    raw = await read_body(request, request.app[SETTINGS].max_body_bytes)
    ctype = request.content_type
    if ctype == "application/x-www-form-urlencoded":
        try:
            # errors="strict": a percent-escape that is not UTF-8 is refused, not stored as U+FFFD (the spec: UTF-8)
            return parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=200,
                            errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise Open311Error(400, "body is not valid UTF-8 form-urlencoded data") from None
    if ctype == "application/json":
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise Open311Error(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise Open311Error(400, "a JSON body must be an object of fields")
        out: dict[str, list[str]] = {}
        for k, v in data.items():
            values = v if isinstance(v, list) else [v]
            if any(isinstance(x, (dict, list, bool)) or x is None for x in values):
                raise Open311Error(400, f"{k} must be a string or number")
            out[k] = [str(x) for x in values]
        return out
    raise Open311Error(400, "POST requests takes application/x-www-form-urlencoded (or application/json)")


@endpoint
async def post_request(request: web.Request, fmt: str) -> web.Response:
    """POST requests.{fmt}: one ticket, routed by the dispatch rules; the answer carries its service_request_id."""
    fields = await _post_fields(request)
    check_text(fields)
    check_jurisdiction(request, fields)
    post = posted_request(fields)  # validate before counting a use against the key's rate limit
    keys = fields.get("api_key") or request.query.getall("api_key", [])
    key = await service.check_api_key(request.app[POOL], keys[0] if keys else None)
    created = await service.submit(request.app[POOL], key, post, request.app[SETTINGS].open311_sr_format)
    log.info("open311.created", service_request_id=created.service_request_id, key=key.name, crew=created.crew)
    # Every service is `realtime`: the spec says a token "should not be returned if service_request_id is returned"
    recs = [{"service_request_id": created.service_request_id, "service_notice": None, "account_id": None}]
    return answer(fmt, render(fmt, "service_requests", "request", recs), 201)


async def discovery(request: web.Request) -> web.Response:
    """GET /open311/discovery.{fmt}: where the v2 endpoint is and which formats it speaks."""
    fmt = request.match_info["fmt"]
    if fmt not in FORMATS:
        return answer(XML, error_body(XML, Open311Error(404, "no such format: discovery.json or discovery.xml")), 404)
    base = base_url(request)
    s = request.app[SETTINGS]
    doc: dict[str, Any] = {
        "changeset": "2026-01-01T00:00:00Z",
        "contact": s.open311_contact,
        "key_service": s.open311_key_service,
        "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2", "url": base + V2,
                       "changeset": "2026-01-01T00:00:00Z", "type": "production",
                       "formats": [MEDIA[XML], MEDIA[JSON]]}],
    }
    if fmt == JSON:
        return answer(fmt, render(fmt, "discovery", None, doc))
    # XML nests repeated elements under their list: <endpoints><endpoint>…<formats><format>…
    ep = dict(doc["endpoints"][0])
    xml_doc = {**doc, "endpoints": {"endpoint": {**ep, "formats": {"format": ep["formats"]}}}}
    return answer(fmt, _discovery_xml(xml_doc))


def _discovery_xml(doc: dict[str, Any]) -> bytes:
    """Discovery in XML, where `formats` repeats a <format> element per media type."""
    import xml.etree.ElementTree as ET

    top = ET.Element("discovery")
    for k in ("changeset", "contact", "key_service"):
        ET.SubElement(top, k).text = doc[k]
    eps = ET.SubElement(top, "endpoints")
    ep = ET.SubElement(eps, "endpoint")
    e = doc["endpoints"]["endpoint"]
    for k in ("specification", "url", "changeset", "type"):
        ET.SubElement(ep, k).text = e[k]
    formats = ET.SubElement(ep, "formats")
    for f in e["formats"]["format"]:
        ET.SubElement(formats, "format").text = f
    body: bytes = ET.tostring(top, encoding="utf-8", xml_declaration=True)
    return body


def setup(app: web.Application) -> None:
    """Register the GeoReport v2 routes (documented in docs/open311.md, not in /openapi.json: the spec is theirs)."""
    from sync_server.open311 import media

    t = ("open311",)
    doc = " (GeoReport v2, public; docs/open311.md)"
    # Every GeoReport route answers bad path parameters itself, in the spec's error body (endpoint() above)
    spec: dict[str, Any] = {"roles": (), "tags": t, "own_path_errors": True}
    route(app, "GET", f"{PREFIX}/discovery.{_FMT}", discovery, summary="Open311 discovery document" + doc, **spec)
    route(app, "GET", f"{V2}/services.{_FMT}", get_services, summary="Open311 service list" + doc, **spec)
    route(app, "GET", f"{V2}/services/{{code}}.{_FMT}", get_service, summary="Open311 service definition" + doc, **spec)
    route(app, "GET", f"{V2}/requests.{_FMT}", get_requests, summary="Open311 service requests" + doc, **spec)
    route(app, "POST", f"{V2}/requests.{_FMT}", post_request,
          summary="Create an Open311 service request (form-urlencoded or JSON, api_key required)" + doc, status=201, **spec)
    route(app, "GET", f"{V2}/requests/{{id}}.{_FMT}", get_request, summary="One Open311 service request" + doc, **spec)
    route(app, "GET", f"{V2}/tokens/{{token}}.{_FMT}", get_token, summary="Open311 token lookup" + doc, **spec)
    route(app, "GET", V2 + "/media/{sha256}.jpg", media.after_photo,
          summary="Display derivative of an after-photo (extensions=true links here)" + doc, roles=(), tags=t)

"""Routes registered with their models, so the OpenAPI document is generated from the same code that serves them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.web_urldispatcher import _default_expect_handler
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from protocol import ErrorCode, ErrorEnvelope, ProtocolError, PushRequest
from protocol.version import MIN_SUPPORTED_VERSION, PROTOCOL_VERSION, VERSION_HEADER
from protocol.codec import negotiate
from sync_server.api import openapi_docs
from sync_server.api.params import PATH, QUERY, default_path_model, parse_path, parse_query, query_is_utf8
from sync_server.api.middleware import UPLOAD_PREFIX, error_response
from sync_server.keys import PRINCIPAL, SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTES = web.AppKey("fieldsync.routes", list)
DOCUMENTED: tuple[type[BaseModel], ...] = (PushRequest,)
PUSH_PATH = "/v1/sync/push"  # the one route whose bodies may reach max_push_bytes


@dataclass(frozen=True)
class RouteDoc:
    """What OpenAPI needs to know about one endpoint."""

    method: str
    path: str
    summary: str
    roles: tuple[str, ...]
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_model: type[BaseModel] | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    extra_responses: dict[int, str] = field(default_factory=dict)


def route(
    app: web.Application, method: str, path: str, handler: Handler, *, summary: str, roles: tuple[str, ...],
    request: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None, status: int = 200, tags: tuple[str, ...] = (),
    path_model: type[BaseModel] | None = None, own_path_errors: bool = False,
) -> None:
    """Register a handler and its documentation in one call, so neither can exist without the other.

    The registered handler first negotiates the answer's encoding (routes answering a wire model: a 406 before any
    effect, issue 10.11) and validates path and query parameters through their models (issue 10.12).
    """
    names = _path_params(path)
    if path_model is None and names:
        path_model = default_path_model(path, names)
    # own_path_errors: the handler answers bad path parameters in its own protocol's error format (Open311), so they
    # are documented by the model but not refused here with FieldSync's envelope
    checked = None if own_path_errors else path_model
    typed = _typed(handler, roles, response is not None, checked, query)
    if method.upper() == "GET":  # RFC 9110 §9.1: HEAD wherever GET (the same handler; aiohttp sends no body)
        app.router.add_get(path, typed)
    else:
        app.router.add_route(method, path, typed, expect_handler=_expect_continue)
    if ROUTES not in app:
        app[ROUTES] = []
    # documented by its canonical form ({id}, as aiohttp's resource.canonical): a segment's regex is a routing detail
    app[ROUTES].append(RouteDoc(method.upper(), _oa_path(path), summary, roles, request, response, query, path_model, status, tags))


def _typed(handler: Handler, roles: tuple[str, ...], negotiates: bool, path_model: type[BaseModel] | None,
           query: type[BaseModel] | None) -> Handler:
    """Wrap a handler with the checks every route shares, so no handler can forget one: role (403 before any
    parameter is looked at, so a caller learns nothing about ids it may not use), encoding, parameters."""

    async def typed(request: web.Request) -> web.StreamResponse:
        who = request.get(PRINCIPAL)
        if roles and who is not None and who.role.value not in roles:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this endpoint is not available to your role")
        if negotiates:
            negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"))
        if path_model is not None:
            request[PATH] = parse_path(request.match_info, path_model)
        if query is not None:
            request[QUERY] = parse_query(request.query, query, utf8=query_is_utf8(request))
        return await handler(request)

    typed.__name__ = getattr(handler, "__name__", "handler")
    typed.__doc__ = handler.__doc__
    return typed


async def _expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` (RFC 9110 §10.1.1): a declared body the route would refuse as too large gets its 413 at
    once, instead of a 100 Continue that makes the client send every byte first; otherwise aiohttp's own handling.
    tus PATCH bodies are bounded by their upload's length, not by these limits."""
    settings = request.app[SETTINGS]
    limit = settings.max_push_bytes if request.path == PUSH_PATH else settings.max_body_bytes
    if (request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
            and request.content_length is not None and request.content_length > limit
            and not request.path.startswith(UPLOAD_PREFIX)):
        resp = error_response(request, ProtocolError(ErrorCode.BODY_TOO_LARGE, f"body exceeds {limit} bytes",
                                                     {"limit": limit}))
        resp.force_close()  # the body was never asked for: nothing of it may be read as the next request
        return resp
    await _default_expect_handler(request)
    return None


def openapi(app: web.Application, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 built from the registered routes and their pydantic models (JSON Schema 2020-12 is native to 3.1)."""
    docs: list[RouteDoc] = app.get(ROUTES, [])
    models: set[type[BaseModel]] = {ErrorEnvelope}
    for d in docs:
        models.update(m for m in (d.request, d.response) if m is not None)
    models.update(DOCUMENTED)  # described for clients though no route decodes them whole (the push mutations)
    ordered = sorted(models, key=lambda m: m.__name__)
    keyed, defs = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas = {**defs.get("$defs", {}), **openapi_docs.COMPONENTS}
    paths: dict[str, dict[str, Any]] = {}
    for d in docs:
        op: dict[str, Any] = {
            "summary": d.summary,
            "operationId": f"{d.method.lower()}_{d.path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "tags": list(d.tags),
            "description": "Roles: " + ", ".join(d.roles) if d.roles else "Public.",
            "responses": {
                "default": {"description": "Error envelope", "content": _content({"$ref": "#/components/schemas/ErrorEnvelope"})},
            },
        }
        if d.roles:
            op["security"] = [{"bearer": []}]
        params: list[dict[str, Any]] = []
        if d.path_model is not None:
            ps = d.path_model.model_json_schema()
            for name in _path_params(d.path):
                sch = {k: v for k, v in ps["properties"][name].items() if k != "title"}
                params.append({"name": name, "in": "path", "required": True, "schema": sch})
        if d.path.startswith("/v1/sync/"):  # the versioned device protocol (sync_server/api/middleware.py)
            params.append({"name": VERSION_HEADER, "in": "header", "required": True,
                           "description": "Protocol version the client speaks (protocol/SPEC.md §4).",
                           "schema": {"type": "integer", "minimum": MIN_SUPPORTED_VERSION, "maximum": PROTOCOL_VERSION}})
        if d.query is not None:
            qs = d.query.model_json_schema()
            for name, sch in qs.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in qs.get("required", []), "schema": sch})
        if params:
            op["parameters"] = params
        if d.request is not None:
            op["requestBody"] = {"required": True, "content": _content({"$ref": f"#/components/schemas/{d.request.__name__}"})}
        ok: dict[str, Any] = {"description": "OK"}
        if d.response is not None:
            ok["content"] = _content({"$ref": f"#/components/schemas/{d.response.__name__}"})
        op["responses"][str(d.status)] = ok
        for code, why in _refusals(d).items():
            op["responses"].setdefault(str(code), {"description": why, "content": _content(_ENVELOPE)})
        openapi_docs.refine(d.method, d.path, op, str(d.status))  # tus, Open311 and the shared rate limit
        paths.setdefault(_oa_path(d.path), {})[d.method.lower()] = op
    del keyed
    return {
        "openapi": "3.1.0",
        "info": {"title": "FieldSync", "version": version,
                 "description": "Offline-first delta-sync backend for 311 field crews. Device protocol: protocol/SPEC.md."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _refusals(d: RouteDoc) -> dict[int, str]:
    """The typed refusals a route can answer, documented so generated clients and conformance tools expect them;
    business rules (an unknown crew, a cursor from elsewhere) are among them, with `error.code` saying which."""
    out: dict[int, str] = {}
    if d.roles:
        out[401] = "unauthorized / token_revoked: missing, invalid or revoked token"
        out[403] = "forbidden: the caller's role may not use this endpoint"
    if d.path_model is not None:
        out[404] = "not_found: no such resource in the caller's scope (a malformed id included)"
    if d.request is not None or d.query is not None or d.path.startswith("/v1/sync/"):
        out[400] = "malformed_body, cursor_invalid, protocol_version_invalid, unsupported_version"
        out[422] = "validation_failed: the request breaks the schema or a business rule (e.g. an unknown crew); " \
                   "`details` says which field"
    if d.request is not None:
        out[406] = "not_acceptable: Accept names no type the server produces (checked before any effect)"
        out[408] = "request_timeout: the body did not arrive in time"
        out[413] = "body_too_large / too_many_mutations"
        out[415] = "unsupported_media_type: not msgpack/JSON, or a charset other than UTF-8"
    if d.method in ("POST", "PATCH", "DELETE") and d.roles:
        out[409] = "conflict, illegal_transition, seq_gap, reset_required: refused by the current state"
    out[503] = "service_unavailable: database unavailable or server at capacity; retry after Retry-After"
    return out


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}, "application/msgpack": {"schema": schema}}


# also inside a segment (services.{fmt}); a regex may hold one level of braces itself ({id:[0-9a-f-]{36}})
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(?:[^{}]|\{[^{}]*\})*)?\}")


def _path_params(path: str) -> list[str]:
    return _PARAM.findall(path)


def _oa_path(path: str) -> str:
    """aiohttp's `{name:regex}` becomes OpenAPI's `{name}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)

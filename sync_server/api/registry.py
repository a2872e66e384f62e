"""Routes registered with their models, so the OpenAPI document is generated from the same code that serves them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from protocol import ErrorEnvelope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTES = web.AppKey("fieldsync.routes", list)


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
    status: int = 200
    tags: tuple[str, ...] = ()
    extra_responses: dict[int, str] = field(default_factory=dict)


def route(
    app: web.Application, method: str, path: str, handler: Handler, *, summary: str, roles: tuple[str, ...],
    request: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None, status: int = 200, tags: tuple[str, ...] = (),
) -> None:
    """Register a handler and its documentation in one call, so neither can exist without the other."""
    app.router.add_route(method, path, handler)
    if ROUTES not in app:
        app[ROUTES] = []
    app[ROUTES].append(RouteDoc(method.upper(), path, summary, roles, request, response, query, status, tags))


def openapi(app: web.Application, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 built from the registered routes and their pydantic models (JSON Schema 2020-12 is native to 3.1)."""
    docs: list[RouteDoc] = app.get(ROUTES, [])
    models: set[type[BaseModel]] = {ErrorEnvelope}
    for d in docs:
        models.update(m for m in (d.request, d.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    keyed, defs = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas = dict(defs.get("$defs", {}))
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
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in _path_params(d.path)]
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
        paths.setdefault(_oa_path(d.path), {})[d.method.lower()] = op
    del keyed
    return {
        "openapi": "3.1.0",
        "info": {"title": "FieldSync", "version": version,
                 "description": "Offline-first delta-sync backend for 311 field crews. Device protocol: protocol/SPEC.md."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}, "application/msgpack": {"schema": schema}}


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")  # also inside a segment: services.{fmt}


def _path_params(path: str) -> list[str]:
    return _PARAM.findall(path)


def _oa_path(path: str) -> str:
    """aiohttp's `{name:regex}` becomes OpenAPI's `{name}`."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)

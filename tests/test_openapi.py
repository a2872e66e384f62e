"""The served /openapi.json is valid OpenAPI 3.1, lists every registered route, and every $ref resolves to a component."""

from __future__ import annotations

import re
from typing import Any, get_args

import aiohttp
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from protocol import TicketStatus
from sync_server.api.registry import ROUTES
from sync_server.api.schemas import StatusName
from tests.conftest import Server


async def fetch_doc(server: Server) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/openapi.json") as r:
            assert r.status == 200
            doc: dict[str, Any] = await r.json()
            return doc


def refs(node: Any) -> list[str]:
    """Every $ref in the document, iteratively (no recursion limit on deep schemas)."""
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if isinstance(n.get("$ref"), str):
                out.append(n["$ref"])
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return out


def oa_path(path: str) -> str:
    """aiohttp's `{name:regex}` (a whole segment, or inside one as in services.{fmt}) as OpenAPI's `{name}`."""
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}", lambda m: "{" + m.group(1) + "}", path)


async def test_document_is_valid_openapi_31(server: Server) -> None:
    doc = await fetch_doc(server)
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)  # raises on any violation


async def test_every_registered_route_is_described(server: Server) -> None:
    doc = await fetch_doc(server)
    routes = server.app[ROUTES]
    assert len(routes) >= 18
    for d in routes:
        op = doc["paths"].get(oa_path(d.path), {}).get(d.method.lower())
        assert op is not None, f"{d.method} {d.path} missing from /openapi.json"
        assert op["summary"] == d.summary
        assert ("security" in op) == bool(d.roles)
        for role in d.roles:
            assert role in op["description"]
        if d.request is not None:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{d.request.__name__}"}
            assert set(op["requestBody"]["content"]) == {"application/json", "application/msgpack"}
        if d.response is not None:
            schema = op["responses"][str(d.status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{d.response.__name__}"}
        if d.query is not None:
            names = {p["name"] for p in op["parameters"] if p["in"] == "query"}
            assert names == set(d.query.model_fields)
        default = op["responses"]["default"]
        if d.method == "HEAD":  # a HEAD answer has no body
            assert "content" not in default
        elif d.path.endswith(".jpg"):  # GeoReport's error list, in XML (the path names no .json)
            assert default["content"] == {"text/xml": {"schema": {"type": "string"}}}
        elif d.path.startswith("/open311/"):  # GeoReport's own error list first
            assert default["content"]["application/json"]["schema"] == {"anyOf": [
                {"$ref": "#/components/schemas/Open311Errors"}, {"$ref": "#/components/schemas/ErrorEnvelope"}]}
        else:
            assert default["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}


async def test_every_reference_resolves(server: Server) -> None:
    doc = await fetch_doc(server)
    schemas = doc["components"]["schemas"]
    found = refs(doc)
    assert len(found) > 40
    dangling = sorted({r for r in found if not (r.startswith("#/components/schemas/") and r.rsplit("/", 1)[1] in schemas)})
    assert dangling == []
    # the supervisor API's own models are all components, with forbidden extra fields documented
    for name in ("CreateTicketRequest", "TicketPage", "TicketDetail", "BulkAssignRequest", "BulkResult",
                 "PatchTicketRequest", "DeviceList", "EnrolledDevice", "CreateUserRequest", "Ticket", "AuditEntry"):
        assert name in schemas, name
    assert schemas["CreateTicketRequest"]["additionalProperties"] is False
    assert set(schemas["CreateTicketRequest"]["required"]) == {"service_type", "address"}
    status = next(p for p in doc["paths"]["/v1/tickets"]["get"]["parameters"] if p["name"] == "status")
    assert set(status["schema"]["anyOf"][0]["items"]["enum"]) == {s.value for s in TicketStatus}
    assert set(get_args(StatusName)) == {s.value for s in TicketStatus}

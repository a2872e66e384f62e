"""What /openapi.json says about the routes that do not speak FieldSync's own msgpack/JSON models: tus uploads (headers,
offset bodies, tus statuses) and Open311 GeoReport v2 (XML or JSON by path, the spec's error array), plus the limits
every route shares, so generated clients and conformance tools expect exactly what the server answers."""

from __future__ import annotations

from typing import Any

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
OPEN311_ERRORS = {"$ref": "#/components/schemas/Open311Errors"}
# Probes are exempt from the per-address limit (sync_server/api/limits.py); every other route may answer 429.
UNLIMITED = frozenset({"/healthz", "/readyz"})

COMPONENTS: dict[str, Any] = {
    "Open311Errors": {
        "type": "array", "minItems": 1,
        "description": "GeoReport v2 error list (XML: <errors><error><code/><description/></error></errors>).",
        "items": {"type": "object", "required": ["code", "description"],
                  "properties": {"code": {"type": "integer"}, "description": {"type": "string"}}},
    },
}

# tus statuses beyond the generic refusals, by method (sync_server/api/uploads.py, protocol/errors.py)
_TUS_REFUSALS: dict[str, dict[int, str]] = {
    "POST": {412: "unsupported_version: Tus-Resumable missing or not 1.0.0",
             413: "upload_too_large: Upload-Length above Tus-Max-Size",
             415: "unsupported_media_type: the declared photo type is not accepted",
             422: "validation_failed: Upload-Length or Upload-Metadata malformed, or the ticket is not in scope",
             429: "too_many_uploads / rate_limited: retry after Retry-After"},
    "HEAD": {410: "upload_expired", 412: "unsupported_version: Tus-Resumable missing or not 1.0.0"},
    "PATCH": {400: "checksum_unsupported: Upload-Checksum algorithm not sha1/sha256, or its digest malformed",
              405: "method_not_allowed: POST without X-HTTP-Method-Override",
              409: "upload_offset_mismatch (Upload-Offset says where to resume) / upload_busy (Retry-After)",
              410: "upload_expired", 412: "unsupported_version: Tus-Resumable missing or not 1.0.0",
              413: "upload_too_large: the body runs past Upload-Length",
              415: "unsupported_media_type: not application/offset+octet-stream",
              422: "validation_failed: Upload-Offset malformed",
              460: "checksum_mismatch: the bytes do not hash to Upload-Checksum or the declared sha256"},
    "DELETE": {410: "upload_expired", 412: "unsupported_version: Tus-Resumable missing or not 1.0.0"},
}


def _header(name: str, schema: dict[str, Any], required: bool = True, description: str = "") -> dict[str, Any]:
    out = {"name": name, "in": "header", "required": required, "schema": schema}
    if description:
        out["description"] = description
    return out


def tus_headers(method: str, path: str) -> list[dict[str, Any]]:
    """The tus request headers each upload method needs (tus 1.0.0 core, creation, checksum extensions)."""
    digits = {"type": "string", "pattern": "^[0-9]{1,15}$"}
    out = [_header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]})]
    if method == "POST" and path.endswith("{upload_id}"):  # the override tunnel: PATCH's headers, optional
        out += [_header("X-HTTP-Method-Override", {"type": "string", "enum": ["PATCH", "DELETE", "HEAD"]},
                        description="The method this POST stands for (tus 1.0.0 core)."),
                _header("Upload-Offset", digits, required=False, description="Required when overriding with PATCH."),
                _header("Upload-Checksum", {"type": "string"}, required=False)]
    elif method == "POST":
        out += [_header("Upload-Length", digits), _header("Upload-Metadata", {"type": "string", "maxLength": 4096})]
    elif method == "PATCH":
        out += [_header("Upload-Offset", digits), _header("Upload-Checksum", {"type": "string"}, required=False)]
    return out


def _tus(method: str, path: str, op: dict[str, Any]) -> None:
    """tus bodies, headers and statuses; the override POST answers whatever the method it stands for answers."""
    params = op.setdefault("parameters", [])
    params += tus_headers(method, path)
    kind = "PATCH" if method == "POST" and path.endswith("{upload_id}") else method
    if kind == "PATCH":  # not a requestBody: stock OpenAPI tools (schemathesis) cannot serialise offset+octet-stream
        op["description"] += " Body: the bytes at Upload-Offset, Content-Type application/offset+octet-stream."
    if method == "POST" and kind == "PATCH":
        op["responses"]["200"] = {"description": "HEAD through the override: Upload-Offset and Upload-Length"}
    for code, why in _TUS_REFUSALS.get(kind, {}).items():
        op["responses"].setdefault(str(code), {"description": why, "content": _json_msgpack(ENVELOPE)})


def _open311(method: str, path: str, op: dict[str, Any], ok: str) -> None:
    """GeoReport v2: the path's extension picks XML or JSON; every refusal is the spec's error list (its 400/403/404,
    and the 405/408/413/429/503 the middleware answers: api/middleware.error_response), in XML for the photo route."""
    for p in op.get("parameters", []):
        if p["in"] == "path" and p["name"] == "fmt":
            p["schema"] = {"type": "string", "enum": ["json", "xml"]}
    if path.endswith(".jpg"):
        op["responses"][ok]["content"] = {"image/jpeg": {"schema": {}}}
        for code in ("404", "429", "503", "default"):
            op["responses"][code] = {"description": op["responses"].get(code, {}).get("description", "Error list"),
                                     "content": {"text/xml": {"schema": {"type": "string"}}}}
        return
    op["responses"][ok]["content"] = {"application/json": {"schema": {"type": ["array", "object"]}},
                                      "text/xml": {"schema": {"type": "string"}}}
    errors = {"application/json": {"schema": {"anyOf": [OPEN311_ERRORS, ENVELOPE]}},
              "text/xml": {"schema": {"type": "string"}}}
    refusals = {"400": "bad input: the description names the field", "404": "unknown resource, format or jurisdiction",
                "429": "rate limited (Retry-After)", "503": "database unavailable", "default": "GeoReport error list"}
    if method == "POST":
        refusals["403"] = "missing, unknown or revoked api_key"
        op["requestBody"] = {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": _OPEN311_POST},
            "application/json": {"schema": _OPEN311_POST}}}
    for code, why in refusals.items():
        op["responses"][code] = {"description": why, "content": errors}
    names: tuple[str, ...] = ("jurisdiction_id",)
    if path.endswith("/requests.{fmt}"):
        names = _OPEN311_QUERY
    elif path.endswith("/requests/{id}.{fmt}"):
        names = ("jurisdiction_id", "extensions")
    if method == "GET":
        op.setdefault("parameters", []).extend(
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names)


_OPEN311_QUERY = ("jurisdiction_id", "service_request_id", "service_code", "start_date", "end_date", "status", "page",
                  "page_size", "extensions", "updated_after", "updated_before")
_OPEN311_POST: dict[str, Any] = {
    "type": "object", "required": ["api_key", "service_code"],
    "description": "GeoReport v2 POST fields; attribute[CODE] (or attribute[CODE][] for a multivaluelist) answers the "
                   "service definition. A location is one of lat+long, address_string or address_id.",
    "properties": {name: {"type": "string"} for name in (
        "api_key", "jurisdiction_id", "service_code", "lat", "long", "address_string", "address_id", "description",
        "media_url", "email", "device_id", "account_id", "first_name", "last_name", "phone")},
    "additionalProperties": {"type": ["string", "array"]},
}


def _json_msgpack(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}, "application/msgpack": {"schema": schema}}


_PROBE = {"type": "object", "required": ["status"],
          "properties": {"status": {"type": "string", "enum": ["ok", "ready", "unavailable"]}}}


def _probe(path: str, op: dict[str, Any], ok: str) -> None:
    """Probes answer a JSON status object whatever Accept says; readiness says why it is not ready in the same shape."""
    op["responses"][ok]["content"] = {"application/json": {"schema": _PROBE}}
    if path == "/readyz":
        op["responses"]["503"] = {"description": "not ready: database unreachable or schema not what this build expects",
                                  "content": {"application/json": {"schema": {"anyOf": [_PROBE, ENVELOPE]}}}}


def refine(method: str, path: str, op: dict[str, Any], ok: str) -> None:
    """Make one operation true to its route family; `ok` is its success status."""
    if path in UNLIMITED:
        _probe(path, op, ok)
    if path.startswith("/v1/uploads") and method != "OPTIONS":
        _tus(method, path, op)
    if path.startswith("/open311/"):
        _open311(method, path, op, ok)
    elif path not in UNLIMITED:
        op["responses"].setdefault("429", {"description": "rate_limited: retry after Retry-After",
                                           "content": _json_msgpack(ENVELOPE)})
    if method == "HEAD":  # a HEAD answer never has a body, whatever its status
        for resp in op["responses"].values():
            resp.pop("content", None)

"""Decode/encode helpers every handler uses, so content negotiation, body limits and errors behave the same everywhere."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgpack

from aiohttp import web
from pydantic import BaseModel

from protocol import ErrorCode, ProtocolError
from protocol.codec import JSON, MSGPACK, Limits, decode, encode, negotiate
from sync_server.auth import Principal, Role
from sync_server.keys import PRINCIPAL, SETTINGS

M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M], *, max_bytes: int | None = None) -> M:
    """Read at most max_bytes (refusing before buffering more) and decode into `model` or a typed 4xx."""
    limit = max_bytes or request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ProtocolError(ErrorCode.BODY_TOO_LARGE, f"body exceeds {limit} bytes", {"limit": limit})
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ProtocolError(ErrorCode.BODY_TOO_LARGE, f"body exceeds {limit} bytes", {"limit": limit})
    return decode(body, request.content_type if request.body_exists else JSON, model, Limits(max_body_bytes=limit))


def response_type(request: web.Request) -> str:
    """The media type this request's answer is written in (Accept first, else mirror the request)."""
    ctype = request.headers.get("Content-Type")
    try:
        return negotiate(request.headers.get("Accept"), ctype)
    except ProtocolError:
        return JSON


def respond(request: web.Request, model: BaseModel, status: int = 200) -> web.Response:
    """Encode a wire model in the negotiated media type."""
    media = negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"))
    return web.Response(body=encode(model, media), status=status, content_type=media)


def principal(request: web.Request, *roles: Role) -> Principal:
    """The authenticated caller, or 403 when its role may not use this endpoint."""
    who = request[PRINCIPAL]
    if who.role not in roles:
        raise ProtocolError(ErrorCode.FORBIDDEN, "this endpoint is not available to your role")
    return who


def respond_raw(request: web.Request, data: dict[str, Any], status: int = 200) -> web.Response:
    """Encode an already JSON-mode dict (documents rendered by storage) without re-validating it as models.

    Only for responses whose shape a wire model defines and whose tests decode them with that model.
    """
    media = negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"))
    body = msgpack.packb(data, use_bin_type=True) if media == MSGPACK else json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type=media)

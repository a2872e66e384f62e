"""Decode/encode helpers every handler uses, so content negotiation, body limits and errors behave the same everywhere."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

import msgpack

from aiohttp import ClientPayloadError, web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel

from protocol import ErrorCode, ProtocolError
from protocol.codec import JSON, MSGPACK, Limits, decode, encode, negotiate, parse_media_type
from sync_server.auth import Principal, Role
from sync_server.keys import PRINCIPAL, SETTINGS

M = TypeVar("M", bound=BaseModel)


class ClientGone(Exception):
    """The client closed or reset its connection mid-body: nobody is left to answer, and it is not our fault."""


def _too_large(limit: int) -> ProtocolError:
    return ProtocolError(ErrorCode.BODY_TOO_LARGE, f"body exceeds {limit} bytes", {"limit": limit})


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however the client segments it, refused as soon as it passes `limit` (never buffered past it)
    and cut off with 408 when it does not arrive within body_timeout_s (a slow client must not hold a worker)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    content = request.content
    if content.is_eof() and content.exception() is None:  # a small body arrives with its head: no timer, no wait
        body = content.read_nowait()
        if len(body) > limit:
            raise _too_large(limit)
        return body
    timeout = request.app[SETTINGS].body_timeout_s
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            # readany() waits for the next segment; read(n) would return only what happens to be buffered (issue 10.1).
            while chunk := await request.content.readany():
                if len(buf) + len(chunk) > limit:
                    raise _too_large(limit)
                buf += chunk
    except TimeoutError:
        raise ProtocolError(ErrorCode.REQUEST_TIMEOUT, f"body not received within {timeout:g} s",
                            {"timeout_s": timeout}) from None
    except (ConnectionError, ClientPayloadError) as exc:
        raise ClientGone(type(exc).__name__) from exc
    except RequestPayloadError:
        raise undecodable_body() from None
    return bytes(buf)


def undecodable_body() -> ProtocolError:
    """The body's framing or Content-Encoding (aiohttp decodes gzip, deflate, br) does not decode: the client's
    fault, answered like any malformed body instead of escaping as a 500."""
    return ProtocolError(ErrorCode.MALFORMED_BODY, "body does not decode (Content-Encoding or chunked framing)")


async def read_model(request: web.Request, model: type[M], *, max_bytes: int | None = None) -> M:
    """Negotiate the answer's encoding, read at most max_bytes and decode into `model`, or a typed 4xx — all before
    the handler has any effect, so a refused request changed nothing (issue 10.11)."""
    negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"))
    limit = max_bytes or request.app[SETTINGS].max_body_bytes
    # the raw header, not request.content_type: aiohttp strips the charset parameter, and SPEC refuses non-UTF-8
    ctype = request.headers.get("Content-Type") if request.body_exists else JSON
    parse_media_type(ctype)  # 415 before reading a body we would refuse anyway
    body = await read_body(request, limit)
    return decode(body, ctype, model, Limits(max_body_bytes=limit))


def response_type(request: web.Request) -> str:
    """The media type this request's answer is written in (Accept first, else mirror the request); when Accept names
    nothing we produce (the 406 itself), the request's own encoding, which its client can read, else JSON."""
    ctype = request.headers.get("Content-Type")
    try:
        return negotiate(request.headers.get("Accept"), ctype)
    except ProtocolError:
        return negotiate(None, ctype)


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

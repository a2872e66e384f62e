"""Device sync endpoints: thin handlers over the pull and push engines."""

from __future__ import annotations

from typing import Annotated, Any

import msgpack  # no stubs or py.typed upstream
from aiohttp import web
from pydantic import ConfigDict, Field, field_validator

from protocol import MAX_MUTATIONS, PullRequest, PullResponse, PushResponse, WireModel
from protocol.fields import MAX_INT
from protocol.codec import MSGPACK, negotiate
from sync_server.api.http import principal, read_model, respond_raw
from sync_server.api.splice import pull_body
from sync_server.api.registry import route
from sync_server.auth import Role
from sync_server.domain.document import RenderedDoc
from sync_server.engine import pull as pull_engine
from sync_server.engine import push as push_engine
from sync_server.keys import CODES, CURSORS, FIRST_PAGES, POOL, PUSHES, SETTINGS, WAKEUPS
from sync_server.metrics import METRICS


def _document_items(schema: dict[str, Any]) -> None:
    """What the server checks of each mutation before applying it; the rest is answered per mutation (I6)."""
    schema["properties"]["mutations"]["items"] = {
        "type": "object", "required": ["seq"], "additionalProperties": True,
        "properties": {"seq": {"type": "integer", "minimum": 1, "maximum": MAX_INT}},
        "description": "One mutation, validated on its own against the PushRequest mutation schemas: an unknown op, "
                       "a malformed field or bad args is answered in its result as `rejected` with a reason "
                       "(unknown_op, invalid_args...), never by refusing the push. "
                       "Seqs must be consecutive and ascending.",
    }


class PushEnvelope(WireModel):
    """The push body's outer shape; each mutation is validated on its own so one bad one cannot block the rest (I6)."""

    model_config = ConfigDict(json_schema_extra=_document_items)

    mutations: Annotated[list[dict[str, Any]], Field(
        min_length=1, max_length=MAX_MUTATIONS,
        description="Consecutive seqs, oldest first. Each item is {seq, op, ticket_id, args, base_version, device_time, "
                    "gps} as in protocol/SPEC.md §3 (ops: acknowledge, start, pause, resume, add_note, set_items, "
                    "set_resolution, attach_photo, complete, unable_to_complete, decline, self_report). The envelope is "
                    "deliberately open: an item with an unknown op, bad args or a supervisor-owned field is not a "
                    "request error but gets its own `rejected` result (unknown_op, invalid_args, supervisor_owned) and "
                    "its seq advances (I6); only a missing/non-integer seq or non-consecutive seqs fail the request (422).")]

    @field_validator("mutations")
    @classmethod
    def _seqs_in_range(cls, mutations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A seq is a 64-bit signed integer (SPEC §1): a larger one names nothing, and echoed in an error's details
        it cannot even be written in msgpack (a 500)."""
        for m in mutations:
            seq = m.get("seq")
            if type(seq) is int and not 1 <= seq <= MAX_INT:
                raise ValueError(f"seq must be between 1 and {MAX_INT}")
        return mutations


async def pull(request: web.Request) -> web.Response:
    """POST /v1/sync/pull."""
    who = principal(request, Role.DEVICE)
    req = await read_model(request, PullRequest)
    media = negotiate(request.headers.get("Accept"), request.headers.get("Content-Type"))
    page = await pull_engine.pull(request.app[POOL], who, req, request.app[CURSORS],
                                  request.app[SETTINGS].retention_days * 86400, packed=media == MSGPACK,
                                  batch=request.app[FIRST_PAGES])
    # Documents are spliced as stored (api/splice.py): decoding, re-validating and re-encoding them would dominate.
    body = pull_body(page, media)
    request.app[METRICS].count_pull(page.reset, page.has_more, len(body))
    return web.Response(body=body, content_type=media)


async def push(request: web.Request) -> web.Response:
    """POST /v1/sync/push."""
    who = principal(request, Role.DEVICE)
    env = await read_model(request, PushEnvelope, max_bytes=request.app[SETTINGS].max_push_bytes)
    result = await push_engine.push(request.app[POOL], who, env.mutations, codes=request.app[CODES],
                                    wakeups=request.app[WAKEUPS], batcher=request.app[PUSHES])
    request.app[METRICS].count_push(result)
    if negotiate(request.headers.get("Accept"), request.headers.get("Content-Type")) == MSGPACK:
        return web.Response(body=push_msgpack(result), content_type=MSGPACK)
    return respond_raw(request, result)


def push_msgpack(data: dict[str, Any]) -> bytes:
    """`msgpack.packb(data)` byte for byte, except that a result's ticket carried with its exact rendering is copied
    from its msgpack bytes instead of being encoded again (a 25-mutation push answers with ~20 documents)."""
    packer = msgpack.Packer(use_bin_type=True)
    out = [packer.pack_map_header(len(data))]
    for key, value in data.items():
        out.append(packer.pack(key))
        if key != "results":
            out.append(packer.pack(value))
            continue
        out.append(packer.pack_array_header(len(value)))
        for result in value:
            out.append(packer.pack_map_header(len(result)))
            for rkey, rvalue in result.items():
                out.append(packer.pack(rkey))
                out.append(rvalue.rendered.mp if isinstance(rvalue, RenderedDoc) else packer.pack(rvalue))
    return b"".join(out)


def setup(app: web.Application) -> None:
    """Register sync routes."""
    route(app, "POST", "/v1/sync/pull", pull, summary="Pull the crew's changes since a cursor (or a snapshot)",
          roles=("device",), request=PullRequest, response=PullResponse, tags=("sync",))
    route(app, "POST", "/v1/sync/push", push, summary="Push queued mutations; exactly once per (device, seq)",
          roles=("device",), request=PushEnvelope, response=PushResponse, tags=("sync",))

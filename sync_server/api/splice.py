"""Pull answers written around stored ticket documents: the msgpack or JSON bytes each document was stored as are
copied into the response, never decoded and re-encoded (a 200-ticket page was ~6 ms of server CPU that way).

The result decodes to exactly what encoding the PullResponse's JSON-mode dict would give: a map or array header is
written by hand and followed by its stored elements (msgpack), or the stored text is placed between the envelope's
pieces (JSON). Documents keep their stored (canonical, sorted) key order.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgpack

from protocol.codec import MSGPACK
from sync_server.engine.pull import UPSERT_JSON, UPSERT_MP, PullPage, Removal

_UPSERT_MP: Final = UPSERT_MP[0]
_UPSERT_JSON: Final = UPSERT_JSON[0]
_PACKER: Final = msgpack.Packer(use_bin_type=True)  # one per process: the event loop's thread is its only user
_MP_HEAD: Final = _PACKER.pack_map_header(7) + _PACKER.pack("changes")  # the envelope's 7 keys, `changes` first


def _tail(page: PullPage) -> dict[str, Any]:
    """The envelope's fields after `changes`, in PullResponse's order."""
    return {"cursor": page.cursor, "has_more": page.has_more, "reset": page.reset,
            "scope_checksum": page.scope_checksum, "watermark": page.watermark, "server_time": page.server_time}


def _packed(page: PullPage) -> bytes:
    """msgpack: map header, `changes` with its array header, each change (stored bytes after a fixed prefix), tail."""
    packer = _PACKER
    count = len(page.changes) + (page.framed.count if page.framed else 0)
    parts: list[bytes] = [_MP_HEAD, packer.pack_array_header(count)]
    for change in page.changes:
        if isinstance(change, Removal):
            parts.append(packer.pack({"kind": "remove", "ticket_id": change.ticket_id, "reason": change.reason}))
        else:
            assert isinstance(change, bytes), "a msgpack answer needs documents read as doc_mp"
            parts.append(_UPSERT_MP)
            parts.append(change)
    if page.framed:  # already framed upserts, joined (no separator in msgpack)
        assert isinstance(page.framed.body, bytes), "a msgpack answer needs documents read as doc_mp"
        parts.append(page.framed.body)
    tail = packer.pack(_tail(page))  # its six entries, one pack call: a 6-entry map's header is the one byte 0x86,
    assert tail[0] == 0x86          # dropped, since they continue the envelope's 7-entry map
    parts.append(tail[1:])
    return b"".join(parts)


def _text(page: PullPage) -> bytes:
    """JSON: the stored canonical text of each document between the envelope's pieces, UTF-8 like every answer."""
    items: list[str] = []
    for change in page.changes:
        if isinstance(change, Removal):
            items.append(json.dumps({"kind": "remove", "ticket_id": change.ticket_id, "reason": change.reason},
                                    separators=(",", ":"), ensure_ascii=False))
        else:
            assert isinstance(change, str), "a JSON answer needs documents read as doc_json"
            items.append(_UPSERT_JSON + change + "}")
    if page.framed and page.framed.count:  # already framed upserts, comma-separated
        assert isinstance(page.framed.body, str), "a JSON answer needs documents read as doc_json"
        items.append(page.framed.body)
    tail = json.dumps(_tail(page), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return ('{"changes":[' + ",".join(items) + "]," + tail[1:]).encode("utf-8")


def pull_body(page: PullPage, media: str) -> bytes:
    """The PullResponse body in the negotiated media type."""
    return _packed(page) if media == MSGPACK else _text(page)

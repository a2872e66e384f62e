"""A push answer copies each changed ticket's rendered bytes (domain.document.RenderedDoc) instead of encoding the
document again: the answer and the stored result text must be exactly what encoding the plain dicts gives."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson

from sync_server.api.sync import push_msgpack
from sync_server.domain.document import RenderedDoc, render
from sync_server.storage.push_sql import result_text

# canonical order: keys sorted at every level, notes by (created_at, id)
DOC: dict[str, Any] = {
    "address": "14410 W VANOWEN ST", "crew": "c01", "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "items": [{"count": 2, "item_type": "sofa"}], "lat": 34.19, "lon": -118.45,
    "notes": [{"author": "d1", "created_at": "2026-12-01T06:00:00.000000Z", "device_time": None,
               "id": "00000000-0000-0000-0000-000000000001", "text": "gate code 1234 \u00e9"}],
    "photos": [], "status": "in_progress", "version": 4,
}


def _answer(ticket: Any) -> dict[str, Any]:
    return {"results": [{"seq": 1, "status": "applied", "ticket": None, "replayed": False},
                        {"seq": 2, "status": "applied", "ticket": ticket, "replayed": False}],
            "server_version": 77, "last_seq": 2}


def test_a_document_in_canonical_order_is_exact_and_copied_byte_for_byte() -> None:
    rendered = render(DOC)
    assert rendered.exact
    assert rendered.json == '{"address":"14410 W VANOWEN ST","crew":"c01","id":"7c9e6679-7425-40de-944b-e07fc1f90ae7",' \
        '"items":[{"count":2,"item_type":"sofa"}],"lat":34.19,"lon":-118.45,"notes":[{"author":"d1",' \
        '"created_at":"2026-12-01T06:00:00.000000Z","device_time":null,"id":"00000000-0000-0000-0000-000000000001",' \
        '"text":"gate code 1234 \u00e9"}],"photos":[],"status":"in_progress","version":4}'
    doc = RenderedDoc(DOC, rendered)
    assert doc == DOC
    assert push_msgpack(_answer(doc)) == msgpack.packb(_answer(DOC), use_bin_type=True)
    assert msgpack.unpackb(push_msgpack(_answer(doc)))["results"][1]["ticket"] == DOC
    stored = _answer(doc)["results"][1]
    assert result_text(stored) == orjson.dumps(_answer(DOC)["results"][1]).decode()


def test_a_document_in_another_order_is_not_exact() -> None:
    shuffled = {"version": 4, **{k: v for k, v in DOC.items() if k != "version"}}
    rendered = render(shuffled)
    assert rendered.json == render(DOC).json and rendered.mp == render(DOC).mp  # same canonical forms...
    assert not rendered.exact  # ...but not this dict's own encoding, so an answer must encode it as it stands
    assert msgpack.packb(shuffled) != rendered.mp


def test_answers_without_rendered_tickets_are_plain_msgpack() -> None:
    assert push_msgpack(_answer(DOC)) == msgpack.packb(_answer(DOC), use_bin_type=True)
    assert push_msgpack(_answer(None)) == msgpack.packb(_answer(None), use_bin_type=True)

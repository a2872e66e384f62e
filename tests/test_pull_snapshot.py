"""Snapshots read current ticket rows and pull answers splice stored document bytes; both must keep I3, I4 and I7."""

from __future__ import annotations

import json

import aiohttp
import asyncpg
import msgpack
import pytest

from protocol import JSON, MSGPACK, PullResponse, decode
from sync_server.api.splice import pull_body
from sync_server.engine.pull import Framed, PullPage, Removal
from sync_server.storage import pull_sql
from tests.conftest import Server
from tests.factories import World, make_tickets, set_priority
from tests.syncclient import DeviceClient, SupervisorClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_snapshot_pages_describe_the_first_pages_snapshot_whatever_commits_between_them(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """Later snapshot pages read current rows, except tickets changed since the head: a writer in flight at the head,
    an update, a reassignment away and one into the crew all wait for the next pull (I7), which delivers them (I2)."""
    mine = sorted(await make_tickets(pool, world, 6, crew="san-1"), key=lambda r: r.ticket.id)
    ids = [r.ticket.id for r in mine]
    (theirs,) = await make_tickets(pool, world, 1, crew="san-2")
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    held = await pool.acquire()
    tx = held.transaction()
    await tx.start()
    try:
        await set_priority(held, ids[5], "urgent")  # in flight when the snapshot is cut
        first = await dev.pull_once(None, limit=2)
        await tx.commit()
    except BaseException:
        await tx.rollback()
        raise
    finally:
        await pool.release(held)
    assert first.reset and first.has_more and [c.ticket.id for c in first.changes] == ids[:2]
    await sup.call("PATCH", f"/v1/tickets/{ids[3]}", {"priority": "high"})
    await sup.assign(ids[4], "san-2")
    await sup.assign(theirs.ticket.id, "san-1")
    pages = [first]
    while pages[-1].has_more:
        pages.append(await dev.pull_once(pages[-1].cursor, limit=2))
    assert len(pages) == 3 and all(p.reset and p.scope_checksum == first.scope_checksum for p in pages)
    got = [(c.kind, c.ticket.id, c.ticket.priority) for p in pages for c in p.changes]
    assert got == [("upsert", i, "normal") for i in ids]  # exactly the scope at the head
    dev.replica.apply_pages(pages)
    assert dev.replica.converged()  # the six tickets hash to the checksum the first page reported
    delta = await dev.pull()
    changes = {(c.kind, c.ticket.id if c.kind == "upsert" else c.ticket_id): c for p in delta for c in p.changes}
    assert set(changes) == {("upsert", ids[3]), ("remove", ids[4]), ("upsert", ids[5]), ("upsert", theirs.ticket.id)}
    assert changes[("upsert", ids[3])].ticket.priority == "high"
    assert changes[("upsert", ids[5])].ticket.priority == "urgent"
    assert changes[("remove", ids[4])].reason == "reassigned"
    assert set(dev.replica.tickets) == {ids[0], ids[1], ids[2], ids[3], ids[5], theirs.ticket.id}
    assert dev.replica.converged()


# Two stored documents as record_changes stores them (canonical text, msgpack of the same document), with non-ASCII
# text and floats, integral ones included; the expected answers below are written out by hand.
_DOC_A = {"id": "00000000-0000-4000-8000-00000000000a", "description": "Sofá y colchón – frente al nº 12 ☕",
          "lat": 34.05, "lon": -118.25, "version": 3, "notes": [{"id": "n1", "text": "Größe: 2,5 m"}]}
_DOC_B = {"id": "00000000-0000-4000-8000-00000000000b", "description": "plain", "lat": 34.0, "lon": -118.0,
          "version": 1, "notes": []}


def _page(docs: list[bytes] | list[str]) -> PullPage:
    return PullPage([docs[0], Removal("00000000-0000-4000-8000-00000000000c", "cancelled"), docs[1]],  # upserts: stored docs
                    cursor="c1", has_more=False, reset=False, scope_checksum="ab" * 32 + ":2", watermark=7,
                    server_time="2026-01-02T03:04:05.000006Z")


_EXPECTED = {
    "changes": [
        {"kind": "upsert", "ticket": {"id": "00000000-0000-4000-8000-00000000000a",
                                      "description": "Sofá y colchón – frente al nº 12 ☕", "lat": 34.05, "lon": -118.25,
                                      "version": 3, "notes": [{"id": "n1", "text": "Größe: 2,5 m"}]}},
        {"kind": "remove", "ticket_id": "00000000-0000-4000-8000-00000000000c", "reason": "cancelled"},
        {"kind": "upsert", "ticket": {"id": "00000000-0000-4000-8000-00000000000b", "description": "plain",
                                      "lat": 34.0, "lon": -118.0, "version": 1, "notes": []}},
    ],
    "cursor": "c1", "has_more": False, "reset": False, "scope_checksum": "ab" * 32 + ":2", "watermark": 7,
    "server_time": "2026-01-02T03:04:05.000006Z",
}


def test_spliced_msgpack_answer_decodes_to_the_documents() -> None:
    body = pull_body(_page([msgpack.packb(_DOC_A, use_bin_type=True), msgpack.packb(_DOC_B, use_bin_type=True)]),
                     MSGPACK)
    decoded = msgpack.unpackb(body, raw=False)
    assert decoded == _EXPECTED
    assert isinstance(decoded["changes"][2]["ticket"]["lat"], float)  # 34.0 stays a float, not 34
    assert list(decoded) == ["changes", "cursor", "has_more", "reset", "scope_checksum", "watermark", "server_time"]


def test_spliced_json_answer_decodes_to_the_documents() -> None:
    texts = [json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for d in (_DOC_A, _DOC_B)]
    body = pull_body(_page(texts), JSON)
    assert "Sofá y colchón – frente al nº 12 ☕".encode() in body  # UTF-8 written raw, as stored
    decoded = json.loads(body)
    assert decoded == _EXPECTED
    assert isinstance(decoded["changes"][2]["ticket"]["lat"], float)


@pytest.mark.parametrize("media", [MSGPACK, JSON])
async def test_pulled_documents_are_the_stored_ones_in_either_encoding(
    server: Server, pool: asyncpg.Pool, world: World, http, media: str
) -> None:
    """End to end: a ticket with a non-ASCII note and float coordinates arrives whole and decodes as the wire model."""
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    dev = DeviceClient(http, server.url, world.device("san-1").token, media=media)
    text = "Sofá y colchón – ☕ nº 12"
    res = await dev.push([dev.mutation("add_note", t.ticket.id, {"note_id": "7d0c8f5e-3b7a-4d1e-9c39-2f0a5b8e6d11",
                                                                  "text": text})])
    assert res.results[0].status == "applied"
    body = msgpack.packb({"cursor": None}) if media == MSGPACK else b'{"cursor":null}'
    async with http.post(server.url + "/v1/sync/pull", data=body, headers=dev.headers()) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith(media)
        raw = await r.read()
    page = msgpack.unpackb(raw, raw=False) if media == MSGPACK else json.loads(raw)
    (change,) = page["changes"]
    doc = change["ticket"]
    assert change["kind"] == "upsert" and doc["id"] == str(t.ticket.id)
    assert (doc["lat"], doc["lon"], doc["description"]) == (34.05, -118.25, "test ticket 0")
    assert [(n["id"], n["text"]) for n in doc["notes"]] == [("7d0c8f5e-3b7a-4d1e-9c39-2f0a5b8e6d11", text)]
    assert page["reset"] is True and page["has_more"] is False
    model = decode(raw, media, PullResponse)  # the shape the wire model defines, documents included
    assert model.changes[0].ticket.notes[0].text == text


def _framed_page(framed: Framed) -> PullPage:
    return PullPage([], cursor="c1", has_more=False, reset=False, scope_checksum="ab" * 32 + ":2", watermark=7,
                    server_time="2026-01-02T03:04:05.000006Z", framed=framed)


_EXPECTED_FRAMED = {**_EXPECTED, "changes": [_EXPECTED["changes"][0], _EXPECTED["changes"][2]]}


def test_a_framed_snapshot_page_decodes_to_the_documents_in_either_encoding() -> None:
    """A snapshot's first page arrives from PostgreSQL as upserts already framed and joined; the answer carries them
    as they are, counted in the msgpack array header, comma-separated in JSON."""
    upsert = b"\x82\xa4kind\xa6upsert\xa6ticket"  # fixmap of 2, "kind", "upsert", "ticket", written out by hand
    packed = b"".join(upsert + msgpack.packb(d, use_bin_type=True) for d in (_DOC_A, _DOC_B))
    body = pull_body(_framed_page(Framed(2, packed)), MSGPACK)
    assert msgpack.unpackb(body, raw=False) == _EXPECTED_FRAMED
    texts = [json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for d in (_DOC_A, _DOC_B)]
    text = ",".join('{"kind":"upsert","ticket":' + t + "}" for t in texts)
    assert json.loads(pull_body(_framed_page(Framed(2, text)), JSON)) == _EXPECTED_FRAMED
    empty = {**_EXPECTED, "changes": []}
    assert msgpack.unpackb(pull_body(_framed_page(Framed(0, b"")), MSGPACK), raw=False) == empty
    assert json.loads(pull_body(_framed_page(Framed(0, "")), JSON)) == empty


async def test_a_snapshot_first_page_is_the_held_documents_framed_in_id_order(pool: asyncpg.Pool, world: World) -> None:
    """storage.first_snapshot: the first `limit` held tickets' stored documents in id order, each between the frame's
    prefix and suffix and joined by its separator (bytes for msgpack, text for JSON), their count, the last one's id
    when more are held (where the next page starts), and the hash of EVERY held ticket (the scope checksum's input); another crew's tickets are in neither."""
    mine = sorted(await make_tickets(pool, world, 3, crew="san-1"), key=lambda r: r.ticket.id)
    await make_tickets(pool, world, 2, crew="san-2")
    a, b, c = (r.ticket.id for r in mine)
    async with pool.acquire() as conn:
        stored = {r["id"]: r for r in await conn.fetch("SELECT id, doc_mp, doc_json, doc_hash FROM tickets")}
        mp = await pull_sql.first_snapshot(conn, world.crews["san-1"], 2, (b"<", b">", b"|"), True)
        js = await pull_sql.first_snapshot(conn, world.crews["san-1"], 2, ("[", "]", ","), False)
        whole = await pull_sql.first_snapshot(conn, world.crews["san-1"], 500, (b"", b"", b""), True)
    assert mp.page == b"<" + stored[a]["doc_mp"] + b">|<" + stored[b]["doc_mp"] + b">"
    assert js.page == "[" + stored[a]["doc_json"] + "],[" + stored[b]["doc_json"] + "]"
    assert whole.page == stored[a]["doc_mp"] + stored[b]["doc_mp"] + stored[c]["doc_mp"]
    assert (mp.count, mp.last, js.count, js.last, whole.count, whole.last) == (2, b, 2, b, 3, None)
    for snap in (mp, js, whole):
        hashes = [snap.hashes[i : i + 32] for i in range(0, len(snap.hashes), 32)]
        assert sorted(hashes) == sorted(stored[t]["doc_hash"] for t in (a, b, c))
        assert snap.head.count(":") == 2  # a pg_snapshot text: xmin:xmax:xip


async def test_a_multi_ticket_snapshot_in_json_converges(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    """End to end in JSON (the comma-separated form): three tickets in one page and in pages of two; the replica's
    recomputed scope checksum equals the server's either way."""
    mine = sorted(await make_tickets(pool, world, 3, crew="san-1"), key=lambda r: r.ticket.id)
    checksums = set()
    for limit in (500, 2):
        dev = DeviceClient(http, server.url, world.device("san-1").token, media=JSON)
        pages = [await dev.pull_once(None, limit=limit)]
        while pages[-1].has_more:
            pages.append(await dev.pull_once(pages[-1].cursor, limit=limit))
        assert len(pages) == (1 if limit == 500 else 2)
        assert [c.ticket.id for p in pages for c in p.changes] == [r.ticket.id for r in mine]
        dev.replica.apply_pages(pages)
        assert dev.replica.converged()
        checksums |= {p.scope_checksum for p in pages}
    assert len(checksums) == 1  # one scope, one checksum, however it is paged

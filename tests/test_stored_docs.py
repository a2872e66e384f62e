"""Stored ticket documents: rendered once in Python, equal to a fresh render after every writer, back-filled on migrate."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone

import aiohttp
import asyncpg
import msgpack
import pytest

import protocol as p
from sync_server.domain.document import render
from sync_server.storage.org import CodeCache
from sync_server.storage.tickets import backfill_docs, load_tickets
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.protocol.test_golden_vectors import CANON_A, CANON_B, HASH_A, HASH_B, INPUT_A, INPUT_B
from tests.syncclient import DeviceClient, SupervisorClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize(("body", "canon", "digest"), [(INPUT_A, CANON_A, HASH_A), (INPUT_B, CANON_B, HASH_B)],
                         ids=["A", "B"])
def test_render_gives_the_golden_bytes_and_a_msgpack_of_the_same_document(body: bytes, canon: bytes, digest: str) -> None:
    # the golden tickets carry notes, photos, items, non-ASCII text, integral floats and nulls (hand-written bytes)
    doc = p.decode(body, p.JSON, p.Ticket).model_dump(mode="json")
    out = render(doc)
    assert out.json.encode("utf-8") == canon
    assert out.hash.hex() == digest
    unpacked = msgpack.unpackb(out.mp, raw=False)
    assert unpacked == json.loads(canon)
    assert list(unpacked) == sorted(unpacked)  # same key order as the canonical text
    assert [list(n) for n in unpacked["notes"]] == [sorted(n) for n in unpacked["notes"]]


async def _assert_stored_equals_fresh(conn: asyncpg.Connection) -> int:
    """Every ticket's stored text/msgpack/hash equals a fresh render of its rows; every change row's bytes hash to its hash."""
    rows = await conn.fetch("SELECT id, doc_json, doc_mp, doc_hash FROM tickets ORDER BY id")
    fresh = await load_tickets(conn, [r["id"] for r in rows])
    for r in rows:
        want = render(fresh[r["id"]].doc)
        assert r["doc_json"] == want.json, r["id"]
        assert bytes(r["doc_mp"]) == want.mp
        assert bytes(r["doc_hash"]) == want.hash == hashlib.sha256(r["doc_json"].encode("utf-8")).digest()
    for c in await conn.fetch("SELECT doc_json, doc_mp, doc_hash FROM changes"):
        assert hashlib.sha256(c["doc_json"].encode("utf-8")).digest() == bytes(c["doc_hash"])
        assert msgpack.unpackb(c["doc_mp"], raw=False) == json.loads(c["doc_json"])
    return len(rows)


async def test_pushes_and_supervisor_writes_keep_stored_documents_fresh(server: Server, pool: asyncpg.Pool, world: World,
                                                                        http) -> None:
    recs = await make_tickets(pool, world, 3)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    a, b, c = (r.ticket.id for r in recs)
    taken = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).isoformat()
    resp = await dev.push([
        dev.mutation("acknowledge", a), dev.mutation("start", a),
        dev.mutation("add_note", a, {"note_id": str(uuid.uuid4()), "text": "señal — «ok» 🛋"}),
        dev.mutation("set_items", a, {"items": [{"item_type": "mattress", "count": 2}, {"item_type": "couch", "count": 1}]}),
        dev.mutation("attach_photo", a, {"sha256": "a" * 64, "kind": "after", "taken_at": taken, "lat": 34.0, "lon": -118.0}),
        dev.mutation("complete", a, {"resolution_code": "collected", "note": "done"}),
        dev.mutation("acknowledge", b),
    ])
    assert [r.status for r in resp.results] == ["applied"] * 7
    # a one-statement push (no photo in it) on the ticket that now shows a photo: carried over from the stored doc
    more = await dev.push([dev.mutation("add_note", a, {"note_id": str(uuid.uuid4()), "text": "après"})])
    assert more.results[0].status == "applied" and more.results[0].ticket is not None
    assert [p["lat"] for p in more.results[0].ticket.model_dump(mode="json")["photos"]] == [34.0]
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.assign(c, "san-2")
    async with pool.acquire() as conn:
        assert await _assert_stored_equals_fresh(conn) == 3
        row = await conn.fetchrow("SELECT doc_json FROM tickets WHERE id = $1", a)
    doc = json.loads(row["doc_json"])
    assert doc["status"] == "completed" and [i["item_type"] for i in doc["items"]] == ["couch", "mattress"]
    assert doc["photos"][0]["lat"] == 34.0 and '"lat":34.0' in row["doc_json"]  # integral float stays a float
    assert "señal — «ok» 🛋" in row["doc_json"]  # raw UTF-8, not escaped
    # the client's checksum over what it pulled equals the server's over the stored hashes
    await dev.pull()
    assert dev.replica.converged()


async def test_backfill_fills_rows_written_before_documents_were_stored(pool: asyncpg.Pool, world: World) -> None:
    await make_tickets(pool, world, 4)
    async with pool.acquire() as conn:
        want = {r["id"]: (r["doc_json"], bytes(r["doc_mp"])) for r in await conn.fetch("SELECT id, doc_json, doc_mp FROM tickets")}
        logged = {r["id"]: r["doc_json"] for r in await conn.fetch("SELECT id, doc_json FROM changes")}
        await conn.execute("ALTER TABLE changes ALTER COLUMN doc_json DROP NOT NULL, ALTER COLUMN doc_mp DROP NOT NULL")
        await conn.execute("UPDATE tickets SET doc_json = NULL, doc_mp = NULL")
        # rows from before 0012 carry only their jsonb document (written until 0016)
        await conn.execute("UPDATE changes SET doc = doc_json::jsonb, doc_json = NULL, doc_mp = NULL")
        assert await backfill_docs(conn, page=3) == (4, 4)
        assert await backfill_docs(conn) == (0, 0)  # idempotent
        got = {r["id"]: (r["doc_json"], bytes(r["doc_mp"])) for r in await conn.fetch("SELECT id, doc_json, doc_mp FROM tickets")}
        assert got == want
        assert {r["id"]: r["doc_json"] for r in await conn.fetch("SELECT id, doc_json FROM changes")} == logged
        await _assert_stored_equals_fresh(conn)


async def test_push_renders_a_ticket_without_a_stored_document(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    async with pool.acquire() as conn:  # as a writer from before stored documents would have left it
        await conn.execute("UPDATE tickets SET doc_json = NULL, doc_mp = NULL")
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    resp = await dev.push([dev.mutation("acknowledge", t.ticket.id)])
    assert resp.results[0].status == "applied" and resp.results[0].ticket.status == "acknowledged"
    async with pool.acquire() as conn:
        assert await _assert_stored_equals_fresh(conn) == 1


async def test_one_statement_push_stores_what_a_fresh_render_gives(server: Server, pool: asyncpg.Pool, world: World,
                                                                   http) -> None:
    """No photo, no new ticket: the push renders documents from the fold (no reload) and writes in one statement."""
    a, b, c = (r.ticket.id for r in await make_tickets(pool, world, 3))
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    other = DeviceClient(http, server.url, world.device("san-1", 1).token)
    await dev.pull()
    await other.pull()
    # queued offline before the decline below (its seq is given when it is finally sent)
    late = dev.mutation("complete", c, {"resolution_code": "collected"}, seq=0)
    resp = await dev.push([
        dev.mutation("set_items", a, {"items": [{"item_type": "sofa", "count": 1}, {"item_type": "chair", "count": 0}]}),
        dev.mutation("add_note", a, {"note_id": str(uuid.uuid4()), "text": "Ünïcödé 🚧 \"quoted\"\n2nd line"}),
        dev.mutation("set_resolution", a, {"resolution_code": "partial"}),
        dev.mutation("complete", b, {"resolution_code": "collected", "note": "gate code 1234"}),
        dev.mutation("decline", c, {"reason_code": "wrong_area", "note": "not ours"}),
    ])
    assert [r.status for r in resp.results] == ["applied"] * 5
    assert resp.results[-1].removed == "declined" and resp.results[-1].ticket is None
    async with pool.acquire() as conn:
        assert await _assert_stored_equals_fresh(conn) == 3
        stored = {r["id"]: json.loads(r["doc_json"]) for r in await conn.fetch("SELECT id, doc_json FROM tickets")}
        assert await conn.fetchval("SELECT count(*) FROM changes") == 6  # 3 created + 3 pushed (one per ticket)
        assert await conn.fetchval("SELECT last_seq FROM devices WHERE id = $1", world.device("san-1").device_id) == 5
    # the response carries the same documents the rows store
    assert resp.results[2].ticket.model_dump(mode="json") == stored[a]
    assert stored[a]["items"] == [{"count": 0, "item_type": "chair"}, {"count": 1, "item_type": "sofa"}]
    assert stored[a]["version"] == 2 and stored[a]["resolution_code"] == "partial"
    assert stored[b]["status"] == "completed" and [n["text"] for n in stored[b]["notes"]] == ["gate code 1234"]
    assert stored[c]["crew"] is None and stored[c]["status"] == "unassigned"
    # a stale edit from the crew's other phone: a field conflict for supervisors, in the same one statement
    r2 = await other.push([other.mutation("set_resolution", a, {"resolution_code": "collected"}, base_version=1)])
    assert r2.results[0].status == "merged" and r2.results[0].ticket.resolution_code == "collected"  # newer edit wins
    # the late completion of the declined ticket puts the crew back on it (crew name rendered in Python)
    dev.seq += 1
    (lr,) = (await dev.push([{**late, "seq": dev.seq}])).results
    assert lr.status == "merged" and lr.ticket is not None
    assert lr.ticket.crew == "san-1" and lr.ticket.status == "completed"
    async with pool.acquire() as conn:
        assert await _assert_stored_equals_fresh(conn) == 3
        assert await conn.fetchval("SELECT count(*) FROM conflicts WHERE kind = 'late_field_report'") == 1
        assert await conn.fetchval("SELECT count(*) FROM conflicts WHERE kind = 'field_conflict'") == 1
    for d in (dev, other):
        await d.pull()
        assert d.replica.converged()


async def test_code_cache_answers_from_memory_until_cleared(pool: asyncpg.Pool, world: World) -> None:
    cache = CodeCache()
    async with pool.acquire() as conn:
        first = await cache.get(conn, ["Bulky Items", "bulky_items", "No Such Type"])
        assert set(first) == {"Bulky Items", "bulky_items"} and "collected" in first["Bulky Items"][0]
        # changed behind its back (no code path does this: codes are fixed at creation), so a hit is visibly cached
        await conn.execute("UPDATE service_types SET resolution_codes = '{swept}' WHERE code = 'bulky_items'")
        assert (await cache.get(conn, ["Bulky Items"]))["Bulky Items"][0] == first["Bulky Items"][0]
        cache.clear()
        assert (await cache.get(conn, ["Bulky Items"]))["Bulky Items"][0] == ["swept"]

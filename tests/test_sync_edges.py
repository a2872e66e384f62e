"""Regressions of the sync path found by hostile clients: edge timestamps, op notes, reused seqs, late work after retention."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import asyncpg
import pytest

from protocol import JSON
from sync_server.engine.maintenance import prune
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient

SHA = "ab" * 32
EDGES = ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z")


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_edge_timestamps_rejected_per_mutation_and_tickets_stay_readable(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """Out-of-range taken_at/device_time give that mutation `rejected invalid_args`, its seq advances, nothing is stored."""
    recs = await make_tickets(pool, world, 1)
    t = recs[0].ticket.id
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    muts = []
    for edge in EDGES:
        muts.append(dev.mutation("attach_photo", t, {"sha256": SHA, "kind": "before", "taken_at": edge}))
    for edge in EDGES:
        m = dev.mutation("add_note", t, {"note_id": str(uuid.uuid4()), "text": "edge"})
        m["device_time"] = edge
        muts.append(m)
    far = dev.mutation("add_note", t, {"note_id": str(uuid.uuid4()), "text": "from the future"})
    far["device_time"] = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    near_id = str(uuid.uuid4())
    near = dev.mutation("add_note", t, {"note_id": near_id, "text": "clock a little fast"})
    near["device_time"] = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()
    resp = await dev.push([*muts, far, near])
    assert [(r.status, r.reason) for r in resp.results[:-1]] == [("rejected", "invalid_args")] * 9
    assert resp.results[-1].status == "applied"
    assert resp.last_seq == 10
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    listed = await sup.call("GET", "/v1/tickets")
    assert [n["id"] for n in listed["tickets"][0]["notes"]] == [near_id]
    assert listed["tickets"][0]["photos"] == []
    await dev.pull()
    assert dev.replica.converged()


async def test_supervisor_edge_timestamps_answer_422_and_commit_nothing(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """A supervisor create or patch with an out-of-range datetime is refused before any effect."""
    recs = await make_tickets(pool, world, 1)
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    before = await pool.fetchval("SELECT count(*) FROM tickets")
    for edge in EDGES:
        for field in ("due_at", "requested_at"):
            resp = await sup.call("POST", "/v1/tickets", {"service_type": "Bulky Items", "address": "1 Main St", field: edge},
                                  expect=422)
            assert resp["error"]["code"] == "validation_failed"
        resp = await sup.call("PATCH", f"/v1/tickets/{recs[0].ticket.id}", {"due_at": edge}, expect=422)
        assert resp["error"]["code"] == "validation_failed"
    assert await pool.fetchval("SELECT count(*) FROM tickets") == before
    assert await pool.fetchval("SELECT version FROM tickets WHERE id = $1", recs[0].ticket.id) == 1
    got = await sup.call("GET", "/v1/tickets")
    assert len(got["tickets"]) == 1


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
@pytest.mark.parametrize("column", ["tickets.due_at", "tickets.requested_at", "ticket_notes.device_time",
                                    "ticket_photos.taken_at"])
async def test_database_refuses_timestamps_that_would_render_null(pool: asyncpg.Pool, world: World, column: str) -> None:
    """CHECK constraints: no row can hold ±infinity or a time outside 1970..2100 where the wire says datetime."""
    recs = await make_tickets(pool, world, 1)
    t = recs[0].ticket.id
    table, col = column.split(".")
    async with pool.acquire() as conn:
        if table == "ticket_notes":
            await conn.execute("INSERT INTO ticket_notes (id, ticket_id, text, author) VALUES ($1, $2, 'x', 'd')", t, t)
            key = "ticket_id"
        elif table == "ticket_photos":
            await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                               " VALUES ($1, $2, 'before', now(), 'd')", t, SHA)
            key = "ticket_id"
        else:
            key = "id"
        for bad in ("infinity", "-infinity", "0001-01-01 00:00:00+00", "2100-01-01 00:00:00+00"):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(f"UPDATE {table} SET {col} = $1::text::timestamptz WHERE {key} = $2", bad, t)


async def test_note_on_status_ops_becomes_a_ticket_note_exactly_once(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """complete / unable_to_complete / decline with a note: the note is on the ticket once, id uuid5(device_id/seq)."""
    recs = await make_tickets(pool, world, 3)
    a, b, c = (r.ticket.id for r in recs)
    device = world.device("san-1")
    dev = DeviceClient(http, server.url, device.token, JSON)
    await dev.pull()
    muts = [dev.mutation("start", a),
            dev.mutation("complete", a, {"resolution_code": "collected", "note": "Picked up mattress and box spring"}),
            dev.mutation("start", b),
            dev.mutation("unable_to_complete", b, {"reason_code": "no_access", "note": "Gate locked"}),
            dev.mutation("decline", c, {"reason_code": "unsafe", "note": "Needs a crane"})]
    resp = await dev.push(muts)
    assert [r.status for r in resp.results] == ["applied"] * 5
    again = await dev.push(muts)  # a lost answer: the replay must not add the notes a second time
    assert all(r.replayed for r in again.results)
    ns = uuid.UUID("6f1c1f57-64a4-4c5e-9a0f-5f0e3e6d8a11")
    expected = {
        a: (uuid.uuid5(ns, f"{device.device_id}/2"), "Picked up mattress and box spring"),
        b: (uuid.uuid5(ns, f"{device.device_id}/4"), "Gate locked"),
        c: (uuid.uuid5(ns, f"{device.device_id}/5"), "Needs a crane"),
    }
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, ticket_id, text, author FROM ticket_notes")
    assert {r["ticket_id"]: (r["id"], r["text"]) for r in rows} == expected
    assert len(rows) == 3 and {r["author"] for r in rows} == {device.device_id}
    await dev.pull()
    assert [n.text for n in dev.replica.tickets[a].notes] == ["Picked up mattress and box spring"]
    assert dev.replica.converged()


async def test_reused_seq_with_another_body_is_refused_and_identical_replay_is_byte_identical(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """409 seq_reused (with seq and stored digest) for a different body; the same body replays the first answer exactly."""
    recs = await make_tickets(pool, world, 2)
    t, u = recs[0].ticket.id, recs[1].ticket.id
    dev = DeviceClient(http, server.url, world.device("san-1").token, JSON)
    await dev.pull()
    first = [dev.mutation("add_note", t, {"note_id": str(uuid.uuid4()), "text": "first"}),
             dev.mutation("start", t), dev.mutation("add_note", u, {"note_id": str(uuid.uuid4()), "text": "other"})]
    status, body = await dev.raw("/v1/sync/push", json.dumps({"mutations": first}).encode())
    assert status == 200
    answer = json.loads(body)["results"]
    assert answer[0]["ticket"] is None and answer[1]["ticket"] is not None  # the ticket travels on its last result
    changed = dict(first[0], args={"note_id": first[0]["args"]["note_id"], "text": "DIFFERENT"})
    status, err = await dev.push_raw([changed, first[1]])
    assert status == 409 and err["error"]["code"] == "seq_reused"
    assert err["error"]["details"]["seq"] == 1 and len(err["error"]["details"]["stored_digest"]) == 64
    # a fresh seq riding along with the reused one is not applied either: the request is refused whole
    status, err = await dev.push_raw([dict(first[2], args={**first[2]["args"], "text": "changed"}),
                                      dev.mutation("add_note", u, {"note_id": str(uuid.uuid4()), "text": "new"}, seq=4)])
    assert status == 409 and err["error"]["details"]["seq"] == 3
    async with pool.acquire() as conn:
        assert sorted(await conn.fetchval("SELECT array_agg(text) FROM ticket_notes")) == ["first", "other"]
        assert await conn.fetchval("SELECT last_seq FROM devices WHERE id = $1", world.device("san-1").device_id) == 3
    status, body = await dev.raw("/v1/sync/push", json.dumps({"mutations": first}).encode())
    assert status == 200
    replay = json.loads(body)["results"]
    assert [list(r.items()) for r in replay] == [list({**r, "replayed": True}.items()) for r in answer]


async def test_late_complete_after_retention_pruned_the_history_is_kept_as_late_report(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """Holding history outlives retention: a crew offline past the window still gets its completion kept (I5)."""
    recs = await make_tickets(pool, world, 1)
    t = recs[0].ticket.id
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    offline = [dev.mutation("start", t), dev.mutation("complete", t, {"resolution_code": "collected", "note": None})]
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.assign(t, "san-2")
    other = DeviceClient(http, server.url, world.device("san-2").token)
    await other.pull()
    await other.push([other.mutation("acknowledge", t)])  # a later row without prev_crew: san-1 vanishes from the log
    window = timedelta(seconds=1)
    await asyncio.sleep(1.5)
    async with pool.acquire() as conn:
        await prune(conn, window)
        assert await conn.fetchval("SELECT count(*) FROM changes WHERE ticket_id = $1 AND (holder_crew_id = $2"
                                   " OR prev_crew_id = $2)", t, world.crews["san-1"]) == 0
    resp = await dev.push(offline)
    assert [(r.status, r.reason) for r in resp.results] == [("rejected", "not_in_scope"), ("merged", "late_field_report")]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM tickets WHERE id = $1", t) == "completed"
        kinds = await conn.fetch("SELECT kind, crew_id FROM conflicts WHERE ticket_id = $1", t)
    assert [(k["kind"], k["crew_id"]) for k in kinds] == [("late_field_report", world.crews["san-1"])]


async def test_holders_back_filled_from_the_change_log(pool: asyncpg.Pool, world: World) -> None:
    """The migration's back-fill: every crew named as holder or previous holder in the log is a holder."""
    recs = await make_tickets(pool, world, 2)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT ticket_id, crew_id FROM ticket_holders ORDER BY ticket_id")
    assert {(r["ticket_id"], r["crew_id"]) for r in rows} == {(r.ticket.id, world.crews["san-1"]) for r in recs}

"""One test per invariant I1–I7 (docs/architecture.md), named after it, over real HTTP and real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import asyncpg
import pytest

from protocol import JSON, MSGPACK, PullRequest, encode, scope_checksum
from sync_server.engine.changes import commit_changes
from sync_server.storage.tickets import load_tickets, lock_tickets, update_tickets
from tests.conftest import Server, start_server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


def note(text: str = "note") -> dict[str, str]:
    return {"note_id": str(uuid.uuid4()), "text": text}


async def test_I1_exactly_once(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (rec,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    batch = [dev.mutation("add_note", rec.ticket.id, note("a")), dev.mutation("add_note", rec.ticket.id, note("b"))]
    # the same batch sent concurrently (a retry racing the original) is applied once
    first, second = await asyncio.gather(dev.push(batch), dev.push(batch))
    assert sorted([first.results[0].replayed, second.results[0].replayed]) == [False, True]
    # a seq from the future is refused whole, with the expected seq
    status, err = await dev.push_raw([dev.mutation("add_note", rec.ticket.id, note("c"), seq=7)])
    assert status == 409 and err["error"]["code"] == "seq_gap" and err["error"]["details"]["expected_seq"] == 3
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes") == 2
        assert await conn.fetchval("SELECT last_seq FROM devices WHERE id = $1", world.device("san-1").device_id) == 2
        # the stored results and the effects share a transaction id (one commit)
        xids = await conn.fetch("SELECT DISTINCT server_version FROM mutation_results")
        assert len(xids) == 1


async def test_I2_slow_committer_is_not_skipped(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    slow, fast = await make_tickets(pool, world, 2)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    held = await pool.acquire()
    tx = held.transaction()
    await tx.start()
    try:
        # the slow writer takes its xid and change-log id first...
        before = await load_tickets(held, [slow.ticket.id])
        await lock_tickets(held, [slow.ticket.id])
        await update_tickets(held, [slow.ticket.id], {"priority": "urgent"})
        await commit_changes(held, before, actor_kind="system", actor="slow", action="update")
        # ...a later writer commits, and the device pulls while the slow one is still open
        async with pool.acquire() as conn, conn.transaction():
            b2 = await load_tickets(conn, [fast.ticket.id])
            await lock_tickets(conn, [fast.ticket.id])
            await update_tickets(conn, [fast.ticket.id], {"priority": "high"})
            await commit_changes(conn, b2, actor_kind="system", actor="fast", action="update")
        pages = await dev.pull()
        assert [c.ticket.id for c in pages[0].changes] == [fast.ticket.id]
        await tx.commit()
    except BaseException:
        await tx.rollback()
        raise
    finally:
        await pool.release(held)
    pages = await dev.pull()
    assert [c.ticket.priority for c in pages[0].changes] == ["urgent"]
    assert dev.replica.converged()


async def test_I3_scope_exit_entry_and_no_leak(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    (other,) = await make_tickets(pool, world, 1, crew="ss-1", service_type="Pothole Repair")
    a = DeviceClient(http, server.url, world.device("san-1").token)
    b = DeviceClient(http, server.url, world.device("san-2").token)
    await a.pull(), await b.pull()
    assert set(a.replica.tickets) == {t.ticket.id} and b.replica.tickets == {}
    await a.push([a.mutation("add_note", t.ticket.id, note("left a couch"))])
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.assign(t.ticket.id, "san-2")
    pa, pb = await a.pull(), await b.pull()
    assert [(c.kind, c.reason) for c in pa[0].changes] == [("remove", "reassigned")]
    (entry,) = pb[0].changes
    assert entry.kind == "upsert" and [n.text for n in entry.ticket.notes] == ["left a couch"]  # back-fill, whole ticket
    assert a.replica.tickets == {} and a.replica.converged() and b.replica.converged()
    # another department's ticket and a ticket that does not exist get the same answer, without data
    res = await a.push([a.mutation("acknowledge", other.ticket.id), a.mutation("acknowledge", uuid.uuid4())])
    assert [(r.status, r.reason) for r in res.results] == [("rejected", "not_in_scope")] * 2
    assert all(r.ticket is None and r.removed is None for r in res.results)


async def test_I4_convergence_byte_for_byte(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    recs = await make_tickets(pool, world, 5)
    a = DeviceClient(http, server.url, world.device("san-1", 0).token, MSGPACK)
    b = DeviceClient(http, server.url, world.device("san-1", 1).token, JSON)
    await a.pull(), await b.pull()
    await a.push([a.mutation("start", recs[0].ticket.id), a.mutation("set_items", recs[1].ticket.id, {"items": [{"item_type": "mattress", "count": 2}]})])
    await b.push([b.mutation("add_note", recs[0].ticket.id, note()), b.mutation("complete", recs[2].ticket.id, {"resolution_code": "collected"})])
    await a.pull(), await b.pull()
    async with pool.acquire() as conn:
        server_view = await load_tickets(conn, [r["id"] for r in await conn.fetch(
            "SELECT id FROM tickets WHERE holder_crew_id = $1", world.crews["san-1"])])
    expected = scope_checksum(r.ticket for r in server_view.values())
    for dev in (a, b):
        assert dev.replica.local_checksum() == dev.replica.checksum == expected
        assert {k: v.model_dump(mode="json") for k, v in dev.replica.tickets.items()} == {
            k: v.ticket.model_dump(mode="json") for k, v in server_view.items()}


async def test_I5_late_field_report_after_reassignment(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    queued = [dev.mutation("start", t.ticket.id), dev.mutation("complete", t.ticket.id, {"resolution_code": "collected"})]
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.assign(t.ticket.id, "san-2")  # while the truck is offline
    res = await dev.push(queued)
    assert [(r.status, r.reason) for r in res.results] == [("rejected", "not_in_scope"), ("merged", "late_field_report")]
    assert res.results[1].removed == "reassigned" and res.results[1].conflicts[0].kind == "late_field_report"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM tickets WHERE id = $1", t.ticket.id) == "completed"
    (c,) = await sup.conflicts(kind="late_field_report")
    assert c["ticket_id"] == str(t.ticket.id) and c["crew"] == "san-1"
    resolved = await sup.call("POST", f"/v1/conflicts/{c['id']}/resolve", {"resolution": "san-2 told to skip"})
    assert resolved["resolved_by"] == "sup-sanitation"
    assert await sup.conflicts() == []


async def test_I6_poison_pill_does_not_block(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    batch = [
        dev.mutation("acknowledge", t.ticket.id),
        dev.mutation("add_note", t.ticket.id, {"note_id": "not-a-uuid", "text": "x"}),
        dev.mutation("teleport", t.ticket.id),
        dev.mutation("complete", t.ticket.id, {"resolution_code": "collected", "priority": "urgent"}),
        dev.mutation("pause", t.ticket.id),  # illegal from acknowledged
        dev.mutation("start", t.ticket.id),
    ]
    res = await dev.push(batch)
    assert [(r.status, r.reason) for r in res.results] == [
        ("applied", None), ("rejected", "invalid_args"), ("rejected", "unknown_op"),
        ("rejected", "supervisor_owned"), ("rejected", "illegal_transition"), ("applied", None)]
    assert res.last_seq == 6
    res = await dev.push([dev.mutation("add_note", t.ticket.id, note())])
    assert res.results[0].status == "applied" and res.last_seq == 7
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT priority FROM tickets WHERE id = $1", t.ticket.id) == "normal"


async def test_I7_atomic_page_set_and_write_checkpoint(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    recs = await make_tickets(pool, world, 6)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    first = await dev.pull_once(None, limit=2)
    assert first.has_more
    # a write lands between pages: the rest of this page set must still describe the first snapshot
    other = DeviceClient(http, server.url, world.device("san-1", 1).token)
    res = await other.push([other.mutation("add_note", recs[-1].ticket.id, note("between pages"))])
    pages = [first]
    while pages[-1].has_more:
        pages.append(await dev.pull_once(pages[-1].cursor, limit=2))
    dev.replica.apply_pages(pages)
    assert all(not t.notes for t in dev.replica.tickets.values())
    assert dev.replica.converged()  # checksum of the first snapshot, which the page set reproduces exactly
    assert res.server_version >= pages[-1].watermark  # not yet known to be in this snapshot
    again = await dev.pull()
    assert again[-1].watermark > res.server_version  # now it is
    assert [n.text for n in dev.replica.tickets[recs[-1].ticket.id].notes] == ["between pages"]
    assert dev.replica.converged()


async def test_expired_cursor_gets_snapshot(settings, db_dsn: str, pool: asyncpg.Pool, world: World, http) -> None:
    srv = await start_server(settings.model_copy(update={"retention_days": 1e-9}), db_dsn)
    try:
        recs = await make_tickets(pool, world, 2)
        dev = DeviceClient(http, srv.url, world.device("san-1").token)
        await dev.pull()
        await asyncio.sleep(1.1)  # cursors carry whole seconds
        pages = await dev.pull()
        assert pages[0].reset and {c.ticket.id for c in pages[0].changes} == {r.ticket.id for r in recs}
    finally:
        await srv.runner.cleanup()


async def test_tampered_and_foreign_cursor(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    await make_tickets(pool, world, 1)
    a = DeviceClient(http, server.url, world.device("san-1").token)
    b = DeviceClient(http, server.url, world.device("san-2").token)
    page = await a.pull_once(None)
    bad = page.cursor[:-2] + ("A" if page.cursor[-2] != "A" else "B") + page.cursor[-1]
    for dev, cursor in ((a, bad), (b, page.cursor)):
        status, body = await dev.raw("/v1/sync/pull", encode(PullRequest(cursor=cursor), dev.media))
        assert status == 400


async def test_restart_with_same_outbox(settings, db_dsn: str, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    srv = await start_server(settings, db_dsn)
    dev = DeviceClient(http, srv.url, world.device("san-1").token)
    await dev.pull()
    outbox = [dev.mutation("start", t.ticket.id), dev.mutation("add_note", t.ticket.id, note("crash"))]
    first = await dev.push(outbox)
    await srv.runner.cleanup()  # server restarts; the phone never saw the response and restarts too
    srv = await start_server(settings, db_dsn)
    try:
        dev2 = DeviceClient(http, srv.url, world.device("san-1").token)
        again = await dev2.push(outbox)
        assert [r.status for r in again.results] == [r.status for r in first.results]
        assert all(r.replayed for r in again.results)
        await dev2.pull()
        assert [n.text for n in dev2.replica.tickets[t.ticket.id].notes] == ["crash"]
    finally:
        await srv.runner.cleanup()

"""Concurrent pushes of different devices share one transaction (engine/push_batch.py) over real HTTP and PostgreSQL:
every member applied exactly once with its own answer, members that share a ticket or a device kept in arrival order
in separate transactions, a member refused or failing never failing the others, replays answered as stored, no
deadlock between batches, and a client that leaves mid-batch losing nothing and getting nothing twice.

A batch is formed deterministically: the batcher runs one transaction at a time, a "gate" push waits on its device row
(held by the test), the members queue behind it, and releasing the row lets them go as one transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from sync_server.app import create_app, start_runner
from sync_server.domain.conflicts import DeviceCtx
from sync_server.engine.push import push_many
from sync_server.engine.push_batch import PushBatcher
from sync_server.engine.push_parse import parse_batch
from sync_server.keys import PUSHES, WAKEUPS
from sync_server.settings import Settings
from tests.factories import World, build_world, make_tickets
from tests.syncclient import DeviceClient


class _Srv:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app, self.url = app, url

    @property
    def batcher(self) -> PushBatcher:
        return self.app[PUSHES]


@pytest.fixture
async def srv(settings: Settings, db_dsn: str) -> AsyncIterator[_Srv]:
    """The real app with a batcher that runs one transaction at a time, so the test decides what waits together."""
    app = create_app(settings, db_dsn)
    app[PUSHES] = PushBatcher(max_batch=8, max_inflight=1)
    runner = await start_runner(app, access_log=None)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield _Srv(app, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


@pytest.fixture
async def big(pool: asyncpg.Pool) -> World:
    """Three crews of four devices each."""
    return await build_world(pool, devices_per_crew=4)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


NOW = datetime.now(timezone.utc).isoformat()


def _note(text: str) -> dict[str, str]:
    return {"note_id": str(uuid.uuid4()), "text": text}


async def _gated(pool: asyncpg.Pool, srv: _Srv, gate: DeviceClient, gate_device: str, gate_ticket: uuid.UUID,
                 pushes: list[Any], queued: int, hold: int | None = None) -> list[Any]:
    """Run `pushes` (coroutines) while the gate device's row is held, so they queue behind the gate's push; release
    once `queued` of them wait (and push number `hold` has ended), and return their outcomes (the gate's first)."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", gate_device)
        gate_task = asyncio.ensure_future(gate.push([gate.mutation("add_note", gate_ticket, _note("gate"))]))
        while srv.batcher.transactions < 1:  # the gate's transaction is running (and waits on the row)
            await asyncio.sleep(0.01)
        tasks = [asyncio.ensure_future(p) for p in pushes]
        while srv.batcher.waiting < queued:
            await asyncio.sleep(0.01)
        if hold is not None:
            await asyncio.wait([tasks[hold]])
    finally:
        await tx.rollback()
        await pool.release(conn)
    return await asyncio.gather(gate_task, *tasks, return_exceptions=True)


async def test_waiting_pushes_of_many_devices_commit_in_one_transaction_each_exactly_once(
        srv: _Srv, pool: asyncpg.Pool, big: World, http: aiohttp.ClientSession) -> None:
    recs = await make_tickets(pool, big, 4, crew="san-1") + await make_tickets(pool, big, 2, crew="ss-1")
    devices = [big.device("san-1", i) for i in range(4)] + [big.device("ss-1", 0), big.device("ss-1", 1)]
    clients = [DeviceClient(http, srv.url, d.token) for d in devices]
    for c in clients:
        await c.pull()
    gate_dev = big.device("san-2", 0)
    (gate_ticket,) = await make_tickets(pool, big, 1, crew="san-2")
    gate = DeviceClient(http, srv.url, gate_dev.token)
    # device i acknowledges ticket i and notes it
    bodies = [[c.mutation("acknowledge", r.ticket.id), c.mutation("add_note", r.ticket.id, _note(f"n{i}"))]
              for i, (c, r) in enumerate(zip(clients, recs))]
    versions = [c.replica.tickets[r.ticket.id].version for c, r in zip(clients, recs)]
    out = await _gated(pool, srv, gate, gate_dev.device_id, gate_ticket.ticket.id,
                       [c.push(b) for c, b in zip(clients, bodies)], queued=6)
    assert not any(isinstance(o, BaseException) for o in out), out
    assert (srv.batcher.transactions, srv.batcher.shared, srv.batcher.fallbacks) == (2, 1, 0)
    answers = out[1:]
    assert [[r.status.value for r in a.results] for a in answers] == [["applied", "applied"]] * 6
    assert [a.last_seq for a in answers] == [2] * 6
    # one transaction: one server_version for all six, newer than the gate's
    assert len({a.server_version for a in answers}) == 1 and answers[0].server_version > out[0].server_version
    # the ticket travels once, on its last result, acknowledged, one version up (one change per push)
    for a, r, v in zip(answers, recs, versions):
        assert a.results[0].ticket is None and a.results[1].ticket.id == r.ticket.id
        assert a.results[1].ticket.status.value == "acknowledged" and a.results[1].ticket.version == v + 1
        assert [n.text for n in a.results[1].ticket.notes] == [f"n{recs.index(r)}"]
    async with pool.acquire() as conn:
        seqs = {r["id"]: r["last_seq"] for r in await conn.fetch("SELECT id, last_seq FROM devices")}
        assert [seqs[d.device_id] for d in devices] == [2] * 6 and seqs[gate_dev.device_id] == 1
        assert await conn.fetchval("SELECT count(*) FROM mutation_results") == 13  # 6 x 2 + the gate's
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes") == 7
        per_ticket = dict(await conn.fetch("SELECT ticket_id, count(*) FROM changes WHERE actor <> 'test'"
                                           " GROUP BY ticket_id"))
        assert [per_ticket[r.ticket.id] for r in recs] == [1] * 6  # both mutations of a push: one change row
        actors = dict(await conn.fetch("SELECT ticket_id, actor FROM changes WHERE actor <> 'test'"))
        assert [actors[r.ticket.id] for r in recs] == [d.device_id for d in devices]
    # each retry gets its first answer back, marked as a replay, and applies nothing
    for c, b, a in zip(clients, bodies, answers):
        again = await c.push(b)
        assert [r.replayed for r in again.results] == [True, True]
        assert [r.model_dump(exclude={"replayed"}) for r in again.results] == \
               [r.model_dump(exclude={"replayed"}) for r in a.results]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes") == 7
    # the live feed is woken for the batch's departments (after commit, by the process's sender)
    for _ in range(200):
        if srv.app[WAKEUPS].sent >= 1:
            break
        await asyncio.sleep(0.01)
    assert srv.app[WAKEUPS].sent >= 1


async def test_pushes_sharing_a_ticket_or_a_device_wait_for_the_next_transaction_in_arrival_order(
        srv: _Srv, pool: asyncpg.Pool, big: World, http: aiohttp.ClientSession) -> None:
    t1, t2 = await make_tickets(pool, big, 2, crew="san-1")
    a, b, c = (DeviceClient(http, srv.url, big.device("san-1", i).token) for i in range(3))
    for d in (a, b, c):
        await d.pull()
    v1 = a.replica.tickets[t1.ticket.id].version
    gate_dev = big.device("san-2", 0)
    (gate_ticket,) = await make_tickets(pool, big, 1, crew="san-2")
    gate = DeviceClient(http, srv.url, gate_dev.token)
    # a acknowledges t1, then b starts t1 (same ticket), c notes t2, and a pushes again (same device)
    first_a = [a.mutation("acknowledge", t1.ticket.id)]
    then_b = [b.mutation("start", t1.ticket.id)]
    on_t2 = [c.mutation("add_note", t2.ticket.id, _note("t2"))]
    second_a = [a.mutation("add_note", t1.ticket.id, _note("second"))]
    out = await _gated(pool, srv, gate, gate_dev.device_id, gate_ticket.ticket.id,
                       [a.push(first_a), b.push(then_b), c.push(on_t2), a.push(second_a)], queued=4)
    assert not any(isinstance(o, BaseException) for o in out), out
    _, ra, rb, rc, ra2 = out
    # transactions: the gate; {a, c}; {b}: it shares t1 with a; a's second push shares a's device and t1 with b,
    # which is before it, so it waits behind b (arrival order kept among pushes that share something)
    assert (srv.batcher.transactions, srv.batcher.shared) == (4, 1)
    assert ra.server_version == rc.server_version < rb.server_version < ra2.server_version
    # exactly what sequential pushes give: acknowledged by a, then started by b
    assert ra.results[0].status.value == "applied" and ra.results[0].ticket.status.value == "acknowledged"
    assert rb.results[0].status.value == "applied" and rb.results[0].ticket.status.value == "in_progress"
    assert rb.results[0].ticket.version == v1 + 2 and ra2.results[0].ticket.version == v1 + 3
    assert ra2.last_seq == 2 and [n.text for n in ra2.results[0].ticket.notes] == ["second"]
    assert rc.results[0].status.value == "applied"


async def test_a_member_refused_whole_gets_its_error_and_the_others_commit(
        srv: _Srv, pool: asyncpg.Pool, big: World, http: aiohttp.ClientSession) -> None:
    recs = await make_tickets(pool, big, 4, crew="san-1")
    ok1, gap, revoked, ok2 = (DeviceClient(http, srv.url, big.device("san-1", i).token) for i in range(4))
    for d in (ok1, gap, revoked, ok2):
        await d.pull()
    gate_dev = big.device("san-2", 0)
    (gate_ticket,) = await make_tickets(pool, big, 1, crew="san-2")
    gate = DeviceClient(http, srv.url, gate_dev.token)
    bodies = [[ok1.mutation("start", recs[0].ticket.id)],
              [gap.mutation("start", recs[1].ticket.id, seq=5)],  # the device has applied nothing: seq_gap
              [revoked.mutation("start", recs[2].ticket.id)],
              # an unknown op is rejected on its own and advances the seq (I6), without touching the batch
              [ok2.mutation("start", recs[3].ticket.id), {**ok2.mutation("start", recs[3].ticket.id), "op": "fly"}]]
    revoked_id = big.device("san-1", 2).device_id
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", gate_dev.device_id)
        gate_task = asyncio.ensure_future(gate.push([gate.mutation("add_note", gate_ticket.ticket.id, _note("g"))]))
        while srv.batcher.transactions < 1:
            await asyncio.sleep(0.01)
        tasks = [asyncio.ensure_future(d.push_raw(b)) for d, b in zip((ok1, gap, revoked, ok2), bodies)]
        while srv.batcher.waiting < 4:  # every request authenticated and waiting behind the gate
            await asyncio.sleep(0.01)
        # revoked after its request was authenticated: the re-check under its device row lock refuses it
        async with pool.acquire() as c2:
            await c2.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", revoked_id)
    finally:
        await tx.rollback()
        await pool.release(conn)
    out = await asyncio.gather(gate_task, *tasks)
    (s1, r1), (sg, rg), (sr, rr), (s2, r2) = out[1:]
    assert (srv.batcher.transactions, srv.batcher.shared, srv.batcher.fallbacks) == (2, 1, 0)
    assert s1 == 200 and [r.status.value for r in r1.results] == ["applied"]
    assert sg == 409 and rg["error"]["code"] == "seq_gap" and rg["error"]["details"]["expected_seq"] == 1
    assert s2 == 200 and [(r.status.value, r.reason and r.reason.value) for r in r2.results] == \
           [("applied", None), ("rejected", "unknown_op")]
    assert sr == 401 and rr["error"]["code"] == "token_revoked"
    assert r1.server_version == r2.server_version
    async with pool.acquire() as conn:
        status = dict(await conn.fetch("SELECT id, status FROM tickets"))
        assert [status[r.ticket.id] for r in recs] == ["in_progress", "assigned", "assigned", "in_progress"]
        seqs = dict(await conn.fetch("SELECT id, last_seq FROM devices"))
        assert [seqs[big.device("san-1", i).device_id] for i in range(4)] == [1, 0, 0, 2]


async def test_a_member_failing_in_the_database_fails_alone(
        srv: _Srv, pool: asyncpg.Pool, big: World, http: aiohttp.ClientSession) -> None:
    recs = await make_tickets(pool, big, 3, crew="san-1")
    good1, bad, good2 = (DeviceClient(http, srv.url, big.device("san-1", i).token) for i in range(3))
    for d in (good1, bad, good2):
        await d.pull()
    bad_id = big.device("san-1", 1).device_id
    async with pool.acquire() as conn:  # a stored result for seq 1 the device row does not know of: its write fails
        await conn.execute("INSERT INTO mutation_results (device_id, seq, op, status, result, server_version)"
                           " VALUES ($1, 1, 'start', 'applied', '{}', 1)", bad_id)
    gate_dev = big.device("san-2", 0)
    (gate_ticket,) = await make_tickets(pool, big, 1, crew="san-2")
    gate = DeviceClient(http, srv.url, gate_dev.token)
    bodies = [[good1.mutation("start", recs[0].ticket.id)], [bad.mutation("start", recs[1].ticket.id)],
              [good2.mutation("start", recs[2].ticket.id)]]
    out = await _gated(pool, srv, gate, gate_dev.device_id, gate_ticket.ticket.id,
                       [good1.push_raw(bodies[0]), bad.push_raw(bodies[1]), good2.push_raw(bodies[2])], queued=3)
    (s1, r1), (sb, rb), (s2, r2) = out[1:]
    # the shared transaction failed; each member ran again alone: the two good ones commit, the bad one fails alone
    assert (srv.batcher.transactions, srv.batcher.shared, srv.batcher.fallbacks) == (2, 1, 1)
    assert s1 == 200 and s2 == 200 and r1.results[0].status.value == r2.results[0].status.value == "applied"
    assert r1.server_version != r2.server_version  # two transactions
    assert sb == 500 and rb["error"]["code"] == "internal_error"
    async with pool.acquire() as conn:
        status = dict(await conn.fetch("SELECT id, status FROM tickets"))
        assert [status[r.ticket.id] for r in recs] == ["in_progress", "assigned", "in_progress"]
        await conn.execute("DELETE FROM mutation_results WHERE device_id = $1", bad_id)
    s, again = await bad.push_raw(bodies[1])  # once the bad row is gone, its retry applies
    assert s == 200 and again.results[0].status.value == "applied" and not again.results[0].replayed


async def test_a_client_that_leaves_mid_batch_loses_nothing_and_gets_nothing_twice(
        srv: _Srv, pool: asyncpg.Pool, big: World, http: aiohttp.ClientSession) -> None:
    recs = await make_tickets(pool, big, 2, crew="san-1")
    stay, leave = (DeviceClient(http, srv.url, big.device("san-1", i).token) for i in range(2))
    for d in (stay, leave):
        await d.pull()
    gate_dev = big.device("san-2", 0)
    (gate_ticket,) = await make_tickets(pool, big, 1, crew="san-2")
    gate = DeviceClient(http, srv.url, gate_dev.token)
    left_body = [leave.mutation("add_note", recs[1].ticket.id, _note("left"))]
    stay_body = [stay.mutation("add_note", recs[0].ticket.id, _note("stayed"))]

    async def push_and_hang_up() -> None:
        async with aiohttp.ClientSession() as own:  # its own connection, closed while the push waits
            c = DeviceClient(own, srv.url, leave.token)
            await asyncio.wait_for(c.push(left_body), 0.3)

    out = await _gated(pool, srv, gate, gate_dev.device_id, gate_ticket.ticket.id,
                       [stay.push(stay_body), push_and_hang_up()], queued=2, hold=1)
    assert out[1].results[0].status.value == "applied"
    assert isinstance(out[2], asyncio.TimeoutError)
    # the push that lost its client (its handler may run on) was applied at most once: its retry is answered, and
    # there is one note
    again = await leave.push(left_body)
    assert again.last_seq == 1 and again.results[0].status.value == "applied"
    async with pool.acquire() as conn:
        texts = sorted(r["text"] for r in await conn.fetch("SELECT text FROM ticket_notes"))
        assert texts == ["gate", "left", "stayed"]
    # a push cancelled while it waits is never sent
    batcher = PushBatcher(max_batch=8, max_inflight=1)
    dev = lambda i: DeviceCtx(big.device("ss-1", i).device_id, big.crews["ss-1"], big.departments["street_services"])  # noqa: E731
    (t,) = await make_tickets(pool, big, 1, crew="ss-1")
    raw = lambda text: [{"seq": 1, "op": "add_note", "ticket_id": str(t.ticket.id), "args": _note(text), "device_time": NOW}]  # noqa: E731
    first = asyncio.ensure_future(batcher.push(pool, dev(0), parse_batch(raw("first"))))
    cancelled = asyncio.ensure_future(batcher.push(pool, dev(1), parse_batch(raw("cancelled"))))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert (await first)["last_seq"] == 1
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert batcher.transactions == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE text = 'cancelled'") == 0


async def test_batches_locking_overlapping_tickets_in_opposite_orders_never_deadlock(
        db_dsn: str, pool: asyncpg.Pool, big: World) -> None:
    t1, t2 = await make_tickets(pool, big, 2, crew="san-1")
    u1, u2 = await make_tickets(pool, big, 2, crew="san-2")
    own = await asyncpg.create_pool(db_dsn, min_size=4, max_size=4)

    def dev(crew: str, i: int) -> DeviceCtx:
        return DeviceCtx(big.device(crew, i).device_id, big.crews[crew], big.departments["sanitation"])

    def body(seq: int, tickets: list[Any]) -> Any:
        return parse_batch([{"seq": seq + k, "op": "add_note", "ticket_id": str(t.ticket.id), "args": _note("x"),
                             "device_time": NOW}
                            for k, t in enumerate(tickets)])

    try:
        for rnd in range(15):
            seq = 1 + 2 * rnd
            # two batches at once, each of two devices of different crews, naming the same tickets in opposite
            # orders, and a single push of a third device across both
            outs = await asyncio.gather(
                push_many(own, [(dev("san-1", 0), body(seq, [t1, t2])), (dev("san-2", 0), body(seq, [u2, u1]))]),
                push_many(own, [(dev("san-1", 1), body(seq, [t2, t1])), (dev("san-2", 1), body(seq, [u1, u2]))]),
                push_many(own, [(dev("san-1", 2), body(seq, [t2, t1]))]))
            assert [[o["last_seq"] for o in out] for out in outs] == [[seq + 1, seq + 1], [seq + 1, seq + 1], [seq + 1]]
    finally:
        await own.close()  # its backends exit, which flushes their statistics
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes") == 15 * 5 * 2
        assert await conn.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()") == 0

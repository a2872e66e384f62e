"""Concurrent delta pulls share one statement (engine/pull_batch.py): each gets exactly the page its own statement
would have returned, a failed statement fails only its own batch, and nothing waits behind it afterwards."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from sync_server.engine.pull_batch import FirstPages
from sync_server.storage.pull_sql import DeltaAsk, first_pages
from sync_server.engine.changes import commit_changes
from sync_server.storage.tickets import load_tickets, lock_tickets, update_tickets
from tests.factories import World, make_tickets, set_priority


async def _head(pool: asyncpg.Pool) -> str:
    return await pool.fetchval("SELECT pg_current_snapshot()::text")


def _page(page) -> tuple:  # noqa: ANN001 - a FirstPage
    rows = [(str(r["ticket_id"]), r["holder_crew_id"], r["prev_crew_id"], r["removal_reason"], bytes(r["doc"]))
            for r in page.rows]
    return page.head, None if page.hashes is None else len(page.hashes), rows


async def test_waiting_pulls_share_one_statement_and_each_gets_its_own_page(pool: asyncpg.Pool, world: World) -> None:
    a = await make_tickets(pool, world, 3, crew="san-1")
    b = await make_tickets(pool, world, 2, crew="san-2")
    await make_tickets(pool, world, 1, crew="ss-1")
    base = await _head(pool)
    async with pool.acquire() as conn, conn.transaction():
        await set_priority(conn, a[0].ticket.id, "urgent")
    async with pool.acquire() as conn, conn.transaction():  # a reassignment through the one change path
        before = await load_tickets(conn, [b[0].ticket.id])
        await lock_tickets(conn, [b[0].ticket.id])
        await update_tickets(conn, [b[0].ticket.id], {"crew_id": world.crews["san-1"]})
        await commit_changes(conn, before, actor_kind="system", actor="test", action="assign")
    san1, san2, ss1 = world.crews["san-1"], world.crews["san-2"], world.crews["ss-1"]
    asks = [DeltaAsk(san1, base, 501, False), DeltaAsk(san2, base, 501, False), DeltaAsk(ss1, base, 501, False),
            DeltaAsk(san1, base, 2, True), DeltaAsk(ss1, base, 501, True)]
    alone = []
    async with pool.acquire() as conn:
        for ask in asks:
            (page,) = await first_pages(conn, [ask], packed=True)
            alone.append(_page(page))
    batcher = FirstPages(max_batch=16, max_inflight=1)
    got = await asyncio.gather(*(batcher.read(pool, ask, True) for ask in asks))
    assert batcher.statements == 2  # the first alone (nothing was running), the four that waited behind it together
    assert [_page(p) for p in got] == alone
    a0, b0 = sorted([str(a[0].ticket.id), str(b[0].ticket.id)])
    by_ticket = {str(a[0].ticket.id): (san1, None, None), str(b[0].ticket.id): (san1, san2, "reassigned")}
    assert [r[0] for r in alone[0][2]] == [a0, b0] and [r[1:4] for r in alone[0][2]] == [by_ticket[a0], by_ticket[b0]]
    assert alone[0][1] == 4  # san-1 now holds 4 tickets: hashes read because the page is not empty
    assert [r[0] for r in alone[1][2]] == [str(b[0].ticket.id)]  # san-2 learns the ticket left it
    assert alone[1][2][0][1:3] == (san1, san2)
    assert alone[2][1:] == (None, [])  # ss-1: an empty poll, no hashes read
    assert len(alone[3][2]) == 2 and alone[3][1] == 4  # the limit is the ask's own
    assert alone[4][1:] == (1, [])  # empty, but the cursor had no checksum: hashes read


async def test_a_failed_statement_fails_its_batch_only_and_the_next_pulls_are_served(pool: asyncpg.Pool,
                                                                                      world: World) -> None:
    await make_tickets(pool, world, 1, crew="san-1")
    base = await _head(pool)
    batcher = FirstPages(max_batch=16, max_inflight=1)
    good = DeltaAsk(world.crews["san-1"], base, 10, False)
    first, broken, tail = await asyncio.gather(
        batcher.read(pool, good, True), batcher.read(pool, DeltaAsk(world.crews["san-1"], "not a snapshot", 10, False), True),
        batcher.read(pool, good, True), return_exceptions=True)
    assert not isinstance(first, BaseException) and first.rows == []  # sent alone before the others arrived
    assert isinstance(broken, asyncpg.PostgresError) and tail is broken  # one statement, one outcome for both
    again = await batcher.read(pool, good, True)
    assert again.rows == [] and batcher.statements == 3


async def test_a_pull_cancelled_while_waiting_is_not_read(pool: asyncpg.Pool, world: World) -> None:
    base = await _head(pool)
    batcher = FirstPages(max_batch=16, max_inflight=1)
    ask = DeltaAsk(world.crews["san-1"], base, 10, False)
    running = asyncio.ensure_future(batcher.read(pool, ask, True))
    waiting = asyncio.ensure_future(batcher.read(pool, ask, True))
    await asyncio.sleep(0)
    waiting.cancel()
    assert (await running).rows == []
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert batcher.statements == 1

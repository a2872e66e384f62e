"""The live reader's one-statement cycle (storage/feed.advance): the watermark and the events below it come from one
snapshot, so a change committed after an older transaction that is still open is held back until that one ends (I2),
and then arrives in stream order; with nothing new the watermark alone comes back."""

from __future__ import annotations

import asyncpg

from sync_server.storage import feed
from tests.factories import World, make_tickets


async def test_a_change_waits_for_an_older_open_transaction_then_arrives(pool: asyncpg.Pool, world: World) -> None:
    dept = world.departments["sanitation"]
    async with pool.acquire() as conn:
        lo = await feed.watermark(conn)
        assert await feed.advance(conn, [dept], lo) == (lo, [])  # nothing committed since: the watermark alone
    older = await pool.acquire()
    try:
        tx = older.transaction()
        await tx.start()
        held = int(await older.fetchval("SELECT pg_current_xact_id()::text::bigint"))  # holds an xid, writes nothing
        (t,) = await make_tickets(pool, world, 1, crew="san-1")  # commits after the held one began
        async with pool.acquire() as conn:
            hi, rows = await feed.advance(conn, [dept], lo)
        assert hi <= held and rows == []
        await tx.commit()
    finally:
        await pool.release(older)
    async with pool.acquire() as conn:
        hi, rows = await feed.advance(conn, [dept], lo)
        assert hi > held
        assert [(r["ticket_id"], r["rank"], r["src"]) for r in rows] == [(t.ticket.id, 1, 0)]
        assert rows[0]["x"] > held and rows[0]["department_id"] == dept
        # another department's watcher sees none of it, and a reader already at the head gets nothing again
        assert (await feed.advance(conn, [world.departments["street_services"]], lo))[1] == []
        assert (await feed.advance(conn, [dept], hi))[1] == []

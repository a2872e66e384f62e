"""Two crews' pushes racing on one client-made note id (I6): one note, on one ticket; the loser is told
`already_exists` in a 200 answer — never a 500 from the primary key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_racing_pushes_with_one_note_id_give_one_note_and_a_typed_refusal(
        server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession) -> None:
    (t1,) = await make_tickets(pool, world, 1, crew="san-1")
    (t2,) = await make_tickets(pool, world, 1, crew="san-2")
    a = DeviceClient(http, server.url, world.device("san-1").token)
    b = DeviceClient(http, server.url, world.device("san-2").token)
    await a.pull()
    await b.pull()
    note_id = str(uuid.uuid4())
    ma = a.mutation("add_note", t1.ticket.id, {"note_id": note_id, "text": "from san-1"})
    mb = b.mutation("add_note", t2.ticket.id, {"note_id": note_id, "text": "from san-2"})
    # Hold both tickets so both pushes read "note id unused" and then insert it one after the other.
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM tickets WHERE id = ANY($1::uuid[]) FOR UPDATE", [t1.ticket.id, t2.ticket.id])
        pushes = [asyncio.create_task(a.push([ma])), asyncio.create_task(b.push([mb]))]
        for _ in range(200):  # bounded: both pushes are waiting on the ticket locks
            waiting = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                          " AND application_name = 'fieldsync'")
            if waiting >= 2:
                break
            await asyncio.sleep(0.05)
        assert waiting >= 2
        await tx.rollback()
    ra, rb = await asyncio.gather(*pushes)  # both answered 200 (the client raises on any other status)
    outcomes = sorted([(ra.results[0].status.value, ra.results[0].reason.value if ra.results[0].reason else None),
                       (rb.results[0].status.value, rb.results[0].reason.value if rb.results[0].reason else None)])
    assert outcomes == [("applied", None), ("rejected", "already_exists")]
    rows = await pool.fetch("SELECT ticket_id FROM ticket_notes WHERE id = $1", uuid.UUID(note_id))
    assert len(rows) == 1 and rows[0]["ticket_id"] in (t1.ticket.id, t2.ticket.id)

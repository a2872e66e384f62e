"""Pull and push over real HTTP: snapshot, delta, paging, exactly-once, convergence."""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import pytest

from protocol import MSGPACK, JSON
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize("media", [MSGPACK, JSON])
async def test_snapshot_then_delta(server: Server, pool: asyncpg.Pool, world: World, http, media: str) -> None:
    recs = await make_tickets(pool, world, 7, crew="san-1")
    await make_tickets(pool, world, 3, crew="san-2")
    dev = DeviceClient(http, server.url, world.device("san-1").token, media)
    pages = await dev.pull(limit=3)
    assert len(pages) == 3 and pages[0].reset
    assert set(dev.replica.tickets) == {r.ticket.id for r in recs}
    assert dev.replica.converged()
    # nothing new: an empty delta, same checksum
    pages = await dev.pull()
    assert pages[0].changes == [] and not pages[0].reset and dev.replica.converged()


async def test_push_applies_once_and_converges(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    recs = await make_tickets(pool, world, 2)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    t = recs[0].ticket.id
    muts = [dev.mutation("acknowledge", t), dev.mutation("start", t),
            dev.mutation("add_note", t, {"note_id": str(uuid.uuid4()), "text": "two mattresses"}),
            dev.mutation("complete", t, {"resolution_code": "collected"})]
    resp = await dev.push(muts)
    assert [r.status for r in resp.results] == ["applied"] * 4
    assert resp.results[-1].ticket is not None and resp.results[-1].ticket.status == "completed"
    assert resp.last_seq == 4
    # lost response: the same batch again returns the stored results, nothing applied twice
    again = await dev.push(muts)
    assert [r.replayed for r in again.results] == [True] * 4
    assert [r.status for r in again.results] == ["applied"] * 4
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = $1", t) == 1
        assert await conn.fetchval("SELECT count(*) FROM mutation_results") == 4
    await dev.pull()
    assert dev.replica.converged()
    assert dev.replica.tickets[t].status == "completed"
    assert len(dev.replica.tickets[t].notes) == 1

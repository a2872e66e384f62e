"""Empty polls answer from the crew's change-log high-water mark without re-reading the scope, and never skip a late committer (I2)."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets, set_priority
from tests.syncclient import DeviceClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_empty_poll_keeps_checksum_and_a_held_writer_still_arrives(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    """A writer open across an empty poll is delivered by the next poll; another crew's change never wakes this one."""
    mine = await make_tickets(pool, world, 3, crew="san-1")
    (theirs,) = await make_tickets(pool, world, 1, crew="san-2")
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    first = await dev.pull()
    checksum = first[-1].scope_checksum
    async with pool.acquire() as conn, conn.transaction():
        await set_priority(conn, theirs.ticket.id, "high")  # another crew's change: still an empty poll for san-1
    held = await pool.acquire()
    tx = held.transaction()
    await tx.start()
    try:
        await set_priority(held, mine[0].ticket.id, "urgent")
        pages = await dev.pull()  # the writer has not committed: nothing to see, same scope, same checksum
        assert (pages[0].changes, pages[0].scope_checksum, pages[0].has_more) == ([], checksum, False)
        await tx.commit()
    except BaseException:
        await tx.rollback()
        raise
    finally:
        await pool.release(held)
    pages = await dev.pull()
    assert [(c.ticket.id, c.ticket.priority) for c in pages[0].changes] == [(mine[0].ticket.id, "urgent")]
    assert pages[0].scope_checksum != checksum and dev.replica.converged()
    again = await dev.pull()
    assert again[0].changes == [] and again[0].scope_checksum == pages[0].scope_checksum and dev.replica.converged()

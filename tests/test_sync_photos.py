"""attach_photo through the real push: ticket sync never waits for bytes, and the photo turns available by pull (I8)."""

from __future__ import annotations

from datetime import datetime, timezone

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient
from tests.test_uploads_support import noise_jpeg, sha, upload


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


def attach(dev: DeviceClient, tid, data: bytes, kind: str = "after"):
    return dev.mutation("attach_photo", tid, {"sha256": sha(data), "kind": kind,
                                              "taken_at": datetime.now(timezone.utc).isoformat()})


async def test_attach_before_bytes_then_available_after_pull(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    data = noise_jpeg(seed=77)
    (r,) = (await dev.push([attach(dev, t.ticket.id, data)])).results
    assert r.status == "applied" and [p.state for p in r.ticket.photos] == ["pending"]
    up = await upload(http, server.url, dev.token, data, t.ticket.id, chunk=4096)
    assert up.status == 204
    await dev.pull()
    assert [p.state for p in dev.replica.tickets[t.ticket.id].photos] == ["available"]
    assert dev.replica.converged()
    # attaching the same photo again (a retry with a new seq) is a duplicate, not a second photo
    (again,) = (await dev.push([attach(dev, t.ticket.id, data)])).results
    assert again.status == "duplicate"


async def test_bytes_before_attach_are_available_at_once(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    data = noise_jpeg(seed=78)
    assert (await upload(http, server.url, dev.token, data, t.ticket.id, chunk=100_000)).status == 204
    (r,) = (await dev.push([attach(dev, t.ticket.id, data, "before")])).results
    assert [p.state for p in r.ticket.photos] == ["available"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", sha(data)) == 1

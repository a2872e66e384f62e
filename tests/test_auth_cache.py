"""Device auth on the sync path is cached for at most a second: a revoke elsewhere is honoured within it, a revoke
through this process at once, and a push never gets past a revocation (it re-checks under the device-row lock)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import asyncpg
import msgpack
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import MSGPACK, DeviceClient, SupervisorClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


def _code(dev: DeviceClient, body: bytes) -> str:
    err = msgpack.unpackb(body) if dev.media == MSGPACK else json.loads(body)
    return str(err["error"]["code"])


async def _pull_status(dev: DeviceClient) -> tuple[int, str | None]:
    body = msgpack.packb({"cursor": None, "limit": 10}) if dev.media == MSGPACK else json.dumps({"cursor": None, "limit": 10}).encode()
    status, resp = await dev.raw("/v1/sync/pull", body)
    return status, None if status == 200 else _code(dev, resp)


async def test_revoked_elsewhere_is_refused_within_a_second_and_never_pushes(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    assert (await _pull_status(dev))[0] == 200  # the principal is now cached
    # revoked behind the server's back (another process, the CLI): no cache clear here
    await pool.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", world.device("san-1").device_id)
    status, err = await dev.push_raw([dev.mutation("start", t.ticket.id)])
    assert (status, err["error"]["code"]) == (401, "token_revoked")
    assert await pool.fetchval("SELECT status FROM tickets WHERE id = $1", t.ticket.id) == "assigned"
    await asyncio.sleep(1.05)  # the cache's bound
    assert await _pull_status(dev) == (401, "token_revoked")


async def test_revoked_through_this_server_is_refused_at_once(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    other = DeviceClient(http, server.url, world.device("san-1", 1).token)
    assert (await _pull_status(dev))[0] == 200 and (await _pull_status(other))[0] == 200
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.call("POST", f"/v1/devices/{world.device('san-1').device_id}/revoke", {})
    assert await _pull_status(dev) == (401, "token_revoked")
    assert (await _pull_status(other))[0] == 200  # the crew's other phone is untouched

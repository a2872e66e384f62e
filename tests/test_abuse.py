"""Abuse limits and device credentials: per-device and per-address budgets shared through PostgreSQL by every server
process (429 rate_limited + Retry-After), loopback exempt unless configured; device token rotation with a grace
window for the token used to ask."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from protocol import PROTOCOL_VERSION
from protocol.version import VERSION_HEADER
from sync_server.settings import Settings
from tests.conftest import Server, start_server
from tests.factories import World

LIMITED = {"rate_limit_loopback": True, "rate_limit_device_per_minute": 5, "rate_limit_address_per_minute": 0}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fresh_window(pool: asyncpg.Pool) -> None:
    """Counters use fixed 60 s windows: start a test's burst early in one, so no boundary resets it midway."""
    left = float(await pool.fetchval("SELECT 60 - (extract(epoch FROM now())::numeric % 60)"))
    if left < 15:
        await asyncio.sleep(left + 0.2)


async def get_crews(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, dict, dict]:
    async with http.get(url + "/v1/catalog", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, dict(r.headers), await r.json()


async def pull(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.post(url + "/v1/sync/pull", json={"cursor": None, "limit": 10},
                         headers={"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION)}) as r:
        await r.read()
        return r.status


async def test_device_budget_is_shared_by_two_processes(settings: Settings, db_dsn: str, pool: asyncpg.Pool,
                                                        world: World, http: aiohttp.ClientSession) -> None:
    s = settings.model_copy(update=LIMITED)
    a, b = await start_server(s, db_dsn), await start_server(s, db_dsn)
    try:
        await fresh_window(pool)
        dev, other = world.device("san-1", 0).token, world.device("san-1", 1).token
        statuses = [await pull(http, srv.url, dev) for srv in (a, b, a, b, a)]
        assert statuses == [200] * 5
        async with http.post(b.url + "/v1/sync/pull", json={"cursor": None, "limit": 10},
                             headers={"Authorization": f"Bearer {dev}", VERSION_HEADER: str(PROTOCOL_VERSION)}) as r:
            body = await r.json()
            assert r.status == 429
            assert body["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert await pull(http, a.url, dev) == 429  # the other process counts the same budget
        assert await pull(http, a.url, other) == 200  # another device has its own
    finally:
        await a.runner.cleanup()
        await b.runner.cleanup()


async def test_address_budget_applies_before_authentication(settings: Settings, db_dsn: str, pool: asyncpg.Pool,
                                                            http: aiohttp.ClientSession) -> None:
    s = settings.model_copy(update={"rate_limit_loopback": True, "rate_limit_address_per_minute": 3})
    srv = await start_server(s, db_dsn)
    try:
        await fresh_window(pool)
        guesses = [(await get_crews(http, srv.url, f"fsu_guess{i}"))[0] for i in range(5)]
        assert guesses == [401, 401, 401, 429, 429]
        status, _, _ = await get_crews(http, srv.url, "fsu_whatever")
        assert status == 429
        async with http.get(srv.url + "/healthz") as r:  # probes are never limited
            assert r.status == 200
    finally:
        await srv.runner.cleanup()


async def test_loopback_is_not_limited_by_default(server: Server, pool: asyncpg.Pool, world: World,
                                                  http: aiohttp.ClientSession) -> None:
    assert Settings().rate_limit_device_per_minute > 0 and not Settings().rate_limit_loopback
    statuses = [await pull(http, server.url, world.device("san-1").token) for _ in range(12)]
    assert statuses == [200] * 12
    assert await pool.fetchval("SELECT count(*) FROM rate_limits") == 0


async def rotate(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, dict]:
    async with http.post(url + "/v1/devices/self/rotate", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_token_rotation_keeps_the_asking_token_for_the_grace_window(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(settings.model_copy(update={"device_token_grace_s": 5.0}), db_dsn)
    try:
        dev = world.device("san-1")
        old = dev.token
        status, first = await rotate(http, srv.url, old)
        assert status == 200 and first["device_id"] == dev.device_id and first["token"].startswith("fsd_")
        new_b = first["token"]
        assert await pull(http, srv.url, new_b) == 200
        assert await pull(http, srv.url, old) == 200  # grace window
        # the answer was lost: the device asks again with the token it still has
        status, second = await rotate(http, srv.url, old)
        assert status == 200
        new_c = second["token"]
        assert len({old, new_b, new_c}) == 3
        assert await pull(http, srv.url, new_c) == 200
        assert await pull(http, srv.url, old) == 200
        assert await pull(http, srv.url, new_b) == 401  # superseded before the device ever used it
        assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'device_token_rotated'"
                                   " AND actor = $1", dev.device_id) == 2
        await asyncio.sleep(5.3)  # past the grace window (5 s: three requests must fit in it on a loaded machine)
        assert await pull(http, srv.url, old) == 401  # grace over
        assert await pull(http, srv.url, new_c) == 200
        status, _ = await rotate(http, srv.url, old)
        assert status == 401
        # a revoked device cannot rotate its way back in
        await pool.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", dev.device_id)
        status, body = await rotate(http, srv.url, new_c)
        assert status == 401 and body["error"]["code"] == "token_revoked"
    finally:
        await srv.runner.cleanup()


async def test_a_process_counts_a_slice_of_the_budget_per_upsert(settings: Settings, db_dsn: str, pool: asyncpg.Pool,
                                                                 world: World, http: aiohttp.ClientSession) -> None:
    s = settings.model_copy(update={**LIMITED, "rate_limit_device_per_minute": 100})  # slices of 10
    srv = await start_server(s, db_dsn)
    try:
        await fresh_window(pool)
        dev = world.device("san-1", 0)
        key = f"device:{dev.device_id}"
        assert [await pull(http, srv.url, dev.token) for _ in range(10)] == [200] * 10
        assert await pool.fetchval("SELECT hits FROM rate_limits WHERE key = $1", key) == 10  # one upsert so far
        assert await pull(http, srv.url, dev.token) == 200
        assert await pool.fetchval("SELECT hits FROM rate_limits WHERE key = $1", key) == 20  # the second slice
    finally:
        await srv.runner.cleanup()


async def test_leased_slices_never_let_two_processes_past_the_budget(settings: Settings, db_dsn: str, pool: asyncpg.Pool,
                                                                     world: World, http: aiohttp.ClientSession) -> None:
    s = settings.model_copy(update={**LIMITED, "rate_limit_device_per_minute": 20})  # slices of 2
    a, b = await start_server(s, db_dsn), await start_server(s, db_dsn)
    try:
        await fresh_window(pool)
        dev = world.device("san-1", 0)
        statuses = [await pull(http, srv.url, dev.token) for srv in [a, b] * 15]
        assert statuses == [200] * 20 + [429] * 10
        hits = await pool.fetchval("SELECT hits FROM rate_limits WHERE key = $1", f"device:{dev.device_id}")
        # a spent window is remembered by each process: more requests are refused without counting
        assert [await pull(http, srv.url, dev.token) for srv in (a, b, a, b)] == [429] * 4
        assert await pool.fetchval("SELECT hits FROM rate_limits WHERE key = $1", f"device:{dev.device_id}") == hits
    finally:
        await a.runner.cleanup()
        await b.runner.cleanup()

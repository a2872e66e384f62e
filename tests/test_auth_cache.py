"""Device auth on the sync path is cached: for a minute while the process LISTENs for credential changes (a revoke
anywhere reaches every process by NOTIFY), for at most a second without that connection; a revoke through this process
is honoured at once, and a push never gets past a revocation (it re-checks under the device-row lock)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import asyncpg
import msgpack
import pytest

from sync_server.auth import AuthCache, Principal, Role
from sync_server.keys import AUTH_CACHE
from sync_server.settings import Settings
from tests.conftest import Server, start_server
from tests.factories import World, make_tickets
from tests.syncclient import MSGPACK, DeviceClient, SupervisorClient

# How long a server serves a principal cached while its LISTEN connection vouches for it (AuthCache's default; the
# waits below must stay far under it to prove that a notification, or the loss of the connection, ended the entry).
NOTIFIED_TTL_S = 60.0


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


async def _until(predicate, timeout: float) -> bool:
    """Poll an async or plain predicate every 20 ms until it holds or `timeout` s pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = predicate()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_revoke_through_one_server_is_refused_by_another_through_its_notification(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World, http
) -> None:
    a, b = await start_server(settings, db_dsn), await start_server(settings, db_dsn)
    try:
        assert b.app[AUTH_CACHE].notified_ttl_s == NOTIFIED_TTL_S
        assert await _until(lambda: b.app[AUTH_CACHE].listening, 30)  # b's live hub LISTENs on the auth channel
        dev = DeviceClient(http, b.url, world.device("san-1").token)
        header = f"Bearer {world.device('san-1').token}"
        assert (await _pull_status(dev))[0] == 200
        await asyncio.sleep(1.2)  # past the short TTL: b still answers from its cache, without a query
        assert b.app[AUTH_CACHE].get(header, time.monotonic()) is not None
        assert (await _pull_status(dev))[0] == 200
        sup = SupervisorClient(http, a.url, world.supervisors["sanitation"])
        await sup.call("POST", f"/v1/devices/{world.device('san-1').device_id}/revoke", {})
        # Only the notification can end b's entry this early: it is vouched for NOTIFIED_TTL_S (a bound far below
        # that, not a speed figure: a loaded machine may take seconds to deliver it)
        refused = await _until(lambda: _refused(dev), NOTIFIED_TTL_S / 3)
        assert refused, "server b still served a device revoked through server a"
        assert b.app[AUTH_CACHE].listening  # b still listens (without the connection, the 1 s TTL applies instead)
    finally:
        await a.runner.cleanup()
        await b.runner.cleanup()


async def _refused(dev: DeviceClient) -> bool:
    return await _pull_status(dev) == (401, "token_revoked")


async def test_a_lost_notify_connection_falls_back_to_the_short_ttl(
    server: Server, pool: asyncpg.Pool, world: World, http
) -> None:
    cache = server.app[AUTH_CACHE]
    assert cache.notified_ttl_s == NOTIFIED_TTL_S
    assert await _until(lambda: cache.listening, 30)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    assert (await _pull_status(dev))[0] == 200
    # A revoke that sends no notification (triggers off for this session): only the TTL can end the cached entry,
    # and while the server LISTENs that TTL is the long one, so the stale entry is still served after 1 s...
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", world.device("san-1").device_id)
    await asyncio.sleep(1.2)
    assert (await _pull_status(dev))[0] == 200
    # ...until the LISTEN connection is lost: from then on nothing older than the short TTL is served.
    killed = await pool.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                 " WHERE application_name = 'fieldsync-live' AND datname = current_database()")
    assert killed == 1
    # the entry (cached > 1.2 s ago) would be served for NOTIFIED_TTL_S while vouched for: refused well before that
    assert await _until(lambda: _refused(dev), NOTIFIED_TTL_S / 3), "a cached principal outlived the lost LISTEN connection"


def test_cache_ttls_follow_the_listen_connection_and_races() -> None:
    cache = AuthCache(ttl_s=1.0, notified_ttl_s=60.0)
    who = Principal(Role.DEVICE, "dev-1", department_id=1, crew_id=1, device_id="dev-1")
    h1, h2, h3 = "Bearer fsd_one", "Bearer fsd_two", "Bearer fsd_three"
    cache.put(h1, who, 0.0, cache.mark())  # not listening: short TTL
    assert cache.get(h1, 0.9) == who and cache.get(h1, 1.0) is None
    cache.set_listening(True)
    assert cache.get(h1, 0.5) is None  # cached while deaf: dropped when notifications start
    cache.put(h1, who, 10.0, cache.mark())
    assert cache.get(h1, 69.0) == who and cache.get(h1, 70.0) is None
    mark = cache.mark()
    cache.invalidate("dev-other")  # an invalidation between a read and its put: that put gets the short TTL
    cache.put(h2, who, 10.0, mark)
    assert cache.get(h2, 10.9) == who and cache.get(h2, 11.0) is None
    cache.put(h3, Principal(Role.DEVICE, "dev-1", crew_id=1, device_id="dev-1", superseded=True), 10.0, cache.mark())
    assert cache.get(h3, 11.0) is None  # a rotated-away token's grace ends without a notification
    cache.invalidate("dev-1")
    assert cache.get(h1, 11.0) is None
    cache.put(h1, who, 20.0, cache.mark())
    cache.set_listening(False)  # the connection is gone: a 5-s-old entry is no longer served
    assert cache.get(h1, 20.5) == who and cache.get(h1, 25.0) is None


async def test_live_connect_uses_the_device_cache_and_honours_a_revoke(server: Server, world: World, http) -> None:
    # A phone reconnects its live socket after every dead spot: the upgrade takes the cached principal like a sync
    # request does (no query per reconnect), and a revoke through this server still refuses the next upgrade at once.
    creds = world.device("san-1")
    header = f"Bearer {creds.token}"
    url = server.url.replace("http", "ws") + "/v1/live?encoding=json"
    assert server.app[AUTH_CACHE].get(header, time.monotonic()) is None
    async with http.ws_connect(url, headers={"Authorization": header}) as ws:
        first = json.loads((await ws.receive(timeout=10)).data)
        assert first["type"] == "poke"
    cached = server.app[AUTH_CACHE].get(header, time.monotonic())
    assert cached is not None and (cached.role, cached.device_id) == (Role.DEVICE, creds.device_id)
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.call("POST", f"/v1/devices/{creds.device_id}/revoke", {})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url, headers={"Authorization": header})
    assert refused.value.status == 401


async def test_upload_requests_use_the_device_cache_but_never_cache_staff(server: Server, world: World, http) -> None:
    # A photo upload is several requests (POST, PATCHes, HEADs after every dead spot): a device's are answered from the
    # same revoke-invalidated cache as its sync requests; a staff token is never cached there (no revoke NOTIFY for it).
    creds = world.device("san-1")
    header = f"Bearer {creds.token}"
    url = f"{server.url}/v1/uploads/0123456789abcdef0123456789abcdef"
    tus = {"Tus-Resumable": "1.0.0"}
    assert server.app[AUTH_CACHE].get(header, time.monotonic()) is None
    async with http.head(url, headers={**tus, "Authorization": header}) as r:
        assert r.status == 404  # authenticated; no such upload
    cached = server.app[AUTH_CACHE].get(header, time.monotonic())
    assert cached is not None and (cached.role, cached.device_id) == (Role.DEVICE, creds.device_id)
    staff = f"Bearer {world.supervisors['sanitation']}"
    async with http.head(url, headers={**tus, "Authorization": staff}) as r:
        assert r.status in (403, 404)
    assert server.app[AUTH_CACHE].get(staff, time.monotonic()) is None
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.call("POST", f"/v1/devices/{creds.device_id}/revoke", {})
    async with http.head(url, headers={**tus, "Authorization": header}) as r:
        assert r.status == 401

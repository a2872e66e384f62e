"""A device's contact is written at most once a minute per process, off the request path (one batched UPDATE a second
and one at shutdown), and the memo that skips the writes stays bounded."""

import asyncio

import aiohttp
import asyncpg

from protocol import PROTOCOL_VERSION
from protocol.version import VERSION_HEADER
from sync_server.auth import TouchMemo
from sync_server.settings import Settings
from tests.conftest import start_server
from tests.factories import World


def test_touch_is_due_once_per_interval_per_device() -> None:
    memo = TouchMemo(interval_s=60.0, max_entries=3)
    assert memo.due("dev-a", 1000.0) is True
    assert memo.due("dev-a", 1059.9) is False  # within the minute: no round trip
    assert memo.due("dev-b", 1059.9) is True  # another device is its own line
    assert memo.due("dev-a", 1060.0) is True  # a minute later: written again
    assert memo.due("dev-a", 1060.5) is False


def test_memo_forgets_everything_rather_than_grow() -> None:
    memo = TouchMemo(interval_s=60.0, max_entries=2)
    assert memo.due("a", 0.0) and memo.due("b", 0.0)
    assert memo.due("c", 1.0) is True  # full: cleared, then c remembered
    assert memo.due("a", 2.0) is True  # a was forgotten: one more (harmless) UPDATE
    assert memo.due("c", 2.0) is False


def test_seen_queues_a_device_once_per_interval_and_take_empties_the_queue() -> None:
    memo = TouchMemo(interval_s=60.0)
    memo.seen("dev-b", 0.0)
    memo.seen("dev-a", 1.0)
    memo.seen("dev-b", 2.0)  # already queued this minute
    assert memo.take() == ["dev-a", "dev-b"]  # sorted: the UPDATE locks rows in one order
    assert memo.take() == []
    memo.seen("dev-a", 30.0)  # written within the minute: nothing to write
    assert memo.take() == []
    memo.seen("dev-a", 61.0)
    assert memo.take() == ["dev-a"]


async def _last_seen(pool: asyncpg.Pool, device_id: str) -> object:
    return await pool.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", device_id)


async def test_a_request_records_contact_off_the_request_and_shutdown_writes_the_rest(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World
) -> None:
    """The answer does not wait for the contact's write; the write follows within the flush interval, and the
    contacts still queued when the server stops are written before its pool closes."""
    first, second = world.device("san-1", 0), world.device("san-1", 1)
    srv = await start_server(settings, db_dsn)
    stopped = False
    try:
        async with aiohttp.ClientSession() as http:
            assert await _pull(http, srv.url, first.token) == 200
            for _ in range(300):  # bounded (30 s+ on a loaded machine): the loop writes once a second
                if await _last_seen(pool, first.device_id) is not None:
                    break
                await asyncio.sleep(0.1)
            assert await _last_seen(pool, first.device_id) is not None
            assert await _pull(http, srv.url, second.token) == 200
        await srv.runner.cleanup()
        stopped = True
        assert await _last_seen(pool, second.device_id) is not None
    finally:
        if not stopped:
            await srv.runner.cleanup()


async def _pull(http: aiohttp.ClientSession, url: str, token: str) -> int:
    async with http.post(url + "/v1/sync/pull", json={"cursor": None, "limit": 10},
                         headers={"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION)}) as r:
        await r.read()
        return r.status

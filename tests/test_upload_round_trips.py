"""Photo uploads hold few pool connections: a PATCH looks its session up and claims it on one connection (after taking
its write lease), so a chunk takes two pool acquisitions (lookup+claim, acknowledge) and a HEAD one; a creation sent
again for the same bytes (its answer was lost) gets the session already open, at its offset, and does not count
twice against the device's limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from sync_server.metrics import METRICS
from sync_server.settings import Settings
from tests.conftest import Server, start_server
from tests.factories import World, make_tickets
from tests.test_uploads_support import create, head_offset, noise_jpeg, patch

ROUTE = "/v1/uploads/{upload_id}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _acquisitions(server: Server) -> float:
    value = server.app[METRICS].registry.get_sample_value("fieldsync_db_connection_hold_seconds_count",
                                                          {"route": ROUTE})
    return value or 0.0


async def test_a_chunk_takes_two_pool_connections_and_a_head_one(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(300, 200, seed=41)
    r = await create(http, server.url, tok, data, t.ticket.id)
    assert r.status == 201
    loc = r.headers["Location"]
    half = len(data) // 2
    before = _acquisitions(server)
    resp = await patch(http, loc, tok, 0, data[:half])
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(half)
    assert _acquisitions(server) - before == 2
    before = _acquisitions(server)
    assert await head_offset(http, loc, tok) == (200, half)
    assert _acquisitions(server) - before == 1
    before = _acquisitions(server)
    resp = await patch(http, loc, tok, half, data[half:])  # the last chunk: lookup+claim, then the verifying commit
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    assert _acquisitions(server) - before == 2
    assert await pool.fetchval("SELECT size FROM blobs WHERE sha256 = (SELECT sha256 FROM upload_sessions)") == len(data)


async def test_a_creation_sent_again_gets_the_open_session_at_its_offset(
    world: World, pool: asyncpg.Pool, db_dsn: str, settings: Settings, http: aiohttp.ClientSession,
) -> None:
    srv = await start_server(settings.model_copy(update={"max_uploads_per_device": 2}), db_dsn)
    try:
        (t,) = await make_tickets(pool, world, 1)
        tok = world.device("san-1").token
        data = noise_jpeg(300, 200, seed=42)
        first = await create(http, srv.url, tok, data, t.ticket.id)
        assert first.status == 201
        assert (await patch(http, first.headers["Location"], tok, 0, data[:100])).status == 204
        again = await create(http, srv.url, tok, data, t.ticket.id)
        assert again.status == 201
        assert (again.headers["Location"], again.headers["Upload-Offset"]) == (first.headers["Location"], "100")
        # one session so far, so a second photo still fits under the limit of two; a third does not
        assert (await create(http, srv.url, tok, noise_jpeg(seed=43), t.ticket.id)).status == 201
        assert (await create(http, srv.url, tok, noise_jpeg(seed=44), t.ticket.id)).status == 429
        assert await pool.fetchval("SELECT count(*) FROM upload_sessions") == 2
    finally:
        await srv.runner.cleanup()

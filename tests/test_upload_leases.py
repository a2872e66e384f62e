"""Upload write leases die with their server process, and a live writer's lease answers 409 upload_busy + Retry-After.

The crash test runs the real `fieldsync serve` in a subprocess against the test database, SIGKILLs it while a PATCH
body is half sent, starts a new one on the same data directory, and resumes the upload with no wait at all: a
lease that outlived the process would refuse it for a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_uploads_support import auth, create, head_offset, noise_jpeg, patch, raw_patch_partial

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Serve:
    """`fieldsync serve` on an existing database, logging JSON to a file."""

    def __init__(self, dsn: str, data_dir: Path) -> None:
        self.log_path = data_dir.parent / f"serve-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env["FIELDSYNC_LOG_FORMAT"] = "json"
        env["FIELDSYNC_POOL_MIN_SIZE"] = "2"  # not the production default (the whole pool) before ready
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--data-dir", str(data_dir),
             "--port", "0", "--no-demo"], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log, env=env,
        )

    async def ready(self) -> str:
        """Bounded wait for serve.ready; the server's URL."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            for line in self.log_path.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == "serve.ready":
                    return str(json.loads(line)["url"])
            await asyncio.sleep(0.1)
        raise AssertionError("server not ready in 60 s:\n" + self.log_path.read_text()[-2000:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal and reap (bounded)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.log.close()


async def _lease_taken(pool: asyncpg.Pool, upload_id: str) -> None:
    for _ in range(500):
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT lease_token IS NOT NULL FROM upload_sessions WHERE id = $1", upload_id):
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the PATCH never took its lease")


async def test_sigkill_mid_patch_leaves_no_lease_behind(
    pool: asyncpg.Pool, world: World, db_dsn: str, tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = world.device("san-1")
    data = noise_jpeg(320, 240, seed=8)
    data_dir = tmp_path / "data"
    first = Serve(db_dsn, data_dir)
    second: Serve | None = None
    try:
        url = await first.ready()
        r = await create(http, url, dev.token, data, t.ticket.id)
        assert r.status == 201
        path = r.headers["Location"].removeprefix(url)
        upload_id = path.rsplit("/", 1)[1]
        # A slow body: half of it now, the rest never (the phone is still sending when the server dies).
        conn = await raw_patch_partial(url, path, dev.token, 0, len(data), data[: len(data) // 2], close=False)
        assert conn is not None
        await _lease_taken(pool, upload_id)
        first.kill(signal.SIGKILL)
        conn[1].close()
        second = Serve(db_dsn, data_dir)
        url2 = await second.ready()
        status, offset = await head_offset(http, url2 + path, dev.token)
        assert (status, offset) == (200, 0)  # the killed request acknowledged nothing
        resumed = await patch(http, url2 + path, dev.token, 0, data)
        assert resumed.status == 204, resumed.status  # at once: no 409 for the dead request's lease
        assert resumed.headers["Upload-Offset"] == str(len(data))
    finally:
        first.kill()
        if second is not None:
            second.kill(signal.SIGTERM)


async def test_concurrent_live_patch_gets_409_upload_busy_with_retry_after(
    server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = world.device("san-1")
    data = noise_jpeg(320, 240, seed=9)
    r = await create(http, server.url, dev.token, data, t.ticket.id)
    location = r.headers["Location"]
    path = location.removeprefix(server.url)
    slow = await raw_patch_partial(server.url, path, dev.token, 0, len(data), data[:1000], close=False)
    assert slow is not None
    try:
        await _lease_taken(pool, path.rsplit("/", 1)[1])
        async with http.patch(location, data=data, headers=auth(
            dev.token, **{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})) as busy:
            body = await busy.json()
            assert busy.status == 409
            assert body["error"]["code"] == "upload_busy"
            assert int(busy.headers["Retry-After"]) >= 1
            assert busy.headers["Upload-Offset"] == "0"
    finally:
        slow[1].close()
    # Once the slow request is gone (its bytes kept up to what arrived), the client resumes where the server says.
    # The offset is read only after the lease is free: a HEAD taken while the cut request still held it may predate
    # the bytes that request keeps (under load it did, and the resume at that stale offset was rightly refused).
    for _ in range(200):
        async with pool.acquire() as conn:
            free = await conn.fetchval("SELECT lease_token IS NULL FROM upload_sessions WHERE id = $1",
                                       path.rsplit("/", 1)[1])
        if free:
            break
        await asyncio.sleep(0.02)
    status, offset = await head_offset(http, location, dev.token)
    assert status == 200 and offset is not None and 0 <= offset <= 1000  # what arrived of the cut body is kept
    done = await patch(http, location, dev.token, offset, data[offset:])
    assert done.status == 204 and done.headers["Upload-Offset"] == str(len(data))


async def test_simulator_backs_off_on_upload_busy(
    server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession,
) -> None:
    import random

    from clients.sim.metrics import Metrics
    from clients.sim.photos import PendingPhoto, advance_photo, png_bytes, sha256_hex, upload_step
    from clients.sim.http1 import Client
    from clients.sim.transport import Transport

    (t,) = await make_tickets(pool, world, 1)
    dev = world.device("san-1")
    metrics = Metrics()
    lean = Client(server.url)
    transport = Transport(lean, server.url, metrics)
    p = PendingPhoto(sha256_hex(png_bytes(4242)), str(t.ticket.id), "before", "2026-11-20T09:30:00Z", 4242)
    assert await upload_step(transport, dev.token, p, None) is False  # created, nothing sent yet
    assert p.url is not None
    path = p.url.removeprefix(server.url)
    slow = await raw_patch_partial(server.url, path, dev.token, 0, len(p.data()), p.data()[:10], close=False)
    assert slow is not None
    try:
        await _lease_taken(pool, path.rsplit("/", 1)[1])
        sent_before = len(metrics.latency["upload"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await advance_photo(transport, dev.token, p, random.Random(1), metrics, budget=12,
                                      fault=lambda: None, online=lambda: True)
        # One PATCH answered 409 upload_busy + Retry-After: the photo waits for a later round, at least that long,
        # instead of spending its whole budget on the busy upload.
        assert outcome == "deferred"
        assert len(metrics.latency["upload"]) - sent_before == 1
        assert metrics.errors["upload:upload_busy"] == 1
        assert p.not_before >= started + 5
    finally:
        slow[1].close()
        await lean.close()

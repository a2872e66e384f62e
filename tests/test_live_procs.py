"""Live feed across real OS processes: `fieldsync serve` subprocesses on the test database next to the in-test app."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from protocol.live import LiveEvent, LivePoke
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient
from tests.test_live import Live, events

REPO = Path(__file__).resolve().parents[1]


class Proc:
    """One `fieldsync serve` against an existing database, its JSON log in a file."""

    def __init__(self, dsn: str, data_dir: Path, *extra: str) -> None:
        import os

        self.log_path = data_dir / "serve.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env["FIELDSYNC_LOG_FORMAT"] = "json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--data-dir", str(data_dir),
             "--no-demo", *extra], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            env=env,
        )

    async def ready(self) -> str:
        """Bounded wait for serve.ready; the URL it serves."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            for line in self.log_path.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == "serve.ready":
                    return str(json.loads(line)["url"])
            await asyncio.sleep(0.1)
        raise AssertionError("not ready:\n" + self.log_path.read_text()[-2000:])

    def stop(self) -> int:
        """SIGTERM and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.log.close()


@pytest.fixture
def proc_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "proc"


async def test_events_cross_real_processes_both_ways(
    server: Server, db_dsn: str, pool: asyncpg.Pool, world: World, proc_dir: Path
) -> None:
    other = Proc(db_dsn, proc_dir, "--port", "0")
    try:
        url = await other.ready()
        async with aiohttp.ClientSession() as http:
            (t,) = await make_tickets(pool, world, 1)
            sup = await Live.connect(http, url, world.supervisors["sanitation"])
            await sup.ready()
            phone = await Live.connect(http, server.url, world.device("san-1", 1).token)  # on the in-test process
            assert isinstance(await phone.recv(), LivePoke)
            dev = DeviceClient(http, server.url, world.device("san-1").token)
            await dev.pull()
            pushed = await dev.push([dev.mutation("acknowledge", t.ticket.id)])
            ev = (await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket is not None and m.ticket.version == 2))[-1]
            assert ev.ticket is not None and ev.ticket.status == "acknowledged"
            # a supervisor action through the other process pokes the phone on this one
            await SupervisorClient(http, url, world.supervisors["sanitation"]).assign(t.ticket.id, "san-2")
            await phone.until(lambda m: isinstance(m, LivePoke) and m.watermark > pushed.server_version + 1)
            got = events(await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket is not None and m.ticket.crew == "san-2"))
            assert got[-1].ticket_id == t.ticket.id
            # graceful shutdown tells the client to reconnect elsewhere
            assert await asyncio.to_thread(other.stop) == 0
            assert (await sup.until(lambda m: isinstance(m, int)))[-1] == 1001
            await phone.close()
    finally:
        other.stop()


async def test_serve_workers_share_one_port_and_all_get_events(
    server: Server, db_dsn: str, pool: asyncpg.Pool, world: World, proc_dir: Path
) -> None:
    multi = Proc(db_dsn, proc_dir, "--port", "0", "--workers", "2")
    try:
        url = await multi.ready()
        for _ in range(100):  # both workers up, each with its own LISTEN connection
            log = multi.log_path.read_text()
            if log.count('"serve.ready"') == 2 and log.count('"live.listening"') == 2:
                break
            await asyncio.sleep(0.1)
        assert multi.log_path.read_text().count('"live.listening"') == 2
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            # several sockets: the kernel spreads them over both workers by connection hash
            subs = [await Live.connect(http, url, world.supervisors["sanitation"]) for _ in range(8)]
            for s in subs:
                await s.ready()
            (t,) = await make_tickets(pool, world, 1)
            for s in subs:
                await s.until(lambda m: isinstance(m, LiveEvent) and m.ticket_id == t.ticket.id)
            for s in subs:
                await s.close()
        assert await asyncio.to_thread(multi.stop) == 0
    finally:
        multi.stop()

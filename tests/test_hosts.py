"""Several hosts behind HAProxy: two `fieldsync serve` processes with separate data dirs (stand-ins for hosts) on one
database and one cursor secret. A cursor issued by one host is valid on the other, live events reach a socket on the
other host, and a host SIGKILLed under load costs devices only retries: every acknowledged push is stored once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import structlog

from protocol.live import LiveEvent
from tests.factories import World, make_tickets
from tests.infra import HAProxy, free_port
from tests.syncclient import DeviceClient
from tests.test_failover import Tally, device_loop
from tests.test_live import Live

REPO = Path(__file__).resolve().parents[1]
log = structlog.get_logger("tests.hosts")


class Host:
    """One server 'host': its own data dir and port, the shared database and cursor secret."""

    def __init__(self, dsn: str, root: Path, secret: str) -> None:
        self.port = free_port()
        root.mkdir(parents=True)
        self.log_path = root / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env.update(FIELDSYNC_LOG_FORMAT="json", FIELDSYNC_CURSOR_SECRET=secret, FIELDSYNC_METRICS_PORT="0",
                   FIELDSYNC_POOL_MIN_SIZE="1", FIELDSYNC_POOL_MAX_SIZE="4", FIELDSYNC_LIVE_POLL_S="1",
                   FIELDSYNC_ACCESS_LOG_SAMPLE="1")  # the test counts each host's push access lines
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--data-dir", str(root),
                 "--no-demo", "--port", str(self.port)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            if any(line.startswith("{") and json.loads(line).get("event") == "serve.ready"
                   for line in self.log_path.read_text().splitlines()):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("host not ready: " + self.log_path.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def test_two_hosts_behind_haproxy(db_dsn: str, pool: asyncpg.Pool, world: World, tmp_path: Path) -> None:
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    hosts = [Host(db_dsn, tmp_path / f"host{i}", secret) for i in range(2)]
    lb: HAProxy | None = None
    try:
        await asyncio.gather(*(h.ready() for h in hosts))
        lb = HAProxy(tmp_path / "haproxy", [h.port for h in hosts]).start()
        (t1,) = await make_tickets(pool, world, 1, crew="san-1")
        async with aiohttp.ClientSession() as http:
            # a cursor issued by host 0 is accepted by host 1 (shared FIELDSYNC_CURSOR_SECRET)
            on_a = DeviceClient(http, hosts[0].url, world.device("san-1", 0).token)
            await on_a.pull()
            (t2,) = await make_tickets(pool, world, 1, crew="san-1")
            on_b = DeviceClient(http, hosts[1].url, world.device("san-1", 0).token)
            page = await on_b.pull_once(on_a.replica.cursor)
            assert not page.reset
            assert [str(c.ticket_id if c.kind == "remove" else c.ticket.id) for c in page.changes] == [str(t2.ticket.id)]

            # live: a supervisor on host 0 sees a push made on host 1
            sup = await Live.connect(http, hosts[0].url, world.supervisors["sanitation"])
            await sup.ready()
            pusher = DeviceClient(http, hosts[1].url, world.device("san-2", 0).token)
            (t3,) = await make_tickets(pool, world, 1, crew="san-2")
            await pusher.pull()
            r = await pusher.push([pusher.mutation("add_note", t3.ticket.id, {"note_id": str(uuid.uuid4()),
                                                                           "text": "seen across hosts"})])
            assert r.results[0].status == "applied"
            await asyncio.wait_for(sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket is not None and any(
                n.text == "seen across hosts" for n in m.ticket.notes)), 20)
            await sup.close()

            # devices through the balancer while host 0 is SIGKILLed: only retries, nothing lost or doubled
            tally = Tally()
            stop = asyncio.Event()
            deadline = time.monotonic() + 90  # a bound for a loaded machine; the loops end as soon as they can
            devs = [(world.device("ss-1", i), (await make_tickets(pool, world, 1, crew="ss-1"))[0].ticket.id)
                    for i in range(2)]
            loops = [asyncio.create_task(device_loop(http, lb.url, d.token, d.device_id, t, tally, stop, deadline))
                     for d, t in devs]
            while len(tally.acked) < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            killed_at = time.monotonic()
            hosts[0].proc.kill()
            while time.monotonic() < deadline and sum(a[3] > killed_at for a in tally.acked) < 20:
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops), 10)
        assert sum(a[3] > killed_at for a in tally.acked) >= 20, tally.failures[:5]
        # the balancer really spread pushes over both hosts before host 0 died
        pushes0 = sum('"/v1/sync/push"' in line for line in hosts[0].log_path.read_text().splitlines())
        assert pushes0 >= 5
        log.info("hosts.figures", acked=len(tally.acked), acked_after_kill=sum(a[3] > killed_at for a in tally.acked),
                 failed_requests=len(tally.failures), failure_kinds=sorted({f[1] for f in tally.failures}),
                 pushes_on_killed_host=pushes0)
        for d, t in devs:
            mine = sorted(a[1] for a in tally.acked if a[0] == d.device_id)
            assert mine == list(range(1, len(mine) + 1))
            texts = [r["text"] for r in await pool.fetch("SELECT text FROM ticket_notes WHERE ticket_id = $1", t)]
            last_seq = await pool.fetchval("SELECT last_seq FROM devices WHERE id = $1", d.device_id)
            assert len(texts) == len(set(texts)) == last_seq and last_seq in (len(mine), len(mine) + 1)
            assert {a[2] for a in tally.acked if a[0] == d.device_id} <= {
                r["id"] for r in await pool.fetch("SELECT id FROM ticket_notes WHERE ticket_id = $1", t)}
    finally:
        if lb is not None:
            lb.stop()
        for h in hosts:
            h.stop()

"""Shifts against a server that is killed with SIGKILL three times while crews push, upload and pull (restarted on the
same port), and against a PostgreSQL that is stopped immediately (a crash: recovery on restart) twice mid-shift: nothing
a crew sent is lost or applied twice, every replica converges, and `fieldsync check` finds the database and blob store
consistent. The in-repo version of the crash-and-restart soak (bounded: ~40 s each)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clients.sim.cli import simulate
from clients.sim.config import SimConfig
from tests.factories import World
from tests.infra import Cluster, free_port, rmtree, scratch

REPO = Path(__file__).resolve().parents[1]
KILLS = 3


class ServerProcess:
    """`fieldsync serve` as an operator runs it, on one fixed port and data dir, so a restart is the same server."""

    def __init__(self, dsn: str, data_dir: Path, *, demo: bool = False) -> None:
        self.dsn, self.data_dir, self.port, self.demo = dsn, data_dir, free_port(), demo
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start and wait (bounded) for its `serve.ready` line."""
        log_path = self.data_dir / f"serve-{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env.update(FIELDSYNC_LOG_FORMAT="json", FIELDSYNC_POOL_MAX_SIZE="6")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", self.dsn, "--data-dir",
                 str(self.data_dir), "--demo" if self.demo else "--no-demo", "--port", str(self.port)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(line.startswith("{") and json.loads(line).get("event") == "serve.ready"
                   for line in log_path.read_text().splitlines()):
                return
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"server did not become ready:\n{log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, open transactions are cut wherever they are."""
        assert self.proc is not None and self.proc.poll() is None, "the server died on its own"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def test_shift_survives_server_kills_mid_push(db_dsn: str, world: World, tmp_path: Path) -> None:
    server = ServerProcess(db_dsn, tmp_path)
    await server.start()
    credentials: dict[str, Any] = {
        "server": server.url, "admin": {"token": world.admin},
        "supervisors": [{"department": d, "token": t} for d, t in world.supervisors.items()], "devices": [],
    }
    config = SimConfig(devices=20, duration_s=24, seed=11, fault_rate=0.05, offline_fraction=0.1, photo_rate=0.4,
                       supervisor_rate=20, step_s=0.3, progress=False, quiesce_timeout_s=90, request_timeout_s=15)
    rng = random.Random(5)
    shift_started, gate = shift_gate()
    killed_at: list[float] = []

    async def chaos() -> None:
        await shift_started.wait()  # kills land in the shift, never in setup (crews, enrolment)
        await asyncio.sleep(1)
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(2.0, 4.0))
            server.kill()
            killed_at.append(time.monotonic())
            await asyncio.sleep(rng.uniform(0.2, 1.5))  # a dead spot: connections refused
            await server.start()

    try:
        chaos_task = asyncio.ensure_future(chaos())
        rep, verdict, fleet = await simulate(config, credentials, gate=gate)
        await asyncio.wait_for(chaos_task, 60)
    finally:
        server.stop()

    assert len(killed_at) == KILLS and server.starts == KILLS + 1
    assert_survived(rep, fleet, db_dsn, tmp_path)


def shift_gate() -> tuple[asyncio.Event, Callable[[], Awaitable[None]]]:
    """An event set when the simulator ends its setup and starts the shift (its `gate` hook)."""
    started = asyncio.Event()

    async def gate() -> None:
        started.set()

    return started, gate


def assert_survived(rep: dict[str, Any], fleet: Any, dsn: str, data_dir: Path) -> None:
    """The verdict holds, the faults were felt, and the stores are consistent."""
    assert rep["ok"], rep["examples"]
    assert (rep["lost"], rep["duplicated"], rep["diverged_devices"], rep["unresolved"], rep["broken_devices"]) == (0,) * 5
    assert rep["photo_failures"] == 0 and rep["photos_verified"] == rep["photos_uploaded"] > 0
    assert rep["mutations_applied"] > 60  # work went on around the outages (a bound for a slow machine, not a speed)
    # the outages were felt: requests failed in flight or were refused, and were retried
    assert fleet.metrics.counters["retries"] > 0
    check = subprocess.run([sys.executable, "-m", "sync_server.cli", "check", "--database-url", dsn,
                            "--data-dir", str(data_dir)],
                           cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")})
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]


async def test_shift_survives_postgres_crash_restarts(tmp_path: Path) -> None:
    root = scratch("fs-chaos-pg-")
    cluster = Cluster(root, "primary").init().start()
    cluster.psql("CREATE DATABASE fieldsync")
    dsn = cluster.dsn("fieldsync")
    server = ServerProcess(dsn, tmp_path, demo=True)
    try:
        await server.start()  # migrates and seeds the demo city, writing its credentials file
        credentials = json.loads((tmp_path / "demo-credentials.json").read_text())
        credentials["server"] = server.url
        config = SimConfig(devices=20, duration_s=24, seed=12, fault_rate=0.05, offline_fraction=0.1, photo_rate=0.4,
                           supervisor_rate=20, step_s=0.3, progress=False, quiesce_timeout_s=90, request_timeout_s=15)
        rng = random.Random(6)
        shift_started, gate = shift_gate()
        crashes = 0

        async def chaos() -> None:
            nonlocal crashes
            await shift_started.wait()
            await asyncio.sleep(1)
            for _ in range(2):
                await asyncio.sleep(rng.uniform(2.0, 4.0))
                await asyncio.to_thread(cluster.stop)  # -m immediate: no checkpoint, WAL replay on start
                crashes += 1
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                await asyncio.to_thread(cluster.start)

        chaos_task = asyncio.ensure_future(chaos())
        rep, verdict, fleet = await simulate(config, credentials, gate=gate)
        await asyncio.wait_for(chaos_task, 60)
        assert crashes == 2
        assert server.proc is not None and server.proc.poll() is None, "the server must ride out database restarts"
        server.stop()
        assert_survived(rep, fleet, dsn, tmp_path)
    finally:
        server.stop()
        cluster.stop()
        rmtree(root)

"""Prometheus metrics on their own listener: the families an operator's dashboard and alerts rely on exist, a push
moves the mutation counter, and under `--workers 2` every worker's counts are merged whichever worker is scraped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from sync_server.settings import Settings
from tests.conftest import start_server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


FAMILIES = {
    "fieldsync_http_request_duration_seconds_bucket", "fieldsync_mutations_total", "fieldsync_pull_pages_total",
    "fieldsync_pull_bytes_total", "fieldsync_pull_resets_total", "fieldsync_upload_bytes_total",
    "fieldsync_db_pool_size", "fieldsync_db_pool_in_use", "fieldsync_db_pool_waiting", "fieldsync_db_pool_max",
    "fieldsync_db_up", "fieldsync_db_oldest_xact_age_seconds", "fieldsync_change_log_rows", "fieldsync_audit_rows",
    "fieldsync_devices_stale", "fieldsync_conflicts_open", "fieldsync_upload_sessions_open",
    "fieldsync_event_loop_lag_seconds_bucket", "fieldsync_event_loop_lag_max_seconds",
}


async def test_scrape_has_families_and_push_moves_the_counter(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World
) -> None:
    port = free_port()
    srv = await start_server(settings.model_copy(update={"metrics_port": port}), db_dsn)
    try:
        (t,) = await make_tickets(pool, world, 1)
        async with aiohttp.ClientSession() as http:
            dev = DeviceClient(http, srv.url, world.device("san-1").token)
            await dev.pull()
            before = await scrape(port)
            assert value(before, "fieldsync_mutations_total", status="applied", reason="") == 0
            assert value(before, "fieldsync_pull_pages_total", kind="snapshot") == 1
            assert value(before, "fieldsync_pull_resets_total") == 1
            assert value(before, "fieldsync_pull_bytes_total") > 0
            assert value(before, "fieldsync_db_up") == 1
            assert value(before, "fieldsync_devices_stale", hours="12") == 0
            names = {name for name, _ in before}
            assert FAMILIES <= names, FAMILIES - names

            first = dev.mutation("acknowledge", t.ticket.id)
            resp = await dev.push([first,
                                   dev.mutation("add_note", t.ticket.id, {"note_id": str(uuid.uuid4()), "text": "x"})])
            assert [r.status for r in resp.results] == ["applied", "applied"]
            again = await dev.push([first])  # a resend of seq 1, byte-identical
            assert again.results[0].replayed
            after = await scrape(port)
        assert value(after, "fieldsync_mutations_total", status="applied", reason="") == 2
        assert value(after, "fieldsync_mutations_total", status="replayed", reason="") == 1
        assert value(after, "fieldsync_http_request_duration_seconds_count",
                     method="POST", route="/v1/sync/push", status="200") == 2
        assert value(after, "fieldsync_http_request_duration_seconds_count",
                     method="POST", route="/v1/sync/pull", status="200") == 1
        # one batch on one ticket is folded into one change-log row
        assert value(after, "fieldsync_change_log_rows") == value(before, "fieldsync_change_log_rows") + 1
        assert value(after, "fieldsync_audit_rows") > value(before, "fieldsync_audit_rows")
        assert value(after, "fieldsync_db_pool_max") == 10
        # every push acquired a pool connection at least once: its waits and holds are labelled with the route
        for family in ("fieldsync_db_pool_wait_seconds_count", "fieldsync_db_connection_hold_seconds_count"):
            assert value(after, family, route="/v1/sync/push") - value(before, family, route="/v1/sync/push") >= 2
        assert value(after, "fieldsync_db_connection_hold_seconds_sum", route="/v1/sync/push") > 0
        # the shipped dashboard and alert rules only use series the server exports
        exported = {name for name, _ in after}
        for f in ("ops/monitoring/alerts.yml", "ops/monitoring/grafana-dashboard.json"):
            used = set(re.findall(r"fieldsync_[a-z_]+", (REPO / f).read_text()))
            assert used and used <= exported, (f, used - exported)
    finally:
        await srv.runner.cleanup()


async def test_devices_not_seen_and_open_conflicts_gauges(settings: Settings, db_dsn: str, pool: asyncpg.Pool,
                                                         world: World) -> None:
    port = free_port()
    srv = await start_server(settings.model_copy(update={"metrics_port": port}), db_dsn)
    try:
        n_devices = await pool.fetchval("SELECT count(*) FROM devices WHERE revoked_at IS NULL")
        await pool.execute("UPDATE devices SET last_seen_at = now() - interval '13 hours'")
        await pool.execute("UPDATE devices SET last_seen_at = now() - interval '1 hour' WHERE id = $1",
                           world.device("san-1").device_id)
        samples = await scrape(port)
        assert value(samples, "fieldsync_devices_stale", hours="12") == n_devices - 1
        assert value(samples, "fieldsync_conflicts_open") == 0
    finally:
        await srv.runner.cleanup()


async def test_workers_share_one_metrics_view(db_dsn: str, pool: asyncpg.Pool, world: World, tmp_path: Path) -> None:
    """Pushes spread over two workers by the kernel; any scrape (also answered by either worker) counts all."""
    (t,) = await make_tickets(pool, world, 1)
    mport = free_port()
    data_dir = tmp_path / "serve"
    data_dir.mkdir()
    log_path = data_dir / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(FIELDSYNC_LOG_FORMAT="json", FIELDSYNC_POOL_MIN_SIZE="1", FIELDSYNC_POOL_MAX_SIZE="3",
               FIELDSYNC_METRICS_PORT=str(mport))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", db_dsn, "--data-dir", str(data_dir),
             "--no-demo", "--port", "0", "--workers", "2"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
        )
    try:
        deadline = time.monotonic() + 60
        ready: list[dict] = []
        while len(ready) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()[-3000:]
            await asyncio.sleep(0.1)
            ready = [json.loads(x) for x in log_path.read_text().splitlines()
                     if x.startswith("{") and json.loads(x).get("event") == "serve.ready"]
        url = ready[0]["url"]
        device = world.device("san-1").token
        for i in range(6):  # a fresh connection each: SO_REUSEPORT spreads them over the workers
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                dev = DeviceClient(http, url, device)
                resp = await dev.push([dev.mutation("add_note", t.ticket.id,
                                                    {"note_id": str(uuid.uuid4()), "text": f"n{i}"}, seq=i + 1)])
                assert resp.results[0].status == "applied"
        for _ in range(4):
            samples = await scrape(mport)
            assert value(samples, "fieldsync_mutations_total", status="applied", reason="") == 6
            assert value(samples, "fieldsync_http_request_duration_seconds_count",
                         method="POST", route="/v1/sync/push", status="200") == 6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

"""`fieldsync serve --workers N` as the operator runs it: a killed worker is replaced, SIGTERM stops every process;
and the generated cursor secret is the same for every concurrent first start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from sync_server.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _events(log_path: Path) -> list[dict[str, object]]:
    out = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def _wait_for(log_path: Path, predicate: object, what: str, timeout: float = 60.0) -> list[dict[str, object]]:
    """Bounded wait until predicate(events) is true; returns the events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evs = _events(log_path)
        if predicate(evs):  # type: ignore[operator]
            return evs
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n" + log_path.read_text()[-3000:])


def _ready_pids(evs: list[dict[str, object]]) -> set[int]:
    return {int(e["pid"]) for e in evs if e.get("event") == "serve.ready"}  # type: ignore[arg-type]


async def _get_ok(url: str, n: int) -> list[int]:
    """n requests, each on a fresh connection so the kernel spreads them over the workers."""
    statuses = []
    for _ in range(n):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(url + "/readyz") as r:
                statuses.append(r.status)
    return statuses


async def test_killed_worker_is_replaced_and_sigterm_stops_all(db_dsn: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "serve"
    data_dir.mkdir()
    log_path = data_dir / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    env.update(FIELDSYNC_LOG_FORMAT="json", FIELDSYNC_POOL_MIN_SIZE="1", FIELDSYNC_POOL_MAX_SIZE="3")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", db_dsn, "--data-dir", str(data_dir),
             "--no-demo", "--port", "0", "--workers", "2"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
        )
    seen: set[int] = set()
    try:
        evs = await _wait_for(log_path, lambda e: len(_ready_pids(e)) == 2, "two workers ready")
        first = _ready_pids(evs)
        seen |= first
        url = next(str(e["url"]) for e in evs if e.get("event") == "serve.ready")
        assert await _get_ok(url, 6) == [200] * 6

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        evs = await _wait_for(log_path, lambda e: len(_ready_pids(e) - first) == 1, "a replacement worker")
        replacement = (_ready_pids(evs) - first).pop()
        seen.add(replacement)
        died = [e for e in evs if e.get("event") == "serve.worker_died"]
        assert [(d["pid"], d["signal"]) for d in died] == [(victim, 9)]
        assert not _alive(victim)
        assert _alive(replacement) and replacement != victim
        assert await _get_ok(url, 20) == [200] * 20

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
        for pid in seen:
            assert not _alive(pid), f"worker {pid} outlived the parent"
        assert any(e.get("event") == "serve.workers_stopped" for e in _events(log_path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_concurrent_first_starts_share_one_cursor_secret(tmp_path: Path) -> None:
    """Many creators racing on a fresh data dir (threads with a tiny switch interval, rounds of them): every one
    must read the same non-empty key, and that key must be what is on disk."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(15):
            settings = Settings(data_dir=tmp_path / f"r{round_}", demo_data=False)
            barrier = threading.Barrier(12)
            results: list[bytes | BaseException] = []

            def create() -> None:
                barrier.wait()
                try:
                    results.append(settings.resolved_cursor_secret())
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    results.append(exc)

            threads = [threading.Thread(target=create) for _ in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=20)
            on_disk = (tmp_path / f"r{round_}" / "cursor-secret").read_bytes()
            assert len(results) == 12
            assert set(results) == {on_disk}, f"round {round_}: {set(map(repr, results))}"
            assert len(on_disk) >= 32
            leftovers = [p.name for p in (tmp_path / f"r{round_}").iterdir() if p.name != "cursor-secret"]
            assert leftovers == []
    finally:
        sys.setswitchinterval(old)


def test_cursor_secret_is_created_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_data=False)
    key = settings.resolved_cursor_secret()
    path = tmp_path / "d" / "cursor-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path / "d", demo_data=False).resolved_cursor_secret() == key
    path.write_bytes(b"")
    with pytest.raises(ValueError):
        settings.resolved_cursor_secret()

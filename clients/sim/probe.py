"""What the server side was doing during the shift: CPU of server, PostgreSQL and simulator, pool waits from /metrics.

A load test that only reports client latencies cannot say where the knee is. With `--spawn` the simulator knows
the server's process and its cluster's postmaster, so it reads their CPU from /proc (Linux; absent elsewhere); with
a metrics URL it scrapes the server's Prometheus gauges (pool occupancy and waiters) once a second.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SCRAPE_EVERY_S = 1.0
WAITS_SQL = """
SELECT CASE WHEN state = 'idle in transaction' THEN 'idle_in_transaction'
            WHEN wait_event_type IS NULL THEN 'cpu'
            ELSE wait_event_type || ':' || wait_event END AS what,
       CASE WHEN wait_event_type = 'Lock' THEN left(regexp_replace(query, '\\s+', ' ', 'g'), 70) END AS stmt
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND state IN ('active', 'idle in transaction')
"""
GAUGES = ("fieldsync_db_pool_waiting", "fieldsync_db_pool_in_use", "fieldsync_db_pool_size", "fieldsync_db_pool_max",
          "fieldsync_db_oldest_xact_age_seconds", "fieldsync_event_loop_lag_max_seconds")
# Per-route sums read at the first and last scrape: what each route costs in pool connection time.
ROUTE_SERIES = {"fieldsync_http_request_duration_seconds_count": "requests",
                "fieldsync_db_connection_hold_seconds_count": "acquires",
                "fieldsync_db_connection_hold_seconds_sum": "hold_s",
                "fieldsync_db_pool_wait_seconds_sum": "wait_s"}


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds incl. reaped children) of one process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / TICK


def _runqueue_wait(pid: int) -> float:
    """Seconds this process's threads were runnable but waiting for a CPU (/proc/PID/schedstat, live threads)."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return total


def tree_cpu(roots: list[int], exclude: list[int] | None = None, *, waiting: bool = False) -> float:
    """CPU seconds of processes and all their live descendants (exited children are in their parent's c-times).

    With `waiting`, the seconds the live members spent runnable but not running instead: CPU starvation.
    """
    skip = set(exclude or ())
    parents: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)] = st
    members, frontier = set(), [r for r in roots if r in parents]
    while frontier:
        pid = frontier.pop()
        if pid in members or pid in skip:
            continue
        members.add(pid)
        frontier.extend(child for child, (ppid, _) in parents.items() if ppid == pid)
    if waiting:
        return sum(_runqueue_wait(p) for p in members)
    return sum(parents[p][1] for p in members)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → gauge name → value summed over label sets (enough for pool gauges)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if name in GAUGES:
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                continue
    return out


def parse_routes(text: str) -> dict[str, dict[str, float]]:
    """route → {requests, acquires, hold_s, wait_s} summed over the other labels (method, status)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        key = ROUTE_SERIES.get(name)
        if key is None or 'route="' not in labels:
            continue
        route = labels.split('route="', 1)[1].split('"', 1)[0]
        try:
            row = out.setdefault(route, {})
            row[key] = row.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return out


def route_costs(first: dict[str, dict[str, float]], last: dict[str, dict[str, float]], top: int = 8) -> dict[str, Any]:
    """Pool connection time per request by route over the shift, the costliest routes first."""
    rows = []
    for route, end in last.items():
        start = first.get(route, {})
        d = {k: end.get(k, 0.0) - start.get(k, 0.0) for k in ("requests", "acquires", "hold_s", "wait_s")}
        if d["acquires"] <= 0:
            continue
        per = d["requests"] or d["acquires"]  # background loops have no requests: per acquisition then
        rows.append((d["hold_s"], route, {
            "requests": int(d["requests"]), "acquires": int(d["acquires"]),
            "hold_ms_per_request": round(1000 * d["hold_s"] / per, 1),
            "wait_ms_per_acquire": round(1000 * d["wait_s"] / d["acquires"], 1),
            "hold_s": round(d["hold_s"], 1)}))
    return {route: row for _, route, row in sorted(rows, reverse=True)[:top]}


@dataclass
class Probe:
    """Samples during the shift; `report()` is the `server_side` section of the report."""

    metrics_url: str = ""
    server_pids: list[int] = field(default_factory=list)     # `fieldsync serve` (its workers are descendants)
    postgres_pids: list[int] = field(default_factory=list)   # the postmaster (backends are descendants)
    samples: list[dict[str, float]] = field(default_factory=list)
    database_url: str = ""  # with --spawn: the embedded cluster, sampled for what busy backends wait on
    waits: Counter[str] = field(default_factory=Counter)
    lock_statements: Counter[str] = field(default_factory=Counter)
    wait_samples: int = 0
    runqueue: dict[str, float] = field(default_factory=dict)
    scrape_errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    routes_first: dict[str, dict[str, float]] = field(default_factory=dict)
    routes_last: dict[str, dict[str, float]] = field(default_factory=dict)

    async def run(self, seconds: float, session: aiohttp.ClientSession) -> None:
        """Measure for the length of the shift (cancelled early = measured up to then)."""
        server0, pg0 = tree_cpu(self.server_pids, self.postgres_pids), tree_cpu(self.postgres_pids)
        wait0 = tree_cpu(self.server_pids, self.postgres_pids, waiting=True), tree_cpu(self.postgres_pids, waiting=True)
        t0 = time.monotonic()
        conn = await self._connect()
        try:
            deadline = t0 + seconds
            while time.monotonic() < deadline:
                if self.metrics_url:
                    await self._scrape(session)
                if conn is not None:
                    await self._sample_waits(conn)
                await asyncio.sleep(min(SCRAPE_EVERY_S, max(0.0, deadline - time.monotonic())))
        finally:
            if conn is not None:
                await conn.close(timeout=2)
            self.seconds = time.monotonic() - t0
            self.cpu = {"server": tree_cpu(self.server_pids, self.postgres_pids) - server0,
                        "postgres": tree_cpu(self.postgres_pids) - pg0}
            self.runqueue = {"server": tree_cpu(self.server_pids, self.postgres_pids, waiting=True) - wait0[0],
                             "postgres": tree_cpu(self.postgres_pids, waiting=True) - wait0[1]}

    async def _connect(self) -> Any:
        if not self.database_url:
            return None
        import asyncpg  # only for --spawn diagnostics; the simulator itself speaks HTTP only

        try:
            return await asyncpg.connect(self.database_url, timeout=5)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
            self.scrape_errors += 1
            return None

    async def _sample_waits(self, conn: Any) -> None:
        """One look at pg_stat_activity: busy backends by what they wait on (lock waits by statement)."""
        import asyncpg

        try:
            rows = await conn.fetch(WAITS_SQL, timeout=2)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
            self.scrape_errors += 1
            return
        self.wait_samples += 1
        for r in rows:
            self.waits[r["what"]] += 1
            if r["stmt"]:
                self.lock_statements[r["stmt"]] += 1

    async def _scrape(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                text = await r.text()
            self.samples.append(parse_metrics(text))
            self.routes_last = parse_routes(text)
            if not self.routes_first:
                self.routes_first = self.routes_last
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.scrape_errors += 1

    def report(self) -> dict[str, Any]:
        """CPU as seconds and % of one core over the shift; pool gauges as max and mean of the samples."""
        out: dict[str, Any] = {"measured_s": round(self.seconds, 1)}
        if self.server_pids:
            for who, s in self.cpu.items():
                out[f"{who}_cpu_s"] = round(s, 1)
                out[f"{who}_cpu_percent_of_one_core"] = round(100 * s / self.seconds, 1) if self.seconds else None
            # seconds runnable but not running (summed over threads/backends): CPU starvation on a busy host
            for who, s in self.runqueue.items():
                out[f"{who}_runqueue_wait_s"] = round(s, 1)
        if self.metrics_url:
            out["scrapes"], out["scrape_errors"] = len(self.samples), self.scrape_errors
            for name in GAUGES:
                xs = [s[name] for s in self.samples if name in s]
                if xs:
                    short = name.removeprefix("fieldsync_db_").removeprefix("fieldsync_")
                    out[f"{short}_max"] = max(xs)
                    out[f"{short}_mean"] = round(sum(xs) / len(xs), 2)
        if self.routes_last:
            out["db_by_route"] = route_costs(self.routes_first, self.routes_last)
        if self.wait_samples:
            # mean number of backends in each state per sample: "cpu" is running or runnable, Lock:* waits on a lock
            out["pg_backends_mean"] = {k: round(n / self.wait_samples, 2) for k, n in self.waits.most_common(8)}
            out["pg_lock_waits_by_statement"] = dict(self.lock_statements.most_common(5))
        return out

"""What the server side was doing during the shift: CPU of server, PostgreSQL and simulator, pool waits from /metrics.

A load test that only reports client latencies cannot say where the knee is. With `--spawn` the simulator knows
the server's process and its cluster's postmaster, so it reads their CPU from /proc (Linux; absent elsewhere); with
a metrics URL it scrapes the server's Prometheus gauges (pool occupancy and waiters) once a second.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SCRAPE_EVERY_S = 1.0
GAUGES = ("fieldsync_db_pool_waiting", "fieldsync_db_pool_in_use", "fieldsync_db_pool_size", "fieldsync_db_pool_max",
          "fieldsync_db_oldest_xact_age_seconds")


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


def tree_cpu(roots: list[int], exclude: list[int] | None = None) -> float:
    """CPU seconds of processes and all their live descendants (exited children are in their parent's c-times)."""
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


@dataclass
class Probe:
    """Samples during the shift; `report()` is the `server_side` section of the report."""

    metrics_url: str = ""
    server_pids: list[int] = field(default_factory=list)     # `fieldsync serve` (its workers are descendants)
    postgres_pids: list[int] = field(default_factory=list)   # the postmaster (backends are descendants)
    samples: list[dict[str, float]] = field(default_factory=list)
    scrape_errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    async def run(self, seconds: float, session: aiohttp.ClientSession) -> None:
        """Measure for the length of the shift (cancelled early = measured up to then)."""
        server0, pg0 = tree_cpu(self.server_pids, self.postgres_pids), tree_cpu(self.postgres_pids)
        t0 = time.monotonic()
        try:
            deadline = t0 + seconds
            while time.monotonic() < deadline:
                if self.metrics_url:
                    await self._scrape(session)
                await asyncio.sleep(min(SCRAPE_EVERY_S, max(0.0, deadline - time.monotonic())))
        finally:
            self.seconds = time.monotonic() - t0
            self.cpu = {"server": tree_cpu(self.server_pids, self.postgres_pids) - server0,
                        "postgres": tree_cpu(self.postgres_pids) - pg0}

    async def _scrape(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                self.samples.append(parse_metrics(await r.text()))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.scrape_errors += 1

    def report(self) -> dict[str, Any]:
        """CPU as seconds and % of one core over the shift; pool gauges as max and mean of the samples."""
        out: dict[str, Any] = {"measured_s": round(self.seconds, 1)}
        if self.server_pids:
            for who, s in self.cpu.items():
                out[f"{who}_cpu_s"] = round(s, 1)
                out[f"{who}_cpu_percent_of_one_core"] = round(100 * s / self.seconds, 1) if self.seconds else None
        if self.metrics_url:
            out["scrapes"], out["scrape_errors"] = len(self.samples), self.scrape_errors
            for name in GAUGES:
                xs = [s[name] for s in self.samples if name in s]
                if xs:
                    short = name.removeprefix("fieldsync_db_")
                    out[f"{short}_max"] = max(xs)
                    out[f"{short}_mean"] = round(sum(xs) / len(xs), 2)
        return out

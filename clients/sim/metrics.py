"""Counters, latency samples and a per-second time series: what the report and the plot are made of."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field


def percentile(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None when there is nothing to rank (an honest blank, not a zero)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Metrics:
    """Everything counted during a run; one instance per simulator process (single event loop, no locks)."""

    started: float = field(default_factory=time.monotonic)
    counters: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    merged: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # second since start -> (mutations acknowledged, [push latencies ms])
    series: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    acked_per_s: Counter[int] = field(default_factory=Counter)
    bytes_up: int = 0
    bytes_down: int = 0

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def sample(self, kind: str, ms: float) -> None:
        """One request latency (ms) of a kind (push, pull, upload, supervisor)."""
        self.latency[kind].append(ms)
        if kind == "push":
            self.series[int(self.now())].append(ms)

    def acked(self, n: int) -> None:
        """n mutations got their final result now (throughput over time)."""
        self.acked_per_s[int(self.now())] += n

    def latency_summary(self, kind: str) -> dict[str, float | None]:
        """p50/p95/p99 in ms, rounded for reading."""
        return summarize(self.latency.get(kind, []))


def summarize(xs: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (nearest rank, ms, rounded for reading) and the count: one summary for a process and a merged fleet."""
    out: dict[str, float | None] = {}
    for q in (50, 95, 99):
        v = percentile(xs, q)
        out[f"p{q}"] = round(v, 1) if v is not None else None
    out["count"] = len(xs)
    return out

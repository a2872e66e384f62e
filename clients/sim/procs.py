"""`--processes N`: one fleet split over N simulator processes (disjoint crews), one merged verdict.

One event loop tops out near one core, so a city-sized fleet would measure the load generator, not the server.
The parent creates the fleet's crews, hands each child whole crews, lets every child enrol and set up, starts all
shifts together (a barrier), measures the server side meanwhile, and merges the children's reports: counts are
summed and latency percentiles are recomputed from the children's raw samples (never averaged).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
import time
from dataclasses import replace
from typing import Any

import aiohttp

from .config import SimConfig
from .crews import CrewSlot, split
from .fleet import Fleet, SetupError, make_crews
from .metrics import summarize
from .probe import Probe
from .verdict import KEEP_EXAMPLES

GATE_TIMEOUT_S = 900.0  # enrolling and stocking a few thousand devices on a busy machine
FIRST = {"seed", "server", "settings", "features", "host_cpus", "load_average", "server_side"}
MAXED = {"duration_s", "quiesce_s"}

Samples = dict[str, list[float]]


def _child(config: SimConfig, credentials: dict[str, Any], gate: Any, results: Any, index: int) -> None:
    """One process's share: set up, wait for everyone, run the shift, judge its own devices, send report + samples."""
    from .cli import simulate

    async def wait_for_all() -> None:
        await asyncio.to_thread(gate.wait, GATE_TIMEOUT_S)

    try:
        rep, _, fleet = asyncio.run(simulate(config, credentials, gate=wait_for_all))
        results.put((index, rep, {k: list(v) for k, v in fleet.metrics.latency.items()}, None))
    except Exception as exc:  # outermost boundary of the child: the parent must learn why, and not hang on the gate
        gate.abort()
        results.put((index, None, None, f"{type(exc).__name__}: {exc}"))


async def _create_crews(config: SimConfig, credentials: dict[str, Any]) -> list[CrewSlot]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.request_timeout_s)) as session:
        fleet = Fleet(config, session, credentials)
        try:
            return await make_crews(fleet.admin, config, list(fleet.staff))
        finally:
            await fleet.close()


def run_processes(config: SimConfig, credentials: dict[str, Any],
                  probe: Probe | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], list[Samples]]:
    """Run the fleet over `config.processes` processes; returns (merged report, part reports, part samples)."""
    parts = [p for p in split(asyncio.run(_create_crews(config, credentials)), config.processes) if p]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited event loop or sockets
    gate = ctx.Barrier(len(parts) + 1)  # the children and this parent, which measures the shift
    results = ctx.Queue()
    procs, offset = [], 0
    for i, crews in enumerate(parts):
        n = sum(s.devices for s in crews)
        cfg = replace(config, crews=tuple(crews), devices=n, device_offset=offset, processes=1, report=None,
                      plot=None, metrics_url="", progress=config.progress and i == 0,
                      supervisor_rate=config.supervisor_rate / len(parts))  # the whole fleet keeps the asked rate
        offset += n
        proc = ctx.Process(target=_child, args=(cfg, credentials, gate, results, i), name=f"fieldsync-sim-{i}")
        proc.start()
        procs.append(proc)
    try:
        asyncio.run(_measure(config, gate, probe))
        got = _collect(results, procs, config)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
    errors = [f"process {i}: {err}" for i, _, _, err in got if err]
    if errors or len(got) < len(parts):
        raise SetupError("; ".join(errors) or f"only {len(got)} of {len(parts)} processes reported")
    got.sort(key=lambda r: r[0])
    reports, samples = [r[1] for r in got], [r[2] for r in got]
    merged = merge(reports, samples)
    if probe is not None:
        merged["server_side"] = probe.report()
    return merged, reports, samples


async def _measure(config: SimConfig, gate: Any, probe: Probe | None) -> None:
    try:
        await asyncio.to_thread(gate.wait, GATE_TIMEOUT_S)
    except threading.BrokenBarrierError:
        return  # a child failed its setup; its error arrives on the queue
    if probe is not None:
        async with aiohttp.ClientSession() as session:
            await probe.run(config.duration_s, session)


def _collect(results: Any, procs: list[Any], config: SimConfig) -> list[tuple[int, Any, Any, str | None]]:
    """Every child's (index, report, samples, error); stops early if all children died without reporting."""
    got: list[tuple[int, Any, Any, str | None]] = []
    deadline = time.monotonic() + config.duration_s + config.quiesce_timeout_s + GATE_TIMEOUT_S
    while len(got) < len(procs) and time.monotonic() < deadline:
        try:
            got.append(results.get(timeout=2.0))
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                break
    return got


def _latency(samples: list[Samples], kind: str) -> dict[str, float | None]:
    return summarize([x for s in samples for x in s.get(kind, [])])


def _sum(values: list[Any]) -> Any:
    """Counts add up (recursively through dicts of counts); anything else keeps the first part's value."""
    first = values[0]
    if isinstance(first, bool):
        return all(values)
    if isinstance(first, (int, float)) and all(isinstance(v, (int, float)) for v in values):
        total = sum(values)
        return round(total, 2) if isinstance(total, float) else total
    if isinstance(first, dict):
        keys = sorted({k for v in values for k in v}, key=str)
        return {k: _sum([v[k] for v in values if k in v]) for k in keys}
    return first


def merge(reports: list[dict[str, Any]], samples: list[Samples]) -> dict[str, Any]:
    """One report for the whole fleet: the verdict holds only if it holds in every part."""
    out: dict[str, Any] = {}
    for key in reports[0]:
        values = [r[key] for r in reports]
        if key.endswith("_latency_ms"):
            out[key] = _latency(samples, key.removesuffix("_latency_ms"))
        elif key in MAXED:
            out[key] = max(values)
        elif key in FIRST:
            out[key] = values[0]
        elif key == "examples":
            kinds = sorted({k for v in values for k in v})
            out[key] = {k: [x for v in values for x in v.get(k, [])][:KEEP_EXAMPLES] for k in kinds}
        else:
            out[key] = _sum(values)
    out["processes"] = len(reports)
    out["parts"] = [{"devices": r["devices"], "crews": r["crews"], "mutations_sent": r["mutations_sent"],
                     "lost": r["lost"], "duplicated": r["duplicated"], "diverged_devices": r["diverged_devices"],
                     "throughput_mutations_per_s": r["throughput_mutations_per_s"],
                     "push_p99_ms": r["push_latency_ms"]["p99"], "sim_cpu_s": r["sim_cpu_s"]} for r in reports]
    return out

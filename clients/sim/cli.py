"""`fieldsync-sim run`: drive a simulated crew fleet against a server and exit 0 only if the verdict holds."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from . import http1
from .config import SimConfig
from .fleet import Fleet, SetupError
from .probe import Probe
from .procs import run_processes
from .report import build, plot, table, write
from .spawn import SpawnedServer, SpawnError
from .verdict import Verdict, judge

EXIT_FAIL = 1   # the verdict failed: something was lost, duplicated or diverged
EXIT_SETUP = 2  # the run could not start (bad credentials, server down)


async def simulate(config: SimConfig, credentials: dict[str, Any], *, gate: Callable[[], Awaitable[None]] | None = None,
                   probe: Probe | None = None) -> tuple[dict[str, Any], Verdict, Fleet]:
    """One whole run: setup, shift, quiesce, verdict, report. Usable from tests without a subprocess.

    `gate` is awaited between setup and shift (other processes of the fleet); `probe` measures the server side.
    """
    cpu0, t0 = time.process_time(), time.monotonic()
    _dump_tasks_on_sigusr1()
    connector = aiohttp.TCPConnector(limit=config.connections, limit_per_host=config.connections)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        fleet = Fleet(config, session, credentials)
        try:
            fleet.start_gate, fleet.probe = gate, probe
            if probe is None and config.metrics_url:
                fleet.probe = Probe(metrics_url=config.metrics_url)
            await fleet.setup()
            await fleet.run()
            verdict = await judge(fleet)
        finally:
            await fleet.close()
    rep = build(fleet, verdict, time.process_time() - cpu0, time.monotonic() - t0)
    return rep, verdict, fleet


def _dump_tasks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints where every coroutine waits: the tool to diagnose a run that stalls."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            task.print_stack(limit=4, file=sys.stderr)

    try:
        loop.add_signal_handler(signal.SIGUSR1, dump)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals on this platform
        pass


def build_parser() -> argparse.ArgumentParser:
    """`run` with the options of issue 7; defaults describe a moderately faulty shift."""
    p = argparse.ArgumentParser(prog="fieldsync-sim", description="Simulated crew fleet: load test and convergence proof.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a shift and judge the server")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="server URL (default: the credentials file's `server`)", nargs="?", const="")
    where.add_argument("--spawn", action="store_true", help="start `fieldsync serve` in a temp dir and stop it after")
    r.add_argument("--credentials", type=Path, help="demo-credentials.json (needs the admin token)")
    d = SimConfig()
    r.add_argument("--devices", type=int, default=d.devices)
    r.add_argument("--duration", type=float, default=d.duration_s, help="shift length in seconds")
    r.add_argument("--seed", type=int, default=d.seed, help="same seed, same scenario")
    r.add_argument("--offline-fraction", type=float, default=d.offline_fraction)
    r.add_argument("--photo-rate", type=float, default=d.photo_rate, help="chance a worked ticket gets photos")
    r.add_argument("--supervisor-rate", type=float, default=d.supervisor_rate, help="actions per minute per department")
    r.add_argument("--fault-rate", type=float, default=d.fault_rate, help="chance per request of an injected fault")
    r.add_argument("--step", type=float, default=d.step_s, help="mean seconds between a crew's taps")
    r.add_argument("--connections", type=int, default=d.connections, help="HTTP connection pool size")
    r.add_argument("--request-timeout", type=float, default=d.request_timeout_s,
                   help="seconds before a request is given up client-side (the server may still commit it)")
    r.add_argument("--processes", type=int, default=d.processes,
                   help="split the fleet over N simulator processes (disjoint crews, one merged verdict)")
    r.add_argument("--existing-crews", action="store_true",
                   help="spread devices over the server's existing crews instead of creating crews of 2-4")
    r.add_argument("--metrics-url", default="", help="the server's Prometheus /metrics, scraped during the shift "
                   "(with --spawn: the spawned server's)")
    r.add_argument("--no-live", action="store_true", help="never use the live feed")
    r.add_argument("--no-photos", action="store_true", help="never upload photos")
    r.add_argument("--report", type=Path, help="write the JSON report here")
    r.add_argument("--plot", type=Path, help="PNG of throughput and latency over time (needs fieldsync[plot])")
    r.add_argument("--keep-server-dir", action="store_true", help="with --spawn: keep the temp dir (server log)")
    r.add_argument("--server-workers", type=int, default=1, metavar="N",
                   help="with --spawn: run `fieldsync serve --workers N` (N processes on one port, one pool each)")
    return p


def _config(args: argparse.Namespace, server: str) -> SimConfig:
    for name in ("offline_fraction", "photo_rate", "fault_rate"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise SystemExit(f"--{name.replace('_', '-')} must be in [0, 1)")
    if args.devices < 1 or args.duration <= 0:
        raise SystemExit("--devices must be >= 1 and --duration > 0")
    if args.processes < 1 or (args.processes > 1 and args.existing_crews):
        raise SystemExit("--processes must be >= 1, and more than 1 needs the fleet's own crews (no --existing-crews)")
    return SimConfig(
        server=server, devices=args.devices, duration_s=args.duration, seed=args.seed,
        offline_fraction=args.offline_fraction, photo_rate=args.photo_rate, supervisor_rate=args.supervisor_rate,
        fault_rate=args.fault_rate, step_s=args.step, connections=args.connections, live=not args.no_live,
        photos=not args.no_photos, report=args.report, plot=args.plot, processes=args.processes,
        existing_crews=args.existing_crews, metrics_url=args.metrics_url, request_timeout_s=args.request_timeout,
    )


def _run(config: SimConfig, creds: dict[str, Any], probe: Probe | None) -> tuple[dict[str, Any], Fleet | None]:
    """One process or several; the report is the whole fleet's either way."""
    if config.processes > 1:
        rep, _, _ = run_processes(config, creds, probe)
        return rep, None
    rep, _, fleet = asyncio.run(simulate(config, creds, probe=probe))
    return rep, fleet


def _finish(rep: dict[str, Any], fleet: Fleet | None, config: SimConfig) -> int:
    sys.stdout.write(table(rep) + "\n")
    if config.report is not None:
        write(rep, config.report)
        sys.stdout.write(f"report: {config.report}\n")
    if config.plot is not None:
        problem = plot(fleet, config.plot) if fleet is not None else "not available with --processes"
        sys.stdout.write((f"plot skipped: {problem}" if problem else f"plot: {config.plot}") + "\n")
    return 0 if rep["ok"] else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    try:
        if args.spawn:
            if args.server_workers < 1:
                raise SystemExit("--server-workers must be >= 1")
            with SpawnedServer(keep=args.keep_server_dir, workers=args.server_workers) as srv:
                creds = srv.credentials
                if args.credentials is not None:
                    creds = json.loads(args.credentials.read_text())
                config = _config(args, creds["server"])
                if not config.metrics_url:
                    config = replace(config, metrics_url=srv.metrics_url)
                probe = Probe(metrics_url=config.metrics_url, server_pids=srv.server_pids(),
                              postgres_pids=srv.postgres_pids(), database_url=srv.database_url())
                rep, fleet = _run(config, creds, probe)
                rep["server_side"]["workers"] = args.server_workers
                if not rep["ok"]:
                    sys.stderr.write(f"server log tail:\n{srv.log_tail(15)}\n")
                return _finish(rep, fleet, config)
        if args.credentials is None:
            sys.stderr.write("fieldsync-sim: --credentials is required with --server\n")
            return EXIT_SETUP
        creds = json.loads(args.credentials.read_text())
        config = _config(args, args.server or creds.get("server") or "")
        rep, fleet = _run(config, creds, Probe(metrics_url=config.metrics_url) if config.metrics_url else None)
        return _finish(rep, fleet, config)
    except (SetupError, SpawnError, OSError, aiohttp.ClientError, http1.TransportError) as exc:
        sys.stderr.write(f"fieldsync-sim: {exc}\n")
        return EXIT_SETUP
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

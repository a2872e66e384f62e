"""Hot-path benchmark (issue 17's workload): push and pull against PostgreSQL's own one-row UPDATE, same cluster, same run.

10,000 tickets, 50 crews x 200, one device per crew. Phases: initial pull of 50 devices at once; 50 x 100 one-mutation
pushes; 50 x 4 pushes of 25; a 1 % office change (95 updates + 5 reassignments/cancellations); 50 delta pulls at once;
50 empty polls at once. pgbench's one-row UPDATE at 8 and 32 clients runs first on the same cluster. Prints each
phase's throughput, p50/p99, ratio to pgbench@32, and CPU seconds of server, PostgreSQL and client per phase.

Run: .venv/bin/python ops/bench/bench_hotpath.py [--workers 1] [--pgbench-seconds 10] [--client lean|aiohttp] [--json out.json]
Every phase's requests go through the lean HTTP/1.1 client (clients/sim/http1.py) unless `--client aiohttp`: the
client runs on the same 2 cores as the server, and aiohttp's cost per request was larger than the server's
(ops/bench/bench_clients.py). Every pull page is still decoded and its changes counted. The JSON names the client.
Loopback only; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import msgpack  # noqa: E402
import bench_clients  # noqa: E402
from common import emit, mutation, start_server, stop_server, wait_ready  # noqa: E402
import push_replay  # noqa: E402
from pg_limits import Counters, delta as pg_delta  # noqa: E402

from protocol import PROTOCOL_VERSION, VERSION_HEADER  # noqa: E402
from sync_server.auth import Role, create_user, enroll_device  # noqa: E402
from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.engine.intake import NewTicket, insert_tickets  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402

MP = "application/msgpack"
CREWS, PER_CREW = 50, 200


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _ticks(pid: int) -> tuple[float, float, int]:
    """(own cpu s, reaped children cpu s, parent pid) of one process from /proc. Own CPU comes from schedstat (ns on
    CPU) where the kernel has it: stat's utime/stime are whole clock ticks (10 ms), and a phase of 50 requests spread
    over 20 backends moved each by a tick or two, so the per-request PostgreSQL figure was mostly rounding."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    try:
        own = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        own = (int(fields[11]) + int(fields[12])) / hz
    return own, (int(fields[13]) + int(fields[14])) / hz, int(fields[1])


def tree_cpu(root: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants (backends and workers come and go)."""
    parents: dict[int, int] = {}
    own: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cpu, reaped, ppid = _ticks(int(d))
        except (OSError, ValueError, IndexError):
            continue
        parents[int(d)] = ppid
        own[int(d)] = cpu + (reaped if int(d) == root else 0.0)
    total = 0.0
    for pid, cpu in own.items():
        p = pid
        while p in parents and p != root and p > 1:
            p = parents[p]
        if p == root:
            total += cpu
    return total


def backend_cpu(root: int, database: str) -> float:
    """CPU seconds of the live client backends of one database under a postmaster (the server's pool connections are
    long-lived): what its statements cost, apart from autovacuum, checkpoints and WAL writing (the rest of tree_cpu)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cpu, _, ppid = _ticks(int(d))
            title = Path(f"/proc/{d}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == root and title.startswith(f"postgres: fieldsync {database} ".encode()):
            total += cpu
    return total


def client_cpu() -> float:
    """This process's CPU seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """CPU of server, PostgreSQL and client between two points."""

    def __init__(self, server_pid: int, pg_pid: int) -> None:
        self.server_pid, self.pg_pid = server_pid, pg_pid

    def now(self) -> tuple[float, float, float, float]:
        return tree_cpu(self.server_pid), tree_cpu(self.pg_pid), client_cpu(), backend_cpu(self.pg_pid, "fieldsync")

    @staticmethod
    def delta(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> dict[str, float]:
        """pg_backends_cpu_s: the part of pg_cpu_s spent by the server's connections (statements), the rest being
        PostgreSQL's background work (autovacuum, checkpointer, WAL writer) and connections that came and went."""
        return {"server_cpu_s": round(b[0] - a[0], 4), "pg_cpu_s": round(b[1] - a[1], 4), "client_cpu_s": round(b[2] - a[2], 4),
                "pg_backends_cpu_s": round(b[3] - a[3], 4)}


async def seed(dsn: str) -> dict[str, Any]:
    """50 crews of one department, one device each, 200 assigned tickets per crew, a supervisor."""
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    out: dict[str, Any] = {"devices": []}
    rnd = random.Random(1)
    async with conn.transaction():
        dept = await conn.fetchval("INSERT INTO departments (code, name) VALUES ('sanitation', 'Sanitation') RETURNING id")
        await conn.execute("INSERT INTO service_types (name, code, department_id) VALUES ('Bulky Items', 'bulky_items', $1)", dept)
        for c in range(CREWS):
            crew = await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ($1, $2) RETURNING id", f"c{c:02d}", dept)
            _, tok = await enroll_device(conn, crew, f"c{c}", "bench")
            new = [NewTicket(service_type="Bulky Items", address=f"{rnd.randint(100, 20000)} W VANOWEN ST, 91406", zip="91406",
                             lat=34.19 + rnd.random() / 10, lon=-118.49 + rnd.random() / 10, crew_id=crew,
                             description="Mattress, sofa and two chairs on the parkway") for _ in range(PER_CREW)]
            recs = await insert_tickets(conn, new, actor_kind="system", actor="bench")
            out["devices"].append({"crew": f"c{c:02d}", "token": tok, "tickets": [str(t) for t in recs]})
        out["supervisor"] = await create_user(conn, "sup", Role.SUPERVISOR, dept)
    await conn.close()
    return out


def headers(token: str) -> dict[str, str]:
    """A device's sync request headers (msgpack both ways)."""
    return {"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION), "Content-Type": MP, "Accept": MP}


Client = bench_clients.LeanClient | bench_clients.AiohttpClient


async def pull_all(http: Client, dev: dict[str, Any], cursor: str | None) -> tuple[float, str, int]:
    """(ms, cursor, changes) for one complete pull (all pages), every page decoded."""
    t0 = time.perf_counter()
    n = 0
    for _ in range(100):
        status, body = await http.call("POST", "/v1/sync/pull", msgpack.packb({"cursor": cursor, "limit": 500}), dev["hdr"])
        assert status == 200, body[:300]
        page = msgpack.unpackb(body)
        n += len(page["changes"])
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    return (time.perf_counter() - t0) * 1000, cursor, n


async def pushes(http: Client, dev: dict[str, Any], n: int, size: int, lat: list[float], rnd: random.Random) -> None:
    """n pushes of `size` mutations, closed loop, each answered durably."""
    for _ in range(n):
        muts = [mutation(dev["seq"] + i + 1, rnd.choice(dev["tickets"]), rnd) for i in range(size)]
        t0 = time.perf_counter()
        status, body = await http.call("POST", "/v1/sync/push", msgpack.packb({"mutations": muts}), dev["hdr"])
        if status != 200:
            raise RuntimeError(body[:300])
        lat.append((time.perf_counter() - t0) * 1000)
        dev["seq"] += size


def summary(lat: list[float], seconds: float, mutations: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": len(lat), "seconds": round(seconds, 2), "p50_ms": round(pct(lat, 50), 1),
                           "p99_ms": round(pct(lat, 99), 1)}
    if mutations is not None:
        out["mutations_per_s"] = round(mutations / seconds, 1)
    return out


async def pgbench(pg: EmbeddedPostgres, seconds: int, clients: list[int], tcp: bool) -> tuple[dict[int, float], dict[str, Any]]:
    """PostgreSQL's durable one-row UPDATE (synchronous_commit on) at each client count, on this cluster, over the same
    transport as the server (Unix socket unless --pg-tcp); also its commits per WAL flush, the yardstick for ours."""
    env = dict(os.environ, PGPASSWORD=(pg.data_dir / "pg-password").read_text().strip())
    host = "127.0.0.1" if tcp else str(pg.pg_dir.resolve())
    base = [str(pg.bin_dir / "pgbench"), "-h", host, "-p", str(pg.port), "-U", "fieldsync"]
    subprocess.run([str(pg.bin_dir / "psql"), "-h", host, "-p", str(pg.port), "-U", "fieldsync", "-d", "postgres",
                    "-qc", "CREATE DATABASE pgb"], env=env, check=True, capture_output=True)
    subprocess.run(base + ["-i", "-q", "-s", "10", "pgb"], env=env, check=True, capture_output=True)
    script = Path(tempfile.mkstemp(suffix=".sql")[1])
    script.write_text("\\set aid random(1, 1000000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")
    out, wal = {}, {}
    counters = await Counters.open(pg.tcp_dsn("pgb") if tcp else pg.dsn("pgb"), "pgb")
    try:
        for c in clients:
            c0 = await counters.snapshot()
            text = (await asyncio.to_thread(subprocess.run, base + ["-n", "-c", str(c), "-j", "2", "-T", str(seconds), "-f",
                                                                   str(script), "pgb"],
                                            env=env, check=True, capture_output=True, text=True)).stdout
            out[c] = float(next(ln for ln in text.splitlines() if ln.startswith("tps")).split("=")[1].split()[0])
            wal[str(c)] = pg_delta(c0, await counters.snapshot(settle=True))
    finally:
        await counters.close()
    script.unlink()
    return out, wal


_TOP = """
SELECT calls, round(total_exec_time::numeric, 1) AS ms, round(total_plan_time::numeric, 1) AS plan_ms, round((total_exec_time / greatest(calls, 1))::numeric, 3) AS ms_per_call,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time + total_plan_time DESC LIMIT 12
"""


async def pg_top(dsn: str | None, reset: bool) -> list[dict[str, Any]]:
    """PostgreSQL execution time by statement since the last reset (only with --pg-stats)."""
    if dsn is None:
        return []
    conn = await asyncpg.connect(dsn)
    try:
        if reset:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
            return []
        return [{**dict(r), "ms": float(r["ms"]), "plan_ms": float(r["plan_ms"]), "ms_per_call": float(r["ms_per_call"])} for r in await conn.fetch(_TOP)]
    finally:
        await conn.close()


async def phases(url: str, seed_: dict[str, Any], meter: Meter, tps32: float, counters: Counters,
                 stats_dsn: str | None = None, client: str = "lean") -> dict[str, Any]:
    """Every phase through the named client; readiness is polled with aiohttp before any phase is measured."""
    out: dict[str, Any] = {}
    rnd = random.Random(7)
    async with aiohttp.ClientSession() as ready:
        await wait_ready(ready, url, 300)
    http = bench_clients.make(client, url)
    devs = [dict(d, seq=0, cursor=None, hdr=http.prepare(headers(d["token"]))) for d in seed_["devices"]]
    try:
        async def phase(name: str, coro_fn: Any, mutations: int | None = None) -> None:
            lat: list[float] = []
            await pg_top(stats_dsn, reset=True)
            w0 = await counters.snapshot()
            c0 = meter.now()
            # The client's own CPU is read right around the requests: meter.now() scans /proc (~30 ms of this
            # process's CPU with ~200 processes on the machine), which once landed in client_cpu_s (~0.5 ms per poll).
            cli0, t0 = client_cpu(), time.perf_counter()
            await coro_fn(lat)
            secs, cli1 = time.perf_counter() - t0, client_cpu()
            out[name] = {**summary(lat, secs, mutations), **Meter.delta(c0, meter.now()),
                         "client_cpu_s": round(cli1 - cli0, 4)}
            out[name]["pg"] = pg_delta(w0, await counters.snapshot(settle=True), len(lat))
            if stats_dsn:
                out[name]["pg_statements"] = await pg_top(stats_dsn, reset=False)
            if mutations is not None:
                out[name]["ratio_to_pgbench32"] = round(mutations / secs / tps32, 3)

        async def initial(lat: list[float]) -> None:
            async def one(d: dict[str, Any]) -> None:
                ms, d["cursor"], n = await pull_all(http, d, None)
                assert n == PER_CREW, n
                lat.append(ms)
            await asyncio.gather(*(one(d) for d in devs))

        await phase("initial_pull_50x200", initial)
        await phase("push_50x100x1", lambda lat: asyncio.gather(
            *(pushes(http, d, 100, 1, lat, random.Random(rnd.random())) for d in devs)), mutations=CREWS * 100)
        await phase("push_50x4x25", lambda lat: asyncio.gather(
            *(pushes(http, d, 4, 25, lat, random.Random(rnd.random())) for d in devs)), mutations=CREWS * 100)
        for d in devs:  # catch up with their own writes (not timed)
            _, d["cursor"], _ = await pull_all(http, d, d["cursor"])

        async def office(lat: list[float]) -> None:
            sup = http.prepare({"Authorization": f"Bearer {seed_['supervisor']}", "Content-Type": "application/json"})
            picks = [(d, t) for d in devs for t in d["tickets"][:2]][:100]
            for i, (d, t) in enumerate(picks):
                if i < 95:
                    method, path, body = "PATCH", f"/v1/tickets/{t}", {"priority": "high" if i % 2 else "low"}
                elif i < 98:
                    other = devs[(devs.index(d) + 1) % len(devs)]["crew"]
                    method, path, body = "POST", f"/v1/tickets/{t}/assign", {"crew": other}
                else:
                    method, path, body = "POST", f"/v1/tickets/{t}/cancel", {"reason": "resident cancelled"}
                t0 = time.perf_counter()
                status, _ = await http.call(method, path, json.dumps(body).encode(), sup)
                assert status == 200, (status, path)
                lat.append((time.perf_counter() - t0) * 1000)

        await phase("office_change_1pct", office)

        async def delta(lat: list[float]) -> None:
            async def one(d: dict[str, Any]) -> None:
                ms, d["cursor"], _ = await pull_all(http, d, d["cursor"])
                lat.append(ms)
            await asyncio.gather(*(one(d) for d in devs))

        await phase("delta_pull_50", delta)
        await phase("empty_poll_50", delta)
    finally:
        await http.close()
    return out


async def replay(pg: EmbeddedPostgres, dsn: str, url: str, args: argparse.Namespace, tps: dict[int, float],
                 phases_out: dict[str, Any]) -> dict[str, Any]:
    """A push's own SQL replayed by pgbench (ops/bench/push_replay.py), beside the one-row UPDATE and the HTTP phases:
    how close a push over HTTP gets to what PostgreSQL can do with exactly its statements."""
    conn = await asyncpg.connect(dsn)
    try:
        department = await conn.fetchval("SELECT id FROM departments WHERE code = 'sanitation'")
    finally:
        await conn.close()
    try:
        out = await push_replay.run(pg, dsn, url, headers, department, args.pgbench_seconds, args.pg_tcp)
    except RuntimeError as exc:  # a replay that cannot run must not cost the phases' figures
        return {"error": str(exc)[-2000:]}
    http_phase = {1: "push_50x100x1", push_replay.PER_PUSH: "push_50x4x25"}
    for size, name in http_phase.items():
        row = out[f"push_{size}"]
        for clients in ("8", "32"):
            row[clients]["ratio_to_pgbench_update"] = round(row[clients]["pushes_per_s"] / tps[int(clients)], 3)
        best = max(row["8"]["mutations_per_s"], row["32"]["mutations_per_s"])
        row["http_phase_share_of_replay"] = round(phases_out[name]["mutations_per_s"] / best, 3)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fs-hotpath-"))
    root.chmod(0o755)
    extra = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all", "pg_stat_statements.track_planning=on") if args.pg_stats else ()
    pg = EmbeddedPostgres(root / "data", extra_options=extra)
    dsn = pg.start()
    if args.pg_tcp:
        dsn = pg.tcp_dsn()
    server, counters = None, None
    try:
        seeded = await seed(dsn)
        tps, pgbench_wal = await pgbench(pg, args.pgbench_seconds, [8, 32], args.pg_tcp)
        pg_pid = int((pg.pg_dir / "postmaster.pid").read_text().split()[0])
        server, url = start_server(ROOT, dsn, root / "srv", args.workers)
        out: dict[str, Any] = {"client": args.client, "workers": args.workers, "pg_transport": "tcp" if args.pg_tcp else "unix",
                               "pgbench_tps": {"8": tps[8], "32": tps[32]}, "pgbench_pg": pgbench_wal}
        counters = await Counters.open(dsn, "fieldsync")
        out["phases"] = await phases(url, seeded, Meter(server.pid, pg_pid), tps[32], counters,
                                     dsn if args.pg_stats else None, args.client)
        if args.replay:
            out["push_replay"] = await replay(pg, dsn, url, args, tps, out["phases"])
        return out
    finally:
        if counters is not None:
            await counters.close()
        stop_server(server)
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pgbench-seconds", type=int, default=10)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--client", choices=bench_clients.CLIENTS, default="lean",
                    help="HTTP client of every phase: lean (clients/sim/http1.py, default) or aiohttp (the old client)")
    ap.add_argument("--pg-stats", action="store_true", help="per phase, PostgreSQL time by statement (pg_stat_statements)")
    ap.add_argument("--no-replay", dest="replay", action="store_false",
                    help="skip the pgbench replay of one push's captured SQL (ops/bench/push_replay.py)")
    ap.add_argument("--pg-tcp", action="store_true", help="server and pgbench reach PostgreSQL over loopback TCP "
                    "instead of the cluster's Unix socket (the embedded default), to compare the two")
    args = ap.parse_args()
    return emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    raise SystemExit(main())

"""Sync benchmark (issue 4): initial sync, delta pull under load, durable push throughput vs PostgreSQL's own ceiling.

Run: .venv/bin/python ops/bench/bench_sync.py [--devices 200] [--seconds 15] [--json out.json]
Starts a private PostgreSQL and `fieldsync serve` in a temp dir; loopback only; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
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
from common import emit, mutation, start_server, wait_ready  # noqa: E402
import asyncpg  # noqa: E402
import msgpack  # noqa: E402

from protocol import PROTOCOL_VERSION, VERSION_HEADER  # noqa: E402
from sync_server.auth import Role, create_user, enroll_device  # noqa: E402
from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.engine.intake import NewTicket, insert_tickets  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402

MP = "application/msgpack"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def seed(dsn: str, devices: int, big: int) -> dict[str, Any]:
    """One 'big' crew with `big` tickets, and devices/10 crews of 10 devices with 40 tickets each."""
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    creds: dict[str, Any] = {"big": [], "crews": {}}
    async with conn.transaction():
        dept = await conn.fetchval("INSERT INTO departments (code, name) VALUES ('sanitation', 'Sanitation') RETURNING id")
        await conn.execute("INSERT INTO service_types (name, code, department_id) VALUES ('Bulky Items', 'bulky_items', $1)", dept)
        big_crew = await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ('big', $1) RETURNING id", dept)
        creds["big"] = [(await enroll_device(conn, big_crew, "big", "bench"))[1]]
        rnd = random.Random(1)
        new = [NewTicket(service_type="Bulky Items", address=f"{rnd.randint(100, 20000)} W VANOWEN ST, 91406", zip="91406",
                         lat=34.19 + rnd.random() / 10, lon=-118.49 + rnd.random() / 10, crew_id=big_crew,
                         description="Mattress, sofa and two chairs on the parkway") for _ in range(big)]
        for i in range(0, len(new), 500):
            await insert_tickets(conn, new[i:i + 500], actor_kind="system", actor="bench")
        for c in range(max(1, devices // 10)):
            crew = await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ($1, $2) RETURNING id", f"c{c:02d}", dept)
            toks = [(await enroll_device(conn, crew, f"c{c}-{i}", "bench"))[1] for i in range(10)]
            recs = await insert_tickets(conn, [NewTicket(service_type="Bulky Items", address=f"{i} MAIN ST", crew_id=crew)
                                              for i in range(40)], actor_kind="system", actor="bench")
            creds["crews"][crew] = {"tokens": toks, "tickets": [str(t) for t in recs]}
        creds["supervisor"] = await create_user(conn, "sup", Role.SUPERVISOR, dept)
    await conn.close()
    return creds


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION), "Content-Type": MP, "Accept": MP}


async def pull_all(http: aiohttp.ClientSession, url: str, token: str, cursor: str | None, limit: int) -> tuple[float, float, int, str, int]:
    """(client ms, server ms, bytes, cursor, changes) for one complete pull."""
    client_ms = server_ms = 0.0
    nbytes = nchanges = 0
    while True:
        t0 = time.perf_counter()
        async with http.post(url + "/v1/sync/pull", data=msgpack.packb({"cursor": cursor, "limit": limit}), headers=headers(token)) as r:
            body = await r.read()
            assert r.status == 200, body[:300]
            st = r.headers.get("Server-Timing", "app;dur=0").split("dur=")[1]
        client_ms += (time.perf_counter() - t0) * 1000
        server_ms += float(st)
        nbytes += len(body)
        page = msgpack.unpackb(body)
        nchanges += len(page["changes"])
        cursor = page["cursor"]
        if not page["has_more"]:
            return client_ms, server_ms, nbytes, cursor, nchanges


async def push_loop(http: aiohttp.ClientSession, url: str, token: str, tickets: list[str], batch: int, until: float,
                    lat: list[float], counter: list[int], rnd: random.Random, seqs: dict[str, int],
                    pause: float = 0.0) -> None:
    """Closed loop: push a batch, wait for the durable answer (then `pause`), repeat until the deadline.

    `seqs` carries each token's last seq across phases: a device that pushes again continues its sequence (restarting
    at 1 reused seqs with other bodies, which the server refuses as seq_reused instead of measuring them)."""
    seq = seqs.get(token, 0)
    while time.perf_counter() < until:
        if pause:
            await asyncio.sleep(pause * (0.5 + rnd.random()))
        muts = [mutation(seq + i + 1, rnd.choice(tickets), rnd) for i in range(batch)]
        t0 = time.perf_counter()
        async with http.post(url + "/v1/sync/push", data=msgpack.packb({"mutations": muts}), headers=headers(token)) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(body[:300])
        lat.append((time.perf_counter() - t0) * 1000)
        seq += batch
        seqs[token] = seq
        counter[0] += batch


async def delta_loop(http: aiohttp.ClientSession, url: str, token: str, until: float, lat: list[float],
                     rnd: random.Random, interval: float) -> None:
    """A device that syncs every `interval` seconds on average (as after pokes), bounded by the deadline."""
    _, _, _, cursor, _ = await pull_all(http, url, token, None, 500)
    while time.perf_counter() < until:
        await asyncio.sleep(interval * (0.5 + rnd.random()))
        ms, _, _, cursor, _ = await pull_all(http, url, token, cursor, 500)
        lat.append(ms)


def pgbench(pg: EmbeddedPostgres, seconds: int, clients: int) -> float:
    """PostgreSQL's own single-row-update ceiling on this machine (tps, synchronous_commit on)."""
    env = dict(os.environ, PGPASSWORD=(pg.data_dir / "pg-password").read_text().strip())
    base = [str(pg.bin_dir / "pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "fieldsync"]
    subprocess.run(["sh", "-c", f"{pg.bin_dir}/psql -h 127.0.0.1 -p {pg.port} -U fieldsync -d postgres -qc 'CREATE DATABASE pgb'"],
                   env=env, check=True, capture_output=True)
    subprocess.run(base + ["-i", "-q", "-s", "10", "pgb"], env=env, check=True, capture_output=True)
    script = Path(tempfile.mkstemp(suffix=".sql")[1])
    script.write_text("\\set aid random(1, 1000000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")
    out = subprocess.run(base + ["-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", str(script), "pgb"],
                         env=env, check=True, capture_output=True, text=True).stdout
    script.unlink()
    line = next(ln for ln in out.splitlines() if ln.startswith("tps"))
    return float(line.split("=")[1].split()[0])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "data")
    dsn = pg.start()
    server = None
    try:
        creds = await seed(dsn, args.devices, args.big)
        server, url = start_server(ROOT, dsn, root / "srv", args.workers)
        conn = aiohttp.TCPConnector(limit=args.devices + 20)
        async with aiohttp.ClientSession(connector=conn) as http:
            await wait_ready(http, url, 200)
            out: dict[str, Any] = {"devices": args.devices, "seconds": args.seconds, "workers": args.workers}
            # 1. initial sync of the big scope
            init = [await pull_all(http, url, creds["big"][0], None, args.page) for _ in range(args.repeat)]
            out["initial_sync"] = {"tickets": init[0][4], "pages": -(-init[0][4] // args.page),
                                   "server_ms_median": statistics.median(i[1] for i in init),
                                   "client_ms_median": statistics.median(i[0] for i in init), "bytes": init[0][2]}
            crews = list(creds["crews"].values())
            rnd = random.Random(7)
            seqs: dict[str, int] = {}
            # 2. durable push throughput: every device pushes batches of 25 in a closed loop
            lat: list[float] = []
            counter = [0]
            t0 = time.perf_counter()
            until = t0 + args.seconds
            await asyncio.gather(*(push_loop(http, url, tok, c["tickets"], 25, until, lat, counter, random.Random(rnd.random()), seqs)
                                   for c in crews for tok in c["tokens"]))
            elapsed = time.perf_counter() - t0
            out["push"] = {"mutations": counter[0], "mutations_per_s": counter[0] / elapsed, "requests": len(lat),
                           "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
            # 3. delta pulls: every device syncs about once a second (pull; one device per crew also pushes a batch)
            plat: list[float] = []
            bg = [0]
            until = time.perf_counter() + args.seconds
            pushers = [push_loop(http, url, c["tokens"][0], c["tickets"], 25, until, [], bg, random.Random(rnd.random()), seqs,
                                 1.0)
                       for c in crews]
            pullers = [delta_loop(http, url, tok, until, plat, random.Random(rnd.random()), 1.0)
                       for c in crews for tok in c["tokens"]]
            await asyncio.gather(*pushers, *pullers)
            out["delta_pull"] = {"devices": len(pullers), "pulls": len(plat), "p50_ms": pct(plat, 50),
                                 "p99_ms": pct(plat, 99), "background_push_mutations_per_s": bg[0] / args.seconds}
        server.terminate()
        server.wait(timeout=30)
        server = None
        tps = pgbench(pg, args.seconds, 16)
        out["pgbench_single_row_update_tps"] = tps
        out["push_vs_pgbench_ratio"] = out["push"]["mutations_per_s"] / tps
        return out
    finally:
        if server is not None:
            server.kill()
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--big", type=int, default=2000, help="tickets in the initial-sync scope")
    ap.add_argument("--page", type=int, default=1000, help="pull page size (limit)")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    return emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    raise SystemExit(main())

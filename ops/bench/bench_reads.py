"""Server CPU per small read: rounds of 50 concurrent empty polls and of 50 concurrent delta pulls (after a 1 % office
change each), with the server's, PostgreSQL's and this client's CPU per request read from /proc around the pulls only.

bench_hotpath's phases run 50 requests once, which /proc's 10 ms ticks cannot resolve per request; this runs many
rounds of the same phases, so the per-request CPU is measurable, and keeps the server polled long enough to attach
py-spy to it (its pid is printed to stderr). On a shared machine, compare two trees with `--against DIR`: a second
server from another checkout (e.g. `git archive main | tar -x -C DIR`) serves the same database, and the rounds
alternate between the two (ABBA), so both see the same load; `--bare` adds a bare aiohttp handler (the floor).

Run: .venv/bin/python ops/bench/bench_reads.py [--workers 2] [--rounds 40] [--delta-rounds 10] [--against DIR] [--json out.json]
Loopback only; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import json  # noqa: E402

import aiohttp  # noqa: E402
import msgpack  # noqa: E402
import bench_clients  # noqa: E402
import bench_hotpath  # noqa: E402
from bench_hotpath import Meter, headers, pct, pull_all, seed  # noqa: E402
from common import emit, start_server, stop_server, wait_ready  # noqa: E402

from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402

BARE_SERVER = """
import sys
from aiohttp import web
async def pull(request):
    await request.read()
    return web.Response(body=b"x" * 180, content_type="application/msgpack")
app = web.Application()
app.router.add_post("/v1/sync/pull", pull)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def user_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a server process and its workers (direct children), from /proc."""
    hz = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == pid or int(fields[1]) == pid:
            user += int(fields[11]) / hz
            system += int(fields[12]) / hz
    return user, system


@dataclass
class Target:
    """One server under test, with its own device cursors (each server signs its own) and accumulated figures."""

    name: str
    http: Any  # bench_clients.LeanClient | AiohttpClient, on this target's url
    meter: Meter
    devs: list[dict[str, Any]]
    bare: bool = False
    lat: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def reset(self) -> None:
        self.lat, self.cpu, self.seconds = [], {}, 0.0

    def summary(self) -> dict[str, Any]:
        per = {k.replace("_cpu_s", "_ms_per_req"): round(1000 * v / len(self.lat), 3) for k, v in self.cpu.items()
               if not (self.bare and k.startswith("pg_"))}
        return {"requests": len(self.lat), "seconds": round(self.seconds, 2), "p50_ms": round(pct(self.lat, 50), 1),
                "p99_ms": round(pct(self.lat, 99), 1), **per}


async def one_round(t: Target, expect: int | None) -> None:
    """Every device pulls at once; the round's CPU is added to the target's."""

    async def one(d: dict[str, Any]) -> None:
        if t.bare:
            t0 = time.perf_counter()
            status, _ = await t.http.call("POST", "/v1/sync/pull", msgpack.packb({"cursor": None, "limit": 500}), d["hdr"])
            assert status == 200, status
            t.lat.append((time.perf_counter() - t0) * 1000)
            return
        ms, d["cursor"], changes = await pull_all(t.http, d, d["cursor"])
        assert expect is None or changes == expect, changes
        t.lat.append(ms)

    c0, s0, t0 = t.meter.now(), user_sys(t.meter.server_pid), time.perf_counter()
    await asyncio.gather(*(one(d) for d in t.devs))
    t.seconds += time.perf_counter() - t0
    s1 = user_sys(t.meter.server_pid)
    for k, v in {**Meter.delta(c0, t.meter.now()), "server_user_cpu_s": s1[0] - s0[0],
                 "server_sys_cpu_s": s1[1] - s0[1]}.items():
        t.cpu[k] = t.cpu.get(k, 0.0) + v


async def rounds(targets: list[Target], n: int, before: Any = None,
                 expect: int | None = None) -> dict[str, Any]:
    """n rounds on every target, alternating their order (ABBA); `before` (not measured) runs before each round."""
    for t in targets:
        t.reset()
    for i in range(n):
        if before is not None:
            await before(i)
        for t in targets if i % 2 == 0 else targets[::-1]:
            await one_round(t, None if t.bare else expect)
    return {t.name: t.summary() for t in targets}


async def office_change(http: Any, sup: str, devs: list[dict[str, Any]], rnd: int) -> None:
    """1 % of the 10,000 tickets: two per crew change priority (ten PATCHes in flight), not measured."""
    at, lap = (2 * rnd) % len(devs[0]["tickets"]), (2 * rnd) // len(devs[0]["tickets"])
    picks = [t for d in devs for t in d["tickets"][at:at + 2]]
    sem = asyncio.Semaphore(10)

    hdr = http.prepare({"Authorization": f"Bearer {sup}", "Content-Type": "application/json"})

    async def one(i: int, t: str) -> None:
        body = json.dumps({"priority": "high" if (i + rnd + lap) % 2 else "low"}).encode()
        async with sem:
            status, answer = await http.call("PATCH", f"/v1/tickets/{t}", body, hdr)
        assert status == 200, answer[:300]

    await asyncio.gather(*(one(i, t) for i, t in enumerate(picks)))


async def start_bare(http: aiohttp.ClientSession) -> tuple[subprocess.Popen[bytes], str]:  # aiohttp: waits only
    """The bare aiohttp handler, answering once it is up (bounded wait)."""
    port = 19000 + random.randint(0, 999)
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            async with http.post(url + "/v1/sync/pull", data=b"\x80") as r:
                await r.read()
            break
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    return bare, url


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fs-reads-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "data")
    dsn = pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bench_hotpath.PER_CREW = args.per_crew
        seeded = await seed(dsn)
        pg_pid = int((pg.pg_dir / "postmaster.pid").read_text().split()[0])
        trees = [("this", ROOT)] + ([("against", args.against.resolve())] if args.against else [])
        targets: list[Target] = []
        out: dict[str, Any] = {"workers": args.workers, "client": args.client, "rounds": args.rounds,
                               "delta_rounds": args.delta_rounds,
                               "trees": {name: str(tree) for name, tree in trees}}
        async with aiohttp.ClientSession() as http:  # readiness checks only; requests go through bench_clients
            for name, tree in trees:  # one at a time: a first start migrates and seeds nothing, but checks the schema
                server, url = start_server(tree, dsn, root / f"srv-{name}", args.workers)
                procs.append(server)
                await wait_ready(http, url, 300)
                print(f"{name} server pid {server.pid}", file=sys.stderr, flush=True)
                client = bench_clients.make(args.client, url)
                targets.append(Target(name, client, Meter(server.pid, pg_pid),
                                      [dict(d, cursor=None, hdr=client.prepare(headers(d["token"]))) for d in seeded["devices"]]))
            if args.bare:
                bare, url = await start_bare(http)
                procs.append(bare)
                client = bench_clients.make(args.client, url)
                targets.append(Target("bare_aiohttp", client, Meter(bare.pid, bare.pid),
                                      [dict(d, hdr=client.prepare(headers(d["token"]))) for d in seeded["devices"]], bare=True))
            for t in targets:
                if not t.bare:
                    for d in t.devs:
                        _, d["cursor"], _ = await pull_all(t.http, d, None)
            await rounds(targets, 4)  # warm every connection and code path
            c0 = [t.meter.now() for t in targets]
            await asyncio.sleep(args.idle_seconds)  # background work (live feed, pool gauges...) is in every figure
            out["idle_server_ms_per_s"] = {t.name: round(1000 * Meter.delta(c, t.meter.now())["server_cpu_s"] / args.idle_seconds, 1)
                                           for t, c in zip(targets, c0)}
            out["empty_poll_50"] = await rounds(targets, args.rounds, expect=0)

            async def change(i: int) -> None:
                await office_change(targets[0].http, seeded["supervisor"], targets[0].devs, i)

            if args.delta_rounds:
                out["delta_pull_50"] = await rounds([t for t in targets if not t.bare], args.delta_rounds,
                                                    before=change, expect=2)
            for t in targets:
                await t.http.close()
        return out
    finally:
        for p in procs:
            stop_server(p)
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40, help="rounds of 50 empty polls at once")
    ap.add_argument("--delta-rounds", type=int, default=10, help="rounds of a 1 %% office change, then 50 delta pulls")
    ap.add_argument("--client", choices=bench_clients.CLIENTS, default="lean", help="bench HTTP client (bench_clients.py)")
    ap.add_argument("--per-crew", type=int, default=200, help="tickets per crew (50 crews)")
    ap.add_argument("--against", type=Path, help="another source tree to serve the same database, rounds alternating")
    ap.add_argument("--bare", action="store_true", help="also the same polls against a bare aiohttp handler (the floor)")
    ap.add_argument("--idle-seconds", type=float, default=2.0, help="server CPU while nobody polls")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    return emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    raise SystemExit(main())

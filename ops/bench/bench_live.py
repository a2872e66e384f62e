"""Benchmark the live feed: push-commit → supervisor-event latency with N devices pushing, and memory per idle socket.

Runs a private PostgreSQL cluster (or --database-url) and `fieldsync serve` as a subprocess on loopback, so the
server's RSS is its own. Latency: every device pushes an `add_note` on its own ticket in a loop; the supervisor's
event for (ticket, version) is matched to the push. The commit happens between sending the push and reading its
response, so commit→event lies between (event − response) and (event − send); both are reported.

Usage: python ops/bench/bench_live.py [--devices 200] [--seconds 15] [--rate 1.0] [--idle 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from common import wait_ready  # noqa: E402
import asyncpg  # noqa: E402
import msgpack  # noqa: E402

from protocol import PROTOCOL_VERSION, VERSION_HEADER  # noqa: E402
from sync_server.auth import Role, create_user, enroll_device  # noqa: E402
from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.engine.intake import NewTicket, insert_tickets  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402


def raise_nofile() -> int:
    """5,000 sockets on both ends need more descriptors than the usual 1,024 soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


async def seed(dsn: str, devices: int) -> tuple[str, list[tuple[str, str]]]:
    """One department, crews of 20 devices, one ticket per device; returns (supervisor token, [(device token, ticket id)])."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        async with conn.transaction():
            dept = await conn.fetchval("INSERT INTO departments (code, name) VALUES ('sanitation', 'Sanitation') RETURNING id")
            await conn.execute("INSERT INTO service_types (name, code, department_id) VALUES ('Bulky Items', 'bulky_items', $1)", dept)
            sup = await create_user(conn, "bench-sup", Role.SUPERVISOR, dept)
            out: list[tuple[str, str]] = []
            crews = []
            for c in range(max(1, devices // 20)):
                crews.append(await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ($1, $2) RETURNING id", f"crew-{c}", dept))
            new = [NewTicket(service_type="Bulky Items", address=f"{100 + i} S MAIN ST", zip="90012", lat=34.05, lon=-118.25,
                             crew_id=crews[i % len(crews)], description=f"bench {i}") for i in range(devices)]
            recs = await insert_tickets(conn, new, actor_kind="system", actor="bench")
            for i, n in enumerate(new):
                _, token = await enroll_device(conn, crews[i % len(crews)], f"bench {i}", "bench")
                out.append((token, str(recs[n.id].ticket.id)))
        return sup, out
    finally:
        await conn.close()


class Server:
    """`fieldsync serve` against the bench database, in its own process."""

    def __init__(self, dsn: str, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env.update(FIELDSYNC_LOG_FORMAT="json", FIELDSYNC_LOG_LEVEL="warning", FIELDSYNC_POOL_MAX_SIZE="30")
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--data-dir", str(data_dir),
             "--no-demo", "--port", str(port)], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, self.url)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def latency(server: Server, sup_token: str, devices: list[tuple[str, str]], seconds: float, rate: float) -> dict[str, Any]:
    """Devices push for `seconds`; the supervisor's events are matched to pushes by (ticket, version)."""
    sent: dict[tuple[str, int], tuple[float, float]] = {}
    # The supervisor runs in its own process, so 200 device coroutines never delay its reads; perf_counter is
    # CLOCK_MONOTONIC, shared by every process on the machine, so its stamps compare with ours.
    out_file = Path(tempfile.mkstemp(prefix="bench-live-watch-")[1])
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--watch", server.url, sup_token, str(out_file), stdout=asyncio.subprocess.PIPE)
    assert watcher.stdout is not None
    assert (await watcher.stdout.readline()).strip() == b"ready"
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        stop_at = time.perf_counter() + seconds
        errors = 0

        async def device(token: str, ticket: str) -> None:
            nonlocal errors
            headers = {"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION),
                       "Content-Type": "application/msgpack", "Accept": "application/msgpack"}
            seq = 0
            await asyncio.sleep(random.random() / rate)
            while time.perf_counter() < stop_at:
                seq += 1
                body = msgpack.packb({"mutations": [{
                    "seq": seq, "op": "add_note", "ticket_id": ticket, "base_version": None,
                    "args": {"note_id": str(uuid.uuid4()), "text": f"bench {seq}"},
                    "device_time": datetime.now(timezone.utc).isoformat()}]})
                t0 = time.perf_counter()
                async with http.post(server.url + "/v1/sync/push", data=body, headers=headers) as r:
                    raw = await r.read()
                t1 = time.perf_counter()
                if r.status != 200:
                    errors += 1
                    seq -= 1
                else:
                    res = msgpack.unpackb(raw)["results"][0]
                    if res.get("ticket"):
                        sent[(ticket, res["ticket"]["version"])] = (t0, t1)
                await asyncio.sleep(random.expovariate(rate))

        await asyncio.gather(*(device(tok, tid) for tok, tid in devices))
    await asyncio.sleep(2.0)  # let the last events arrive
    watcher.send_signal(signal.SIGTERM)
    await watcher.wait()
    seen = {(t, ver): at for t, ver, at in json.loads(out_file.read_text())}
    out_file.unlink()
    upper = [(seen[k] - t0) * 1000 for k, (t0, _) in sent.items() if k in seen]
    lower = [(seen[k] - t1) * 1000 for k, (_, t1) in sent.items() if k in seen]
    push = [(t1 - t0) * 1000 for t0, t1 in sent.values()]
    return {
        "pushes": len(sent), "events_matched": len(upper), "missing": len(sent) - len(upper), "push_errors": errors,
        "pushes_per_s": round(len(sent) / seconds, 1),
        "send_to_event_ms": {"p50": round(pct(upper, 0.5), 1), "p99": round(pct(upper, 0.99), 1)},
        "response_to_event_ms": {"p50": round(pct(lower, 0.5), 1), "p99": round(pct(lower, 0.99), 1)},
        "push_roundtrip_ms": {"p50": round(pct(push, 0.5), 1), "p99": round(pct(push, 0.99), 1)},
    }


async def watch(url: str, token: str, out_file: str) -> None:
    """The supervisor process: stamp every ticket event on arrival, write them out on SIGTERM."""
    seen: dict[tuple[str, int], float] = {}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url.replace("http", "ws") + "/v1/live?encoding=msgpack",
                                   headers={"Authorization": f"Bearer {token}"}, max_msg_size=0)
        await ws.receive()  # the catch-up poke: subscribed
        sys.stdout.write("ready\n")
        sys.stdout.flush()

        async def read() -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    break
                ev = msgpack.unpackb(msg.data)
                if ev.get("type") == "event" and ev.get("ticket"):
                    seen.setdefault((ev["ticket_id"], ev["ticket"]["version"]), time.perf_counter())

        reader = asyncio.create_task(read())
        await stop.wait()
        reader.cancel()
        await ws.close()
    Path(out_file).write_text(json.dumps([[t, v, at] for (t, v), at in seen.items()]))


async def idle_memory(server: Server, devices: list[tuple[str, str]], count: int) -> dict[str, Any]:
    """Open `count` idle device sockets (each gets its connect poke) and report the server's RSS delta per socket."""
    import gc

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        # warm up: first connections allocate pools and caches that do not grow per socket
        warm = [await http.ws_connect(server.url.replace("http", "ws") + "/v1/live",
                                      headers={"Authorization": f"Bearer {devices[i % len(devices)][0]}"}) for i in range(50)]
        for w in warm:
            await w.receive()
        await asyncio.sleep(1.0)
        before = server.rss_kib()
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with sem:
                ws = await http.ws_connect(server.url.replace("http", "ws") + "/v1/live",
                                           headers={"Authorization": f"Bearer {devices[i % len(devices)][0]}"})
                await ws.receive()  # connect poke: the server has registered it
                sockets.append(ws)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        connect_s = time.perf_counter() - t0
        gc.collect()
        await asyncio.sleep(2.0)
        after = server.rss_kib()
        for ws in sockets + warm:
            await ws.close()
    return {"sockets": len(sockets), "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_socket": round((after - before) / max(1, len(sockets)), 2), "connect_s": round(connect_s, 1)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=0.2, help="pushes per second per device (Poisson; 0.2 = one every 5 s)")
    ap.add_argument("--idle", type=int, default=5000, help="idle sockets for the memory figure (0 skips)")
    ap.add_argument("--database-url", help="use this empty database instead of a private cluster")
    ap.add_argument("--watch", nargs=3, metavar=("URL", "TOKEN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.watch:
        await watch(*args.watch)
        return
    nofile = raise_nofile()
    root = Path(tempfile.mkdtemp(prefix="fs-bench-live-"))
    root.chmod(0o755)
    pg = None
    try:
        if args.database_url:
            dsn = args.database_url
        else:
            pg = EmbeddedPostgres(root / "data")
            pg.start()
            admin = await asyncpg.connect(pg.dsn("postgres"))
            await admin.execute("CREATE DATABASE bench_live")
            await admin.close()
            dsn = pg.dsn("bench_live")
        sup, devices = await seed(dsn, args.devices)
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = Server(dsn, root / "srv", port)
        try:
            await server.ready()
            out: dict[str, Any] = {"devices": args.devices, "seconds": args.seconds, "rate_per_device": args.rate,
                                   "nofile": nofile, "cpus": os.cpu_count()}
            out["latency"] = await latency(server, sup, devices, args.seconds, args.rate)
            if args.idle:
                out["idle"] = await idle_memory(server, devices, args.idle)
        finally:
            server.stop()
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    finally:
        if pg is not None:
            pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

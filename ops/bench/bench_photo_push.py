"""Photo and self-report push benchmark: the pushes that carry attach_photo or self_report, which the hot-path
benchmark's mix never sends, measured the same way (latency, CPU of server and PostgreSQL, PostgreSQL time per
statement with --pg-stats), so a change to their write path can be compared before/after in back-to-back pairs.

Workload: --crews crews of one department, one device each, 20 assigned tickets per crew; phases: each device pushes
--pushes pushes of [attach_photo, add_note] on its tickets (closed loop, all devices at once), then --pushes pushes of
one self_report with a note and items. The photos' bytes are never uploaded: every attach is a pending photo.

Run: .venv/bin/python ops/bench/bench_photo_push.py [--crews 10] [--pushes 40] [--pg-stats] [--json out.json]
Loopback only; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import msgpack  # noqa: E402
from bench_hotpath import Meter, headers, pg_top, summary  # noqa: E402
from common import emit, start_server, stop_server, wait_ready  # noqa: E402

from sync_server.auth import enroll_device  # noqa: E402
from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.engine.intake import NewTicket, insert_tickets  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402

PER_CREW = 20


async def seed(dsn: str, crews: int) -> list[dict[str, Any]]:
    """`crews` crews of one department, one device each, PER_CREW assigned tickets per crew."""
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    devices = []
    async with conn.transaction():
        dept = await conn.fetchval("INSERT INTO departments (code, name) VALUES ('sanitation', 'Sanitation') RETURNING id")
        await conn.execute("INSERT INTO service_types (name, code, department_id) VALUES ('Bulky Items', 'bulky_items', $1)", dept)
        for c in range(crews):
            crew = await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ($1, $2) RETURNING id", f"c{c:02d}", dept)
            _, tok = await enroll_device(conn, crew, f"c{c}", "bench")
            new = [NewTicket(service_type="Bulky Items", address=f"{100 + i} W VANOWEN ST, 91406", zip="91406",
                             lat=34.19, lon=-118.49, crew_id=crew) for i in range(PER_CREW)]
            recs = await insert_tickets(conn, new, actor_kind="system", actor="bench")
            devices.append({"token": tok, "tickets": [str(t) for t in recs], "seq": 0})
    await conn.close()
    return devices


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def photo_push(dev: dict[str, Any], rnd: random.Random) -> list[dict[str, Any]]:
    """attach_photo (a fresh hash) and a note on one of the device's tickets."""
    tid = rnd.choice(dev["tickets"])
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    s = dev["seq"]
    return [
        {"seq": s + 1, "op": "attach_photo", "ticket_id": tid, "device_time": _now(), "base_version": None,
         "args": {"sha256": sha, "kind": "after", "taken_at": _now(), "lat": 34.2, "lon": -118.5}},
        {"seq": s + 2, "op": "add_note", "ticket_id": tid, "device_time": _now(), "base_version": None,
         "args": {"note_id": str(uuid.uuid4()), "text": "Items at the curb, photo taken"}},
    ]


def self_report_push(dev: dict[str, Any], rnd: random.Random) -> list[dict[str, Any]]:
    """One self-reported, completed pickup with items and a note."""
    return [{"seq": dev["seq"] + 1, "op": "self_report", "ticket_id": str(uuid.uuid4()), "device_time": _now(),
             "base_version": None,
             "args": {"service_type": "Bulky Items", "address": f"{rnd.randint(100, 9999)} W VANOWEN ST", "zip": "91406",
                      "lat": 34.2, "lon": -118.5, "description": "found on the parkway", "resolution_code": "collected",
                      "items": [{"item_type": "mattress", "count": 1}], "note": "picked up on the way"}}]


async def pushes(http: aiohttp.ClientSession, url: str, dev: dict[str, Any], n: int, make: Any, lat: list[float],
                 rnd: random.Random) -> None:
    """n pushes built by `make`, closed loop; every result must be applied."""
    for _ in range(n):
        muts = make(dev, rnd)
        t0 = time.perf_counter()
        async with http.post(url + "/v1/sync/push", data=msgpack.packb({"mutations": muts}), headers=headers(dev["token"])) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(body[:300])
        lat.append((time.perf_counter() - t0) * 1000)
        statuses = [x["status"] for x in msgpack.unpackb(body)["results"]]
        if statuses != ["applied"] * len(muts):
            raise RuntimeError(f"not applied: {statuses}")
        dev["seq"] += len(muts)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Cluster, seed, server, the two phases; everything stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="fs-photopush-"))
    root.chmod(0o755)
    extra = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all") if args.pg_stats else ()
    pg = EmbeddedPostgres(root / "data", extra_options=extra)
    dsn = pg.start()
    server = None
    try:
        devs = await seed(dsn, args.crews)
        pg_pid = int((pg.pg_dir / "postmaster.pid").read_text().split()[0])
        server, url = start_server(ROOT, dsn, root / "srv")
        meter, stats = Meter(server.pid, pg_pid), dsn if args.pg_stats else None
        out: dict[str, Any] = {"crews": args.crews, "pushes_per_device": args.pushes}
        rnd = random.Random(3)
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, url)
            for name, make in (("photo_push", photo_push), ("self_report_push", self_report_push)):
                lat: list[float] = []
                await pg_top(stats, reset=True)
                c0, t0 = meter.now(), time.perf_counter()
                await asyncio.gather(*(pushes(http, url, d, args.pushes, make, lat, random.Random(rnd.random())) for d in devs))
                out[name] = {**summary(lat, time.perf_counter() - t0), **Meter.delta(c0, meter.now())}
                if stats:
                    out[name]["pg_statements"] = await pg_top(stats, reset=False)
        return out
    finally:
        stop_server(server)
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    """Parse flags, run, print (and save) the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crews", type=int, default=10)
    ap.add_argument("--pushes", type=int, default=40)
    ap.add_argument("--pg-stats", action="store_true", help="PostgreSQL time by statement per phase (pg_stat_statements)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    return emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    raise SystemExit(main())

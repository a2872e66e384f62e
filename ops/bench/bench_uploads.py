"""Photo upload benchmark (issue 5): N devices x M photos x ~3 MB over tus, half interrupted once and resumed.

Reports MB/s, p50/p99 seconds per photo, and the server's peak RSS growth above idle (target < 64 MiB: proof that
PATCH bodies stream to disk instead of piling up in memory). The server runs as `fieldsync serve` in its own process
so its RSS is measurable; a private PostgreSQL runs in a temp dir; loopback only; every loop is bounded.

Run: .venv/bin/python ops/bench/bench_uploads.py [--devices 50] [--photos 5] [--mb 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from common import emit, stop_server, wait_ready  # noqa: E402
import asyncpg  # noqa: E402
from PIL import Image  # noqa: E402

from sync_server.auth import enroll_device  # noqa: E402
from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.engine.intake import NewTicket, insert_tickets  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402

DEADLINE_S = 600.0


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def base_jpeg(mb: float) -> bytes:
    """One random-noise JPEG of about `mb` MB (noise does not compress, like a sharp phone photo)."""
    side = int((mb * 1_000_000 / 0.98) ** 0.5)  # q92 noise: ~0.98 bytes per pixel
    rnd = random.Random(5)
    img = Image.frombytes("RGB", (side, side), rnd.randbytes(side * side * 3))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def photo(base: bytes, n: int) -> bytes:
    """A distinct, still valid JPEG per photo: a COM segment with its number right after SOI."""
    text = f"bench photo {n}".encode()
    return base[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + base[2:]


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RssSampler(threading.Thread):
    """Polls the server's VmRSS every 20 ms (Linux /proc), keeping the peak since the last reset."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def rss(self) -> int:
        """Current resident set size in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)


async def seed(dsn: str, devices: int, photos: int, per_crew: int) -> list[dict[str, Any]]:
    """Crews of `per_crew` devices, one ticket per device."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        out: list[dict[str, Any]] = []
        async with conn.transaction():
            dept = await conn.fetchval("INSERT INTO departments (code, name) VALUES ('sanitation', 'Sanitation') RETURNING id")
            await conn.execute("INSERT INTO service_types (name, code, department_id) VALUES ('Bulky Items', 'bulky_items', $1)", dept)
            crew = None
            for i in range(devices):
                if i % per_crew == 0:
                    crew = await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ($1, $2) RETURNING id", f"c{i}", dept)
                assert crew is not None
                dev_id, token = await enroll_device(conn, crew, f"bench {i}", "bench")
                (rec,) = (await insert_tickets(conn, [NewTicket(service_type="Bulky Items", address=f"{100 + i} MAIN ST",
                                                               crew_id=crew)], actor_kind="system", actor="bench")).values()
                out.append({"device": dev_id, "token": token, "ticket": str(rec.ticket.id)})
    finally:
        await conn.close()
    return out


async def attach_all(dsn: str, devices: list[dict[str, Any]], base: bytes, photos: int) -> None:
    """Every photo is attached to its device's ticket before its bytes arrive (what push's attach_photo does), so each
    completed upload also flips a ticket to `available` through the change log."""
    rows = []
    for i, d in enumerate(devices):
        for k in range(photos):
            n = i * photos + k
            rows.append((d["ticket"], hashlib.sha256(photo(base, n)).hexdigest(), "before" if n % 2 else "after", d["device"]))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                               " VALUES ($1::uuid, $2, $3, now(), $4)", rows)
    finally:
        await conn.close()


def tus_headers(token: str, **extra: str) -> dict[str, str]:
    """Bearer + tus headers."""
    return {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **extra}


def meta_header(digest: str, ticket: str, n: int) -> str:
    """Upload-Metadata for one photo."""
    vals = {"sha256": digest, "ticket_id": ticket, "kind": "before" if n % 2 else "after",
            "taken_at": datetime.now(timezone.utc).isoformat(), "filename": f"IMG_{n:04d}.JPG"}
    return ",".join(f"{k} {b64encode(v.encode()).decode()}" for k, v in vals.items())


async def interrupted_patch(url: str, path: str, token: str, data: bytes, cut: int) -> None:
    """Send the first `cut` bytes of a full-length PATCH, then drop the connection like a phone losing signal."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    writer.write((f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
                  f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode())
    view = memoryview(data)[:cut]
    for i in range(0, len(view), 1 << 18):
        writer.write(view[i:i + (1 << 18)])
        await writer.drain()
    writer.transport.abort()
    del reader


async def upload_one(http: aiohttp.ClientSession, url: str, dev: dict[str, Any], data: bytes, n: int, interrupt: bool,
                     stats: dict[str, Any]) -> float:
    """create → (interrupted PATCH → HEAD) → PATCH rest; returns seconds for the photo."""
    t0 = time.perf_counter()
    digest = hashlib.sha256(data).hexdigest()
    async with http.post(url + "/v1/uploads", headers=tus_headers(
            dev["token"], **{"Upload-Length": str(len(data)), "Upload-Metadata": meta_header(digest, dev["ticket"], n)})) as r:
        assert r.status == 201, (r.status, await r.text())
        loc = r.headers["Location"]
    offset = 0
    if interrupt:
        await interrupted_patch(url, loc.removeprefix(url), dev["token"], data, random.randint(len(data) // 5, len(data) * 4 // 5))
        stats["interrupted"] += 1
    for _ in range(200):  # bounded: HEAD, then PATCH the rest from the server's offset
        if interrupt or offset:
            async with http.head(loc, headers=tus_headers(dev["token"])) as h:
                offset = int(h.headers["Upload-Offset"])
        async with http.patch(loc, data=memoryview(data)[offset:], headers=tus_headers(
                dev["token"], **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})) as p:
            await p.read()
            if p.status == 204:
                assert int(p.headers["Upload-Offset"]) == len(data)
                if interrupt:
                    stats["resumed_from"].append(offset)
                return time.perf_counter() - t0
            if p.status != 409:  # 409: the dropped request still holds its lease for a moment
                raise AssertionError(f"PATCH {p.status}: {await p.text()}")
            stats["retries_409"] += 1
        interrupt = True
        await asyncio.sleep(0.05)
    raise AssertionError("upload did not finish")


async def device_loop(http: aiohttp.ClientSession, url: str, dev: dict[str, Any], base: bytes, first: int, photos: int,
                      times: list[float], stats: dict[str, Any]) -> None:
    """One device uploads its photos one after another; every other photo is interrupted once."""
    for k in range(photos):
        n = first + k
        data = photo(base, n)
        times.append(await upload_one(http, url, dev, data, n, interrupt=n % 2 == 0, stats=stats))
        stats["bytes"] += len(data)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up PostgreSQL and the server, warm up, then run the fleet and sample the server's RSS."""
    root = Path(tempfile.mkdtemp(prefix="fs-bench-up-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg")
    dsn = pg.start()
    server: subprocess.Popen[bytes] | None = None
    try:
        devices = await seed(dsn, args.devices, args.photos, per_crew=5)
        base = base_jpeg(args.mb)
        await attach_all(dsn, devices, base, args.photos)
        port = free_port()
        env = dict(os.environ, FIELDSYNC_DATA_DIR=str(root / "srv"), FIELDSYNC_LOG_LEVEL="warning",
                   FIELDSYNC_MAX_UPLOADS_PER_DEVICE="4")
        server = subprocess.Popen([sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--port",
                                   str(port), "--no-demo"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        stats: dict[str, Any] = {"bytes": 0, "interrupted": 0, "retries_409": 0, "resumed_from": []}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.devices * 2 + 10)) as http:
            await wait_ready(http, url, 300)
            sampler = RssSampler(server.pid)
            cold = sampler.rss()
            # Warm-up: one upload imports Pillow/hashing paths, so "idle" below is a server that has served a photo.
            await upload_one(http, url, devices[0], photo(base, 10_000), 10_000, False, {"bytes": 0, "interrupted": 0,
                                                                                      "retries_409": 0, "resumed_from": []})
            await asyncio.sleep(0.5)
            idle = sampler.rss()
            sampler.start()
            times: list[float] = []
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(
                device_loop(http, url, d, base, i * args.photos, args.photos, times, stats) for i, d in enumerate(devices)
            )), DEADLINE_S)
            elapsed = time.perf_counter() - t0
            sampler.stop.set()
            sampler.join(timeout=5)
        conn = await asyncpg.connect(dsn)
        try:
            blobs = await conn.fetchval("SELECT count(*) FROM blobs")
            available = await conn.fetchval("SELECT count(*) FROM changes WHERE actor = 'uploads'")
        finally:
            await conn.close()
        total = args.devices * args.photos
        return {
            "devices": args.devices, "photos": total, "photo_bytes_avg": stats["bytes"] // total,
            "interrupted_and_resumed": stats["interrupted"], "lease_409_retries": stats["retries_409"],
            "seconds": round(elapsed, 2), "MB_per_s": round(stats["bytes"] / elapsed / 1e6, 1),
            "photo_seconds_p50": round(pct(times, 50), 3), "photo_seconds_p99": round(pct(times, 99), 3),
            "server_rss_cold_MiB": round(cold / 2**20, 1), "server_rss_idle_MiB": round(idle / 2**20, 1),
            "server_rss_peak_MiB": round(sampler.peak / 2**20, 1),
            "server_rss_growth_over_idle_MiB": round((sampler.peak - idle) / 2**20, 1),
            "blobs_rows": blobs, "target_growth_ok": (sampler.peak - idle) < 64 * 2**20,
            "change_rows_by_uploads": available,
        }
    finally:
        stop_server(server)
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--photos", type=int, default=5)
    p.add_argument("--mb", type=float, default=3.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    return emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())

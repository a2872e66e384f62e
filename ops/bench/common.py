"""Pieces every benchmark script shares: waiting for a spawned server, printing and saving the figures."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp


async def wait_ready(http: aiohttp.ClientSession, url: str, tries: int = 300) -> None:
    """Poll /readyz every 0.1 s until the spawned server answers 200 (bounded)."""
    for _ in range(tries):
        try:
            async with http.get(url + "/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("server did not become ready")


def emit(out: dict[str, Any], json_path: Path | None) -> int:
    """Figures as indented JSON on stdout, and into a file when asked."""
    text = json.dumps(out, indent=2)
    sys.stdout.write(text + "\n")
    if json_path:
        json_path.write_text(text)
    return 0


def mutation(seq: int, tid: str, rnd: random.Random) -> dict[str, Any]:
    """Field mix: quantities (70%), resolution codes (25%), notes (5%: a real ticket carries a handful, and every
    change re-renders the whole ticket, so a note-heavy mix measures document size rather than sync)."""
    x = rnd.random()
    if x < 0.7:
        op, args = "set_items", {"items": [{"item_type": rnd.choice(["mattress", "sofa", "chair", "tv"]), "count": rnd.randint(0, 9)}]}
    elif x < 0.95:
        op, args = "set_resolution", {"resolution_code": rnd.choice(["collected", "partial", "not_found"])}
    else:
        op, args = "add_note", {"note_id": str(uuid.uuid4()), "text": "Items at the curb, gate code 1234"}
    return {"seq": seq, "op": op, "ticket_id": tid, "args": args, "base_version": None,
            "device_time": datetime.now(timezone.utc).isoformat()}


def start_server(tree: Path, dsn: str, data_dir: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """`fieldsync serve` from a source tree (its own code: cwd comes first on `-m`'s path) on a free-ish loopback port,
    quiet; every benchmark spawns its server this one way, so their figures compare."""
    port = 18000 + random.randint(0, 999)  # noqa: S311 - a port, not a secret
    env = dict(os.environ, FIELDSYNC_DATA_DIR=str(data_dir), FIELDSYNC_LOG_LEVEL="warning")
    server = subprocess.Popen([sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--port",
                               str(port), "--no-demo", *(["--workers", str(workers)] if workers > 1 else [])],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree)
    return server, f"http://127.0.0.1:{port}"


def stop_server(server: subprocess.Popen[bytes] | None) -> None:
    """Stop a spawned server: SIGTERM, then SIGKILL if it has not exited within 30 s (a bench never hangs on it)."""
    if server is None:
        return
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()

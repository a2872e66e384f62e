"""Housekeeping of upload sessions, run by every process's sweeper: expire idle sessions, drop their partial bytes,
purge old finished rows and partial files no session owns. Safe to run everywhere at once (SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from sync_server.engine.uploads import Uploads, forget_partial, remove_file
from sync_server.storage import uploads as sql

log = structlog.get_logger(__name__)


async def sweep_expired(up: Uploads, batch: int = 500) -> int:
    """Expire idle sessions and delete their partial bytes; safe to run in every process at once (SKIP LOCKED)."""
    total = 0
    for _ in range(20):  # bounded per sweep; the next sweep continues
        async with up.pool.acquire() as conn:
            ids = await sql.expire_due(conn, batch)
        for upload_id in ids:
            await forget_partial(up, upload_id)
        total += len(ids)
        if len(ids) < batch:
            break
    async with up.pool.acquire() as conn:
        await sql.purge_finished(conn, 7 * 24 * 3600.0)
    total += await _sweep_orphans(up)
    if total:
        log.info("upload.expired", count=total)
    return total


async def _sweep_orphans(up: Uploads, min_age: float = 3600.0) -> int:
    """Partial files with no open session (a crash between forgetting a session and unlinking its file), and stale
    derivative scratch files: deleted once they are old enough that no request can still be using them."""
    loop = asyncio.get_running_loop()

    def old_files() -> list[Path]:
        if not up.partial_dir.exists():
            return []
        cutoff = time.time() - min_age
        out = []
        for p in up.partial_dir.iterdir():
            try:
                if p.is_file() and p.stat().st_mtime < cutoff:
                    out.append(p)
            except FileNotFoundError:
                continue
        return out

    files = await loop.run_in_executor(None, old_files)
    if not files:
        return 0
    ids = [p.name.removesuffix(".part") for p in files if p.name.endswith(".part")]
    async with up.pool.acquire() as conn:
        live = {r["id"] for r in await conn.fetch(
            "SELECT id FROM upload_sessions WHERE id = ANY($1::text[]) AND state = 'open'", ids)}
    doomed = [p for p in files if p.name.removesuffix(".part") not in live]
    for p in doomed:
        await remove_file(p)
    return len(doomed)

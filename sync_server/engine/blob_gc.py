"""Photo collection: photos nothing shows any more, and bytes that never got their row, are deleted after a grace period.

Two kinds of dead bytes exist. A verified photo whose row no ticket and no upload names (uploaded, never attached)
is collected `unattached_photo_days` after verification: row first (under the photo's advisory lock, the same lock
a push attach and a verification take, so neither can slip in between the check and the delete), then its objects.
And bytes without a row: an upload publishes the original before the transaction that records it, so a rolled-back
commit or a killed process leaves an object nobody knows (also the objects of a row collected by a process that
died before deleting them, and stored partial pieces of uploads that ended). Those are found by listing the store
one hash-prefix shard at a time and deleted `blob_orphan_grace_hours` after they were written, unless a row or an
upload session (open, or active within the grace) names the hash: an upload in progress may complete with it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from sync_server import images
from sync_server.blobs import BlobStore, BlobStoreUnavailable, Variant, blob_key, derivative_key
from sync_server.blobs.fs import FsBlobStore
from sync_server.engine.upload_parts import PREFIX as PARTIALS
from sync_server.settings import Settings
from sync_server.storage import retention as sql
from sync_server.storage.uploads import lock_photo

log = structlog.get_logger(__name__)
JOB = "blob_gc"
PAGE = 200  # photo locks per transaction: well inside the lock table (max_locks_per_transaction x connections)
MAX_PAGES = 500  # bounded per run; the next run continues
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class GcReport:
    """What one collection removed, for the log, the CLI and maintenance_runs."""

    unattached: int  # photo rows (and their objects) nothing showed or could still attach
    orphans: int  # objects with no row, older than the grace
    partials: int  # stored partial pieces of uploads no longer open
    temp_files: int  # torn temp files of the filesystem store
    rows_cutoff: str  # photos verified before this were examined; the next run starts a day before it


async def collect(pool: asyncpg.Pool, store: BlobStore, settings: Settings) -> GcReport:
    """One full collection; safe beside live traffic and beside a second collector (each delete re-checks)."""
    cutoff = await _db_cutoff(pool, timedelta(days=settings.unattached_photo_days))
    unattached = await _collect_rows(pool, store, cutoff, await _previous_cutoff(pool))
    grace = timedelta(hours=settings.blob_orphan_grace_hours)
    orphans = await _sweep_store(pool, store, grace)
    partials = await _sweep_partials(pool, store, grace)
    temp = 0
    if isinstance(store, FsBlobStore):
        temp = await asyncio.get_running_loop().run_in_executor(None, store.sweep_temp, grace.total_seconds())
    report = GcReport(unattached, orphans, partials, temp, cutoff.isoformat())
    log.info("blobs.collected", **asdict(report))
    return report


async def collect_if_due(pool: asyncpg.Pool, store: BlobStore, settings: Settings, *, force: bool = False
                         ) -> GcReport | None:
    """Run a collection when no process of the deployment started one within `blob_gc_interval_s` (or `force`)."""
    async with pool.acquire() as conn:
        if not await sql.claim_run(conn, JOB, 0.0 if force else settings.blob_gc_interval_s):
            return None
    report = await collect(pool, store, settings)
    async with pool.acquire() as conn:
        await sql.finish_run(conn, JOB, json.dumps(asdict(report)))
    return report


async def _db_cutoff(pool: asyncpg.Pool, grace: timedelta) -> datetime:
    """now() - grace by the database clock, the clock every row's timestamp was written with."""
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT now() - $1::interval", grace)  # type: ignore[no-any-return]


async def _previous_cutoff(pool: asyncpg.Pool) -> datetime | None:
    """Where the last finished collection stopped: a photo attached once stays attached (ticket_photos rows are never
    deleted), so only photos verified since then, less a day for transactions that committed late, need a look."""
    async with pool.acquire() as conn:
        raw = await conn.fetchval("SELECT report->>'rows_cutoff' FROM maintenance_runs WHERE job = $1"
                                  " AND finished_at IS NOT NULL", JOB)
    return datetime.fromisoformat(raw) - timedelta(days=1) if raw else None


async def _collect_rows(pool: asyncpg.Pool, store: BlobStore, cutoff: datetime, since: datetime | None) -> int:
    """Delete unprotected photo rows verified in [since, cutoff) page by page, then their objects (a crash in
    between leaves orphans, which the store sweep collects)."""
    after: tuple[datetime, str] | None = (since, "") if since is not None else None
    total = 0
    for _ in range(MAX_PAGES):
        async with pool.acquire() as conn:
            page = await sql.unreferenced_blobs(conn, cutoff, after, PAGE)
            if not page:
                break
            after = (page[-1]["verified_at"], page[-1]["sha256"])
            shas = sorted(r["sha256"] for r in page)
            async with conn.transaction():
                for sha in shas:  # sorted: the lock order a push uses for its photos
                    await lock_photo(conn, sha)
                gone = await sql.collect_blobs(conn, shas, cutoff)
        for sha in gone:
            await _delete_objects(store, sha)
        total += len(gone)
    return total


async def _delete_objects(store: BlobStore, sha: str) -> None:
    """The original and the current derivatives; a store failure leaves orphans for the next sweep."""
    keys = [blob_key(Variant.ORIGINAL, sha)] + [
        derivative_key(v, sha, images.DERIVATIVE_VERSION) for v in (Variant.THUMB, Variant.DISPLAY)]
    try:
        for key in keys:
            await store.delete(key)
    except (BlobStoreUnavailable, OSError) as exc:
        log.warning("blobs.delete_failed", sha256=sha, error=str(exc))


async def _sweep_store(pool: asyncpg.Pool, store: BlobStore, grace: timedelta) -> int:
    """Objects whose hash has no row and no live upload, written before the grace: one two-hex shard at a time."""
    cutoff = await _db_cutoff(pool, grace)
    oldest = time.time() - grace.total_seconds()
    deleted = 0
    for shard in range(256):
        aa = f"{shard:02x}"
        prefixes = [f"{Variant.ORIGINAL.value}/{aa}/"] + [
            f"{v.value}/v{images.DERIVATIVE_VERSION}/{aa}/" for v in (Variant.THUMB, Variant.DISPLAY)]
        old: dict[str, str] = {}
        for prefix in prefixes:
            for key, info in (await store.list_objects(prefix)).items():
                sha = key.rsplit("/", 1)[-1]
                if _SHA.match(sha) and info.modified < oldest:
                    old[key] = sha
        if not old:
            continue
        async with pool.acquire() as conn:
            known = await sql.known_hashes(conn, sorted(set(old.values())), cutoff)
        for key, sha in sorted(old.items()):
            if sha not in known and await _delete_orphan(pool, store, key, sha, cutoff, grace):
                deleted += 1
    return deleted


async def _delete_orphan(pool: asyncpg.Pool, store: BlobStore, key: str, sha: str, cutoff: datetime,
                         grace: timedelta) -> bool:
    """Delete one object without a row, re-checked under the photo's lock: a verification of the same hash (which
    takes that lock to insert the row) either committed before (then it is known) or waits until it is gone; the
    object is re-read too, so bytes an upload published since the listing are kept."""
    async with pool.acquire() as conn, conn.transaction():
        await lock_photo(conn, sha)
        if await sql.known_hashes(conn, [sha], cutoff):
            return False
        stat = await store.stat(key)
        if stat is None or stat.modified is None or stat.modified >= time.time() - grace.total_seconds():
            return False
        await store.delete(key)
    log.info("blobs.orphan_deleted", key=key)
    return True


async def _sweep_partials(pool: asyncpg.Pool, store: BlobStore, grace: timedelta) -> int:
    """Stored pieces (upload_partials=store) of uploads that are no longer open: completed, expired or terminated
    sessions whose pieces a crash kept `forget` from deleting."""
    listed = await store.list_objects(PARTIALS)
    if not listed:
        return 0
    oldest = time.time() - grace.total_seconds()
    by_upload: dict[str, list[str]] = {}
    for key, info in listed.items():
        parts = key[len(PARTIALS):].split("/")
        if len(parts) == 2 and info.modified < oldest:
            by_upload.setdefault(parts[0], []).append(key)
    async with pool.acquire() as conn:
        live = await sql.open_uploads(conn, sorted(by_upload))
    deleted = 0
    for upload_id, keys in sorted(by_upload.items()):
        if upload_id in live:
            continue
        for key in keys:
            await store.delete(key)
            deleted += 1
    return deleted

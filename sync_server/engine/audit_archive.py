"""Audit archive: move audit rows older than a date into an NDJSON file, then delete them in bounded batches.

A row is deleted only after it is written and fsynced to the file, so a crash (or a full disk) loses nothing: the
rows already deleted are in the file, and a rerun archives the rest into a new file. The archive audits itself: a
row when it starts and one with the count, id range and the file's SHA-256 when it ends (both younger than any
date the archive takes, so they stay).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import asyncpg
import structlog

from sync_server.storage import retention as sql

log = structlog.get_logger(__name__)
MIN_AGE = timedelta(days=1)  # an archive never reaches into the last day: those rows are still being written


class ArchiveRefused(Exception):
    """The archive would overwrite a file or reach into rows still being written; nothing was changed."""


@dataclass(frozen=True)
class ArchiveReport:
    """What one archive run moved, printed by the CLI and recorded in its closing audit row."""

    rows: int
    first_id: int | None
    last_id: int | None
    file: str
    sha256: str
    before: str


async def archive(conn: asyncpg.Connection, before: datetime, dest: Path, *, actor: str, batch: int = 5000
                  ) -> ArchiveReport:
    """Write every audit row older than `before` to `dest` (NDJSON, gzip if it ends in .gz), deleting as it goes."""
    if await conn.fetchval("SELECT $1::timestamptz > now() - $2::interval", before, MIN_AGE):
        raise ArchiveRefused(f"--before must be at least {MIN_AGE.days} day in the past")
    try:
        raw = open(dest, "xb")  # never overwrite an earlier archive
    except FileExistsError:
        raise ArchiveRefused(f"{dest} exists; archive to a new file") from None
    await sql.audit_record(conn, actor, "audit.archive_started",
                           json.dumps({"before": before.isoformat(), "file": str(dest)}))
    digest = hashlib.sha256()
    out: BinaryIO = gzip.GzipFile(fileobj=_Hashing(raw, digest), mode="wb") if dest.suffix == ".gz" else _Hashing(raw, digest)  # type: ignore[assignment]
    rows, first, last, after = 0, None, None, 0
    loop = asyncio.get_running_loop()
    try:
        bound = await sql.audit_boundary(conn, before)
        while True:
            page = await sql.audit_page(conn, before, after, bound, batch)
            if not page:
                break
            data = b"".join(r["line"].encode() + b"\n" for r in page)
            await loop.run_in_executor(None, _write_synced, out, raw, data)  # on disk before a row is deleted
            ids = [r["id"] for r in page]
            await sql.audit_delete(conn, ids)
            rows += len(ids)
            first = ids[0] if first is None else first
            last = after = ids[-1]
            log.info("audit.archive_batch", rows=rows, last_id=last)
    finally:
        await loop.run_in_executor(None, _close, out, raw)
    report = ArchiveReport(rows, first, last, str(dest), digest.hexdigest(), before.isoformat())
    await sql.audit_record(conn, actor, "audit.archived", json.dumps(asdict(report)))
    log.info("audit.archived", **asdict(report))
    return report


class _Hashing:
    """A file wrapper that hashes what is written (the digest of the file as stored, compressed or not)."""

    def __init__(self, f: BinaryIO, digest: "hashlib._Hash") -> None:
        self.f, self.digest = f, digest

    def write(self, data: bytes) -> int:
        """Hash, then write through."""
        self.digest.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        """Flush the wrapped file."""
        self.f.flush()

    def close(self) -> None:
        """Close the wrapped file."""
        self.f.close()


def _write_synced(out: BinaryIO, raw: BinaryIO, data: bytes) -> None:
    """Write, then push the bytes (and a gzip sync point, so the file decompresses up to here) to disk."""
    out.write(data)
    if isinstance(out, gzip.GzipFile):
        out.flush(zlib.Z_SYNC_FLUSH)
    raw.flush()
    os.fsync(raw.fileno())


def _close(out: BinaryIO, raw: BinaryIO) -> None:
    """Finish the gzip stream (its trailer) and make the whole file durable."""
    if isinstance(out, gzip.GzipFile):
        out.close()
    raw.flush()
    os.fsync(raw.fileno())
    raw.close()

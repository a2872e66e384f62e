"""`fieldsync check`: verify a deployment's integrity after a restore, an incident or an upgrade: photos in the
store with their hash, stored ticket documents equal to their rows, change log and tickets agreeing, and every
device's last applied seq backed by its stored result (what exactly-once replays depend on)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from sync_server.blobs import BlobStore, Variant, blob_key
from sync_server.storage import integrity
from sync_server.domain.document import render
from sync_server.storage.tickets import load_tickets

PAGE = 500
MAX_PROBLEMS = 200  # a report, not a dump: the first ones show the pattern


@dataclass
class Report:
    """What was checked and what is wrong; `ok` only when nothing is."""

    checked: dict[str, int] = field(default_factory=lambda: {"tickets": 0, "photos": 0, "devices": 0})
    problems: list[dict[str, Any]] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)

    def problem(self, kind: str, **detail: Any) -> None:
        """Record one finding (all are counted, the first MAX_PROBLEMS listed)."""
        self.problem_counts[kind] = self.problem_counts.get(kind, 0) + 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"check": kind, **{k: str(v) for k, v in detail.items()}})

    @property
    def ok(self) -> bool:
        """No finding at all."""
        return not self.problem_counts

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ok": self.ok, "checked": self.checked, "problem_counts": self.problem_counts,
                "problems": self.problems}


async def check(pool: asyncpg.Pool, store: BlobStore, *, hash_photos: bool = True) -> Report:
    """Run every check; read-only."""
    report = Report()
    async with pool.acquire() as conn:
        await _tickets(conn, report)
        for ticket_id in await integrity.orphan_changes(conn, MAX_PROBLEMS):
            report.problem("change_without_ticket", ticket_id=ticket_id)
        for kind, parent in await integrity.orphan_children(conn, MAX_PROBLEMS):
            report.problem(kind, parent=parent)
        await _devices(conn, report)
    await _photos(pool, store, report, hash_photos)
    return report


async def _tickets(conn: asyncpg.Connection, report: Report) -> None:
    """Re-render each ticket from its rows (the one renderer the server uses) and compare with what is stored."""
    after: UUID | None = None
    while True:
        rows = await integrity.ticket_page(conn, after, PAGE)
        if not rows:
            return
        after = rows[-1]["id"]
        rendered = await load_tickets(conn, [r["id"] for r in rows])
        for r in rows:
            report.checked["tickets"] += 1
            tid = r["id"]
            fresh = render(rendered[tid].doc)
            current = fresh.hash
            if r["log_version"] is None:
                # retention drops the last row of a ticket no crew holds (a tombstone); a held one must have a row
                if r["holder_crew_id"] is not None:
                    report.problem("ticket_without_change_log", ticket_id=tid)
                continue
            if bytes(r["doc_hash"] or b"") != current:
                report.problem("ticket_checksum_mismatch", ticket_id=tid, detail="rows differ from the stored checksum")
            elif r["doc_json"] != fresh.json or bytes(r["doc_mp"] or b"") != fresh.mp:
                # every writer goes through engine.changes.commit_changes, which stores hash and document together
                report.problem("ticket_document_stale", ticket_id=tid, detail="stored document differs from its rows")
            if bytes(r["log_hash"]) != current or r["log_version"] != r["version"]:
                report.problem("change_log_behind_ticket", ticket_id=tid, version=r["version"],
                               log_version=r["log_version"])
            elif r["log_holder"] != r["holder_crew_id"]:
                report.problem("change_log_holder_mismatch", ticket_id=tid)
            if hashlib.sha256(r["log_json"].encode("utf-8")).digest() != bytes(r["log_hash"]):
                report.problem("change_row_corrupt", ticket_id=tid, detail="stored document does not hash to doc_hash")


async def _devices(conn: asyncpg.Connection, report: Report) -> None:
    """A device's last_seq must have its stored result unless retention pruned all of that device's results."""
    for r in await integrity.device_results(conn):
        report.checked["devices"] += 1
        if r["max_seq"] is not None and r["max_seq"] > r["last_seq"]:
            report.problem("result_beyond_last_seq", device_id=r["id"], last_seq=r["last_seq"], max_seq=r["max_seq"])
        if r["last_seq"] > 0 and not r["has_last"] and r["results"] > 0:
            report.problem("last_seq_without_result", device_id=r["id"], last_seq=r["last_seq"])


async def _photos(pool: asyncpg.Pool, store: BlobStore, report: Report, hash_photos: bool) -> None:
    """Every verified photo's original is in the store, with its size and (unless skipped) its SHA-256."""
    after = ""
    while True:
        async with pool.acquire() as conn:
            rows = await integrity.blob_page(conn, after, PAGE)
        if not rows:
            return
        after = rows[-1]["sha256"]
        for r in rows:
            report.checked["photos"] += 1
            key = blob_key(Variant.ORIGINAL, r["sha256"])
            stat = await store.stat(key)
            if stat is None:
                report.problem("photo_missing", sha256=r["sha256"])
                continue
            if stat.size != r["size"]:
                report.problem("photo_size_mismatch", sha256=r["sha256"], size=stat.size, expected=r["size"])
                continue
            if hash_photos:
                digest = hashlib.sha256()
                async for chunk in store.read_range(key, 0, stat.size):
                    digest.update(chunk)
                if digest.hexdigest() != r["sha256"]:
                    report.problem("photo_hash_mismatch", sha256=r["sha256"], actual=digest.hexdigest())

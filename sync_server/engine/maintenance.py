"""Retention: prune change-log history and tombstones older than the window, keeping every ticket's latest state, and
push results past their own window (never a device's latest few), in bounded batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog
from aiohttp import web

from sync_server.keys import POOL, SETTINGS
from sync_server.metrics import METRICS
from sync_server.storage import retention as sql
from sync_server.storage.credentials import prune_rate_limits

log = structlog.get_logger(__name__)
JOB = "prune"
# Stored push results outlive the change log: a phone that kept a batch for longer than the window still gets a
# precise answer for most of it, and a pruned one is answered as an expired replay, never re-applied (I1).
RESULTS_FACTOR = 4
MAX_BATCHES = 200  # per statement and run: a huge backlog is worked off over several runs, never in one burst
DEFAULT_BATCH = 5000
DEFAULT_KEEP = 1000


@dataclass(frozen=True)
class PruneReport:
    """How much was removed, for the log, the CLI and maintenance_runs."""

    superseded: int
    tombstones: int
    results: int


async def prune(conn: asyncpg.Connection, retention: timedelta, *, batch: int = DEFAULT_BATCH,
                keep_results: int = DEFAULT_KEEP) -> PruneReport:
    """Delete what no cursor younger than `retention` can need; cursors older than that are answered with a snapshot.

    Each batch commits on its own (every DELETE re-tests its whole predicate, so batches, a second pruner or a crash
    in between change nothing about what survives)."""
    now: datetime = await conn.fetchval("SELECT now()")
    cutoff = now - retention
    bound = await sql.changes_boundary(conn, cutoff)
    superseded = await _changes(conn, sql.SUPERSEDED_SQL, cutoff, batch, bound)
    tombstones = await _changes(conn, sql.TOMBSTONES_SQL, cutoff, batch, bound)
    results = 0
    for _ in range(MAX_BATCHES):
        n = await sql.prune_results(conn, now - retention * RESULTS_FACTOR, batch, keep_results)
        results += n
        if n < batch:
            break
    await prune_rate_limits(conn, 3600)  # counters of addresses not seen for an hour
    report = PruneReport(superseded, tombstones, results)
    log.info("maintenance.pruned", **asdict(report))
    return report


async def _changes(conn: asyncpg.Connection, statement: str, cutoff: datetime, batch: int, bound: int) -> int:
    """Walk the old end of the change log in id order, one batch per transaction."""
    after, total = 0, 0
    for _ in range(MAX_BATCHES):
        ids = await sql.prune_changes(conn, statement, cutoff, batch, after, bound)
        total += len(ids)
        if len(ids) < batch:
            break
        after = max(ids)
    return total


async def prune_if_due(pool: asyncpg.Pool, retention: timedelta, interval_s: float, batch: int, keep: int
                       ) -> PruneReport | None:
    """Prune when no process of the deployment started a prune within `interval_s` (one runs, the others skip)."""
    async with pool.acquire() as conn:
        if not await sql.claim_run(conn, JOB, interval_s * 0.9):
            return None
        report = await prune(conn, retention, batch=batch, keep_results=keep)
        await sql.finish_run(conn, JOB, json.dumps(asdict(report)))
    return report


async def prune_ctx(app: web.Application) -> AsyncIterator[None]:
    """Background pruning in every process; the claim in maintenance_runs makes the others' rounds cheap no-ops."""
    settings = app[SETTINGS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.prune_interval_s)
            try:
                report = await prune_if_due(app[POOL], timedelta(days=settings.retention_days),
                                            settings.prune_interval_s, settings.prune_batch_rows,
                                            settings.results_keep_per_device)
            except (OSError, asyncpg.PostgresError) as exc:  # the next round retries; sync never depends on it
                app[METRICS].retention_runs.labels(job=JOB, outcome="failed").inc()
                log.warning("maintenance.prune_failed", error=str(exc))
                continue
            if report is not None:
                app[METRICS].retention_runs.labels(job=JOB, outcome="ok").inc()
                for kind, n in asdict(report).items():
                    app[METRICS].retention_removed.labels(kind=kind).inc(n)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

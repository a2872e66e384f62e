"""Retention: prune change-log history and tombstones older than the window, keeping every ticket's latest state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog
from aiohttp import web

from sync_server.keys import POOL, SETTINGS
from sync_server.storage.credentials import prune_rate_limits

log = structlog.get_logger(__name__)
_LOCK_KEY = 0x46535052  # 'FSPR': one pruner at a time across processes
# Stored push results outlive the change log: a phone that kept a batch for longer than the window still gets a
# precise answer for most of it, and a pruned one is answered as an expired replay, never re-applied (I1).
RESULTS_FACTOR = 4


@dataclass(frozen=True)
class PruneReport:
    """How much was removed, for the log and the CLI."""

    superseded: int
    tombstones: int
    results: int


async def prune(conn: asyncpg.Connection, retention: timedelta) -> PruneReport:
    """Delete what no cursor younger than `retention` can need; cursors older than that are answered with a snapshot."""
    async with conn.transaction():
        got = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY)
        if not got:
            return PruneReport(0, 0, 0)
        # A row superseded by a later row of the same ticket that is itself outside the window: every snapshot a valid
        # cursor can name already sees the later row, so page sets and deltas are unchanged.
        superseded = await conn.execute(
            "DELETE FROM changes c WHERE c.created_at < now() - $1::interval AND EXISTS ("
            " SELECT 1 FROM changes n WHERE n.ticket_id = c.ticket_id AND n.id > c.id AND n.created_at < now() - $1::interval)",
            retention,
        )
        # A ticket's last row that removed it from every crew (closed, cancelled, ...) is a tombstone: once outside the
        # window no device can still need the removal, and snapshots never include it.
        tombstones = await conn.execute(
            "DELETE FROM changes c WHERE c.holder_crew_id IS NULL AND c.created_at < now() - $1::interval"
            " AND NOT EXISTS (SELECT 1 FROM changes n WHERE n.ticket_id = c.ticket_id AND n.id > c.id)"
            " AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = c.ticket_id AND t.holder_crew_id IS NOT NULL)",
            retention,
        )
        results = await conn.execute(
            "DELETE FROM mutation_results WHERE created_at < now() - $1::interval", retention * RESULTS_FACTOR
        )
        await prune_rate_limits(conn, 3600)  # counters of addresses not seen for an hour
    report = PruneReport(_count(superseded), _count(tombstones), _count(results))
    log.info("maintenance.pruned", **report.__dict__)
    return report


def _count(status: str) -> int:
    """asyncpg returns 'DELETE n'."""
    return int(status.split()[-1])


async def prune_ctx(app: web.Application) -> AsyncIterator[None]:
    """Background pruning in every process; the advisory lock makes concurrent runs cheap no-ops."""
    settings = app[SETTINGS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.prune_interval_s)
            try:
                async with app[POOL].acquire() as conn:
                    await prune(conn, timedelta(days=settings.retention_days))
            except (OSError, asyncpg.PostgresError) as exc:  # the next round retries; sync never depends on it
                log.warning("maintenance.prune_failed", error=str(exc))

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

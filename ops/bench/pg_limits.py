"""PostgreSQL-side yardsticks for the hot-path benchmark: what a phase cost PostgreSQL in commits, WAL flushes and new
sessions, so "does PostgreSQL already group our commits?" and "is anything churning connections?" have numbers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

_COUNTERS = """
SELECT d.xact_commit AS commits, d.sessions,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
       w.wal_records, w.wal_bytes::bigint AS wal_bytes, w.wal_write, w.wal_sync
FROM pg_stat_wal w, pg_stat_database d WHERE d.datname = $1
"""
# Backends flush their statistics at most once a second (PostgreSQL 15's PGSTAT_MIN_INTERVAL, also when they go idle):
# read the end of a phase only after that, or its last second is missing.
FLUSH_WAIT_S = 1.1


class Counters:
    """Cumulative commit/WAL/session counters of one database, read before and after a phase on one monitor connection
    (its own snapshot queries add one read-only commit per phase, nothing else)."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self.conn, self.database = conn, database

    @classmethod
    async def open(cls, dsn: str, database: str) -> Counters:
        """A monitor connection of its own, so it is one session opened before any phase starts."""
        return cls(await asyncpg.connect(dsn), database)

    async def close(self) -> None:
        """Close the monitor connection."""
        await self.conn.close()

    async def snapshot(self, settle: bool = False) -> dict[str, int]:
        """Current counters; `settle` first waits for the other backends' pending statistics to be flushed."""
        if settle:
            await asyncio.sleep(FLUSH_WAIT_S)
        row = await self.conn.fetchrow(_COUNTERS, self.database)
        assert row is not None, f"no pg_stat_database row for {self.database}"
        return {k: int(v) for k, v in row.items()}


def delta(a: dict[str, int], b: dict[str, int], requests: int | None = None) -> dict[str, Any]:
    """What happened between two snapshots: write transactions are xids consumed (read-only commits take none and
    never wait for a WAL flush), so write_xacts / wal_syncs > 1 means PostgreSQL already groups concurrent commits."""
    writes = b["next_xid"] - a["next_xid"]
    syncs = b["wal_sync"] - a["wal_sync"]
    out: dict[str, Any] = {
        "commits": b["commits"] - a["commits"], "write_xacts": writes, "wal_syncs": syncs,
        "wal_writes": b["wal_write"] - a["wal_write"], "wal_bytes": b["wal_bytes"] - a["wal_bytes"],
        "new_sessions": b["sessions"] - a["sessions"],
        "write_xacts_per_sync": round(writes / syncs, 2) if syncs else None,
    }
    if requests:
        out["wal_bytes_per_request"] = round(out["wal_bytes"] / requests)
        out["write_xacts_per_request"] = round(writes / requests, 2)
    return out

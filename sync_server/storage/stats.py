"""Deployment statistics for the metrics scrape: one bounded, read-only statement, so a slow database cannot stall
the scraper or hold locks."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

# Exact counts while tables are small; the planner's estimate (no full scan) once they are big.
STATS_SQL = """
WITH est AS (
    SELECT relname, reltuples FROM pg_class
    WHERE oid IN ('changes'::regclass, 'audit_log'::regclass, 'mutation_results'::regclass)
)
SELECT
    coalesce((SELECT extract(epoch FROM max(clock_timestamp() - xact_start)) FROM pg_stat_activity
              WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), 0)::float8 AS oldest_xact_age_s,
    CASE WHEN (SELECT reltuples FROM est WHERE relname = 'changes') >= 100000
         THEN (SELECT reltuples FROM est WHERE relname = 'changes')::bigint
         ELSE (SELECT count(*) FROM changes) END AS change_rows,
    CASE WHEN (SELECT reltuples FROM est WHERE relname = 'audit_log') >= 100000
         THEN (SELECT reltuples FROM est WHERE relname = 'audit_log')::bigint
         ELSE (SELECT count(*) FROM audit_log) END AS audit_rows,
    (SELECT count(*) FROM devices WHERE revoked_at IS NULL
        AND coalesce(last_seen_at, enrolled_at) < now() - make_interval(secs => $1::float8 * 3600)) AS stale_devices,
    (SELECT count(*) FROM conflicts WHERE resolved_at IS NULL) AS open_conflicts,
    (SELECT count(*) FROM upload_sessions WHERE state = 'open') AS open_uploads,
    CASE WHEN (SELECT reltuples FROM est WHERE relname = 'mutation_results') >= 100000
         THEN (SELECT reltuples FROM est WHERE relname = 'mutation_results')::bigint
         ELSE (SELECT count(*) FROM mutation_results) END AS result_rows,
    (SELECT coalesce(jsonb_object_agg(job, extract(epoch FROM now() - finished_at)), '{}')::text
     FROM maintenance_runs WHERE finished_at IS NOT NULL) AS job_ages
"""


@dataclass(frozen=True)
class DeploymentStats:
    """What the database gauges report."""

    oldest_xact_age_s: float
    change_rows: int
    audit_rows: int
    stale_devices: int
    open_conflicts: int
    open_uploads: int
    result_rows: int
    job_ages: dict[str, float]


async def deployment_stats(conn: asyncpg.Connection, stale_hours: float) -> DeploymentStats:
    """Read the gauges in one read-only transaction with a 2 s statement timeout (transaction-local: pool-safe)."""
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL statement_timeout = '2s'")
        row = await conn.fetchrow(STATS_SQL, stale_hours)
    assert row is not None
    return DeploymentStats(float(row["oldest_xact_age_s"]), int(row["change_rows"]), int(row["audit_rows"]),
                           int(row["stale_devices"]), int(row["open_conflicts"]), int(row["open_uploads"]),
                           int(row["result_rows"]), {k: float(v) for k, v in json.loads(row["job_ages"]).items()})

"""EXPLAIN (ANALYZE, BUFFERS) of every statement the retention job and the audit archive run, on a migrated database
with realistic row counts (default: 10,000 tickets, 100,000 change rows, 100,000 push results, 200,000 audit rows,
20,000 photos), each statement run inside a transaction that is rolled back.

The change log is laid out as an hourly pruner leaves it: the latest row of every ticket untouched for over a week,
then a week and an hour of history (the hour is what this run prunes).

Run: .venv/bin/python ops/bench/explain_prune.py [--without-0013] [--generic-plans] [--dsn DSN] [--changes 100000]
`--without-0013` drops migration 0013's indexes first: the "before" plans.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.storage import retention  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402

# The statements the pruner ran before issue 17 (one unbounded DELETE each), for the "before" plans.
OLD = {
    "superseded (old, unbounded)": "DELETE FROM changes c WHERE c.created_at < now() - $1::interval AND EXISTS ("
    " SELECT 1 FROM changes n WHERE n.ticket_id = c.ticket_id AND n.id > c.id AND n.created_at < now() - $1::interval)",
    "tombstones (old, unbounded)": "DELETE FROM changes c WHERE c.holder_crew_id IS NULL AND c.created_at < now() -"
    " $1::interval AND NOT EXISTS (SELECT 1 FROM changes n WHERE n.ticket_id = c.ticket_id AND n.id > c.id)"
    " AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = c.ticket_id AND t.holder_crew_id IS NOT NULL)",
    "push results (old, unbounded)": "DELETE FROM mutation_results WHERE created_at < now() - $1::interval",
}
INDEXES_0013 = ["mutation_results_created_brin", "upload_sessions_sha_idx", "blobs_verified_idx"]

POPULATE = """
INSERT INTO departments (code, name) VALUES ('san', 'Sanitation');
INSERT INTO service_types (name, code, department_id) VALUES ('Bulky Items', 'bulky', 1);
INSERT INTO crews (department_id, name) SELECT 1, 'crew-' || g FROM generate_series(1, 50) g;
INSERT INTO devices (id, crew_id, token_hash, last_seq, revoked_at)
SELECT 'dev-' || g, 1 + g % 50, sha256(('t' || g)::bytea), current_setting('fs.results')::int / 100, CASE WHEN g % 10 = 0 THEN now() END
FROM generate_series(1, 100) g;
INSERT INTO tickets (id, service_type_id, department_id, status, address, requested_at, crew_id)
SELECT md5('t' || g)::uuid, 1, 1, CASE WHEN g % 5 = 0 THEN 'closed' ELSE 'assigned' END, g || ' Main St',
       now() - interval '90 days', 1 + g % 50
FROM generate_series(1, current_setting('fs.tickets')::int) g;
-- The change log as an hourly pruner leaves it: 40 % of tickets untouched for 8-60 days keep only their latest row
-- (low ids), then a week and an hour of history in insert order over the other tickets (the last hour's oldest
-- rows are what this run prunes). Every fifth of those tickets ends in a removal (a tombstone candidate).
INSERT INTO changes (ticket_id, department_id, holder_crew_id, version, doc, doc_json, doc_mp, doc_hash, created_at)
SELECT md5('t' || g)::uuid, 1, 1 + g % 50, 1, jsonb_build_object('id', g, 'address', repeat('x', 400)),
       repeat('x', 400), convert_to(repeat('x', 400), 'UTF8'),
       sha256(g::text::bytea), now() - interval '60 days' + (g * interval '52 days' / current_setting('fs.tickets')::int)
FROM generate_series(1, current_setting('fs.tickets')::int * 4 / 10) g;
INSERT INTO changes (ticket_id, department_id, holder_crew_id, version, doc, doc_json, doc_mp, doc_hash, created_at)
SELECT md5('t' || t)::uuid, 1, CASE WHEN t % 5 = 0 AND g % 7 = 0 THEN NULL ELSE 1 + t % 50 END, g,
       jsonb_build_object('id', g, 'address', repeat('x', 400)), repeat('x', 400),
       convert_to(repeat('x', 400), 'UTF8'), sha256(g::text::bytea),
       now() - interval '169 hours' + (g * interval '169 hours' / current_setting('fs.changes')::int)
FROM generate_series(1, current_setting('fs.changes')::int) g,
     LATERAL (SELECT current_setting('fs.tickets')::int * 4 / 10 + 1
                     + (g::bigint * 7919) % (current_setting('fs.tickets')::int * 6 / 10) AS t) x;
INSERT INTO mutation_results (device_id, seq, op, status, result, server_version, created_at)
SELECT 'dev-' || (1 + g % 100), 1 + g / 100, 'set_items', 'applied', repeat('r', 200), g,
       now() - interval '60 days' + (g * interval '60 days' / current_setting('fs.results')::int)
FROM generate_series(1, current_setting('fs.results')::int - 1) g;
INSERT INTO audit_log (at, actor_kind, actor, action, ticket_id, department_id, before, after)
SELECT now() - interval '180 days' + (g * interval '180 days' / current_setting('fs.audit')::int), 'device', 'dev-1', 'set_items',
       md5('t' || (1 + g % 1000))::uuid, 1, '{"status": "assigned"}', jsonb_build_object('n', g, 'p', repeat('a', 200))
FROM generate_series(1, current_setting('fs.audit')::int) g;
INSERT INTO blobs (sha256, size, media_type, verified_at)
SELECT encode(sha256(('b' || g)::bytea), 'hex'), 100000, 'image/jpeg', now() - interval '120 days' + g * interval '1 minute'
FROM generate_series(1, current_setting('fs.photos')::int) g;
INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by, verified)
SELECT md5('t' || (1 + g % current_setting('fs.tickets')::int))::uuid, encode(sha256(('b' || g)::bytea), 'hex'), 'after', now(), 'dev-1', true
FROM generate_series(1, current_setting('fs.photos')::int) g WHERE g % 20 <> 0;
INSERT INTO upload_sessions (id, device_id, sha256, ticket_id, kind, taken_at, length, state, expires_at, created_at)
SELECT 'up-' || g, 'dev-1', encode(sha256(('u' || g)::bytea), 'hex'), md5('t1')::uuid, 'after', now(), 1000,
       CASE WHEN g % 3 = 0 THEN 'open' ELSE 'complete' END, now() - (g % 30) * interval '1 day', now()
FROM generate_series(1, 3000) g;
"""


async def populate(conn: asyncpg.Connection, tickets: int, changes: int, audit: int, results: int, photos: int) -> None:
    """Rows, then VACUUM ANALYZE (what autovacuum leaves)."""
    for name, value in (("tickets", tickets), ("changes", changes), ("audit", audit), ("results", results),
                        ("photos", photos)):
        await conn.execute("SELECT set_config('fs.' || $1, $2, false)", name, str(value))
    await conn.execute(POPULATE)
    # Push results as the last hourly prune left them: nothing older than 28 days and an hour.
    await conn.execute("DELETE FROM mutation_results WHERE created_at < now() - interval '28 days 1 hour'")
    await conn.execute("VACUUM ANALYZE")


async def explain(conn: asyncpg.Connection, name: str, sql: str, *args: object) -> None:
    """Print the plan and the execution time; the statement's effects are rolled back."""
    tr = conn.transaction()
    await tr.start()
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
    finally:
        await tr.rollback()
    print(f"--- {name}")
    for r in rows:
        print("   ", r[0] if len(r[0]) < 240 else r[0][:240] + "...")


async def run(dsn: str, args: argparse.Namespace) -> None:
    """Migrate, populate, optionally drop 0013's indexes, and explain every prune statement."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        if args.generic_plans:  # what the server's pool connections use (sync_server/app.py)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        await populate(conn, args.tickets, args.changes, args.audit, args.results, args.photos)
        if args.without_0013:
            for name in INDEXES_0013:
                await conn.execute(f"DROP INDEX IF EXISTS {name}")
        now = datetime.now(timezone.utc)
        cutoff = now - timedelta(days=7)
        counts = await conn.fetchrow("SELECT (SELECT count(*) FROM changes) AS changes,"
                                     " (SELECT count(*) FROM mutation_results) AS results,"
                                     " (SELECT count(*) FROM audit_log) AS audit, (SELECT count(*) FROM blobs) AS blobs")
        print("rows:", dict(counts))
        for name, sql in OLD.items():
            await explain(conn, name, sql, timedelta(days=28 if "results" in name else 7))
        bound = await retention.changes_boundary(conn, cutoff)
        await explain(conn, "changes boundary", retention.BOUNDARY_SQL, cutoff)
        await explain(conn, "superseded change rows (batch 5000)", retention.SUPERSEDED_SQL, cutoff, 5000, 0, bound)
        await explain(conn, "tombstones (batch 5000)", retention.TOMBSTONES_SQL, cutoff, 5000, 0, bound)
        await explain(conn, "push results (batch 5000, keep 1000)", retention.RESULTS_SQL, now - timedelta(days=28),
                      5000, 1000)
        before = now - timedelta(days=90)
        hi = await conn.fetchval(retention.AUDIT_BOUNDARY_SQL, before)
        await explain(conn, "audit archive boundary", retention.AUDIT_BOUNDARY_SQL, before)
        await explain(conn, "audit archive page (5000)", retention.AUDIT_PAGE_SQL, before, 0, hi, 5000)
        ids = [r["id"] for r in await conn.fetch(retention.AUDIT_PAGE_SQL, before, 0, hi, 5000)]
        await explain(conn, "audit archive delete (5000 ids)", retention.AUDIT_DELETE_SQL, ids)
        await explain(conn, "unreferenced photos (page 1000)", retention.UNREFERENCED_SQL, "", now - timedelta(days=30),
                      datetime(1970, 1, 1, tzinfo=timezone.utc), 1000)
        await explain(conn, "unreferenced photos, steady state (verified since the last run, less a day)",
                      retention.UNREFERENCED_SQL, "", now - timedelta(days=30), now - timedelta(days=32), 1000)
        shas = [r["sha256"] for r in await conn.fetch("SELECT sha256 FROM blobs ORDER BY sha256 LIMIT 1000")]
        await explain(conn, "objects without a row (1000 listed hashes)", retention.KNOWN_SQL, shas,
                      now - timedelta(days=1))
        await explain(conn, "upload sessions purge", "DELETE FROM upload_sessions WHERE state <> 'open'"
                      " AND expires_at < now() - make_interval(secs => $1)", 7 * 86400.0)
    finally:
        await conn.close()


def main() -> int:
    """Start a private cluster unless --dsn is given (the database must be empty)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn")
    ap.add_argument("--without-0013", action="store_true")
    ap.add_argument("--generic-plans", action="store_true", help="plan_cache_mode=force_generic_plan, as in the server")
    ap.add_argument("--tickets", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--audit", type=int, default=200_000)
    ap.add_argument("--photos", type=int, default=20_000)
    args = ap.parse_args()
    if args.dsn:
        asyncio.run(run(args.dsn, args))
        return 0
    with tempfile.TemporaryDirectory(prefix="fs-explain-") as tmp:
        Path(tmp).chmod(0o755)
        pg = EmbeddedPostgres(Path(tmp) / "data")
        pg.start()
        try:
            asyncio.run(run(pg.dsn("postgres"), args))
        finally:
            pg.stop(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

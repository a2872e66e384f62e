"""SQL of the retention job: every DELETE it runs, each bounded to one batch so no prune holds locks or WAL for long.

Every candidate scan is an index range scan (`ops/bench/explain_prune.py` prints the plans). The change log is
walked by its primary key below a bound found once per run (`changes_boundary`): ids are allocated in insert order,
so the rows older than the cutoff are the low ids, and a time index on the hottest table is not needed. A BRIN
index would not do there: the latest row of every ticket left untouched for a week stays behind, scattered over
all pages, so every block range would match.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

# First change-log id at or after the cutoff (PK order, stops at the first young row); rows older than the cutoff
# beyond it (a transaction that began before the cutoff and inserted later) wait for the next run.
BOUNDARY_SQL = """
SELECT coalesce((SELECT id FROM changes WHERE created_at >= $1 ORDER BY id LIMIT 1),
                (SELECT max(id) + 1 FROM changes), 0)
"""

# A row superseded by a later row of the same ticket that is itself older than the cutoff: every snapshot a valid
# cursor can name already sees the later row, so page sets and deltas are unchanged. Every id below the bound ($4)
# is older than the cutoff (the bound is the first id that is not), so the later row is tested by id alone: an
# index-only probe of (ticket_id, id) instead of a heap fetch per candidate.
SUPERSEDED_SQL = """
DELETE FROM changes WHERE id IN (
    SELECT c.id FROM changes c
    WHERE c.id > $3 AND c.id < $4 AND c.created_at < $1
      AND EXISTS (SELECT 1 FROM changes n WHERE n.ticket_id = c.ticket_id AND n.id > c.id AND n.id < $4)
    ORDER BY c.id LIMIT $2)
RETURNING id
"""

# A ticket's last row that removed it from every crew (closed, cancelled, ...) is a tombstone: once older than the
# cutoff no device can still need the removal, and snapshots never include it.
TOMBSTONES_SQL = """
DELETE FROM changes WHERE id IN (
    SELECT c.id FROM changes c
    WHERE c.id > $3 AND c.id < $4 AND c.holder_crew_id IS NULL AND c.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM changes n WHERE n.ticket_id = c.ticket_id AND n.id > c.id)
      AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = c.ticket_id AND t.holder_crew_id IS NOT NULL)
    ORDER BY c.id LIMIT $2)
RETURNING id
"""

# Stored push results older than the cutoff, except each device's latest `keep` seqs: a phone whose last answers
# were lost replays them and gets them byte for byte however long it stayed offline (SPEC section 5); an older seq
# is answered `duplicate`/`already_exists` ("stored result has expired"), never applied twice (its seq is at or
# below devices.last_seq). A revoked device never pushes again, so it keeps nothing past the cutoff.
# Results are deleted oldest first with the table, so a BRIN index on created_at finds them (0013).
RESULTS_SQL = """
DELETE FROM mutation_results WHERE (device_id, seq) IN (
    SELECT r.device_id, r.seq FROM mutation_results r JOIN devices d ON d.id = r.device_id
    WHERE r.created_at < $1 AND (r.seq <= d.last_seq - $3 OR d.revoked_at IS NOT NULL)
    LIMIT $2)
"""


async def changes_boundary(conn: asyncpg.Connection, cutoff: datetime) -> int:
    """The exclusive upper id bound of this run's change-log scan."""
    return int(await conn.fetchval(BOUNDARY_SQL, cutoff))


async def prune_changes(conn: asyncpg.Connection, sql: str, cutoff: datetime, limit: int, after: int, bound: int
                        ) -> list[int]:
    """One batch of superseded rows or tombstones (`sql`) with ids in (after, bound); returns the deleted ids."""
    return [r["id"] for r in await conn.fetch(sql, cutoff, limit, after, bound)]


async def prune_results(conn: asyncpg.Connection, cutoff: datetime, limit: int, keep: int) -> int:
    """One batch of expired push results, never a live device's latest `keep`."""
    return _count(await conn.execute(RESULTS_SQL, cutoff, limit, keep))


def _count(status: str) -> int:
    """asyncpg returns 'DELETE n'."""
    return int(status.split()[-1])


# ---------------------------------------------------------------------------------------------- scheduling

# One row per maintenance job: a process runs a job only if it wins this row for the interval, so N server
# processes run each job once per interval, not N times (a lost race is a no-op; the jobs are idempotent anyway).
CLAIM_SQL = """
INSERT INTO maintenance_runs AS m (job, started_at) VALUES ($1, now())
ON CONFLICT (job) DO UPDATE SET started_at = now()
    WHERE m.started_at < now() - make_interval(secs => $2::float8)
RETURNING started_at
"""


async def claim_run(conn: asyncpg.Connection, job: str, min_gap_s: float) -> bool:
    """Whether this process should run `job` now (nobody started it within `min_gap_s`)."""
    return await conn.fetchval(CLAIM_SQL, job, min_gap_s) is not None


async def finish_run(conn: asyncpg.Connection, job: str, report: str) -> None:
    """Record the outcome (JSON text) for operators (`SELECT * FROM maintenance_runs`)."""
    await conn.execute("UPDATE maintenance_runs SET finished_at = now(), report = $2::jsonb WHERE job = $1", job, report)


# ---------------------------------------------------------------------------------------------- audit archive

# The first audit id at or after the archive date (PK order, so it reads just the rows about to be exported); an old
# row beyond it (a transaction that began before the date and committed later) waits for the next archive.
AUDIT_BOUNDARY_SQL = """
SELECT coalesce((SELECT id FROM audit_log WHERE at >= $1 ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM audit_log), 0)
"""

# One page of the archive in id order (primary key range); each line is the row as PostgreSQL renders it to JSON.
AUDIT_PAGE_SQL = """
SELECT id, row_to_json(a)::text AS line FROM audit_log a
WHERE a.id > $2 AND a.id < $3 AND a.at < $1
ORDER BY a.id LIMIT $4
"""

# Only ids already written and synced to the archive file are deleted.
AUDIT_DELETE_SQL = "DELETE FROM audit_log WHERE id = ANY($1::bigint[])"


async def audit_boundary(conn: asyncpg.Connection, before: datetime) -> int:
    """Exclusive upper id bound of the rows to archive."""
    return int(await conn.fetchval(AUDIT_BOUNDARY_SQL, before))


async def audit_page(conn: asyncpg.Connection, before: datetime, after: int, upto: int, limit: int
                     ) -> list[asyncpg.Record]:
    """Rows (id, JSON line) with ids in (after, upto) and older than `before`."""
    return list(await conn.fetch(AUDIT_PAGE_SQL, before, after, upto, limit))


async def audit_delete(conn: asyncpg.Connection, ids: list[int]) -> int:
    """Delete archived rows."""
    return _count(await conn.execute(AUDIT_DELETE_SQL, ids))


async def audit_record(conn: asyncpg.Connection, actor: str, action: str, after: str) -> None:
    """The archive audits itself (I9): who archived what, to which file, with the file's digest."""
    await conn.execute("INSERT INTO audit_log (actor_kind, actor, action, after) VALUES ('admin', $1, $2, $3::jsonb)",
                       actor, action, after)


# ---------------------------------------------------------------------------------------------- photo collection

# What protects a hash from collection: a ticket that shows it (verified or still pending: the crew may deliver it
# later), and an upload session that is open or was active within the grace period (it may complete with it, or
# its device may still attach the photo it uploaded). A blob row older than the grace with none of these is dead.
_UNPROTECTED = """
NOT EXISTS (SELECT 1 FROM ticket_photos p WHERE p.sha256 = b.sha256)
AND NOT EXISTS (SELECT 1 FROM upload_sessions s WHERE s.sha256 = b.sha256 AND (s.state = 'open' OR s.updated_at > $2))
"""

# Candidates, paged by (verified_at, sha256) through blobs_verified_idx.
UNREFERENCED_SQL = f"""
SELECT b.sha256, b.verified_at FROM blobs b
WHERE b.verified_at < $2 AND (b.verified_at, b.sha256) > ($3, $1) AND {_UNPROTECTED}
ORDER BY b.verified_at, b.sha256 LIMIT $4
"""

# The same test again under the photos' advisory locks (push attach and verification take them first), deleting
# the rows; photo_possession goes with them (ON DELETE CASCADE, 0013).
COLLECT_SQL = f"""
DELETE FROM blobs b WHERE b.sha256 = ANY($1::text[]) AND b.verified_at < $2 AND {_UNPROTECTED}
RETURNING b.sha256
"""

# Hashes among listed store objects that still have a row or a protecting upload session.
KNOWN_SQL = """
SELECT sha256 FROM blobs WHERE sha256 = ANY($1::text[])
UNION
SELECT sha256 FROM upload_sessions WHERE sha256 = ANY($1::text[]) AND (state = 'open' OR updated_at > $2)
"""


async def unreferenced_blobs(conn: asyncpg.Connection, grace_cutoff: datetime, after: tuple[datetime, str] | None,
                             limit: int) -> list[asyncpg.Record]:
    """One page of blob rows nothing protects, verified before `grace_cutoff`."""
    at, sha = after if after is not None else (datetime.min.replace(tzinfo=grace_cutoff.tzinfo), "")
    return list(await conn.fetch(UNREFERENCED_SQL, sha, grace_cutoff, at, limit))


async def collect_blobs(conn: asyncpg.Connection, shas: list[str], grace_cutoff: datetime) -> list[str]:
    """Delete the rows of those hashes still unprotected (caller holds their photo locks); returns the deleted."""
    return [r["sha256"] for r in await conn.fetch(COLLECT_SQL, shas, grace_cutoff)]


async def known_hashes(conn: asyncpg.Connection, shas: list[str], grace_cutoff: datetime) -> set[str]:
    """Listed hashes that must keep their bytes."""
    return {r["sha256"] for r in await conn.fetch(KNOWN_SQL, shas, grace_cutoff)}


async def open_uploads(conn: asyncpg.Connection, ids: list[str]) -> set[str]:
    """Upload ids among `ids` whose session is still open (their stored partial pieces are live)."""
    return {r["id"] for r in await conn.fetch(
        "SELECT id FROM upload_sessions WHERE id = ANY($1::text[]) AND state = 'open'", ids)}

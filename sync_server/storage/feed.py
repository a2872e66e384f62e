"""SQL behind the live feed: a department's change-log and conflict rows between two watermarks, and liveness checks.

A watermark is `pg_snapshot_xmin` of a snapshot: every transaction with a smaller xid has committed or aborted, so
the set of rows below it is final (I2). The feed only ever reads whole ranges `[lo, hi)` of such watermarks, which
is what makes a live event stream gap-free and duplicate-free with a plain integer position.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

# Change rows (src 0) then conflicts (src 1) of each transaction, numbered 1.. within (department, xid) so that a
# position (xid, rank) names one event. Ranks are stable: both tables are insert-only inside the retention window.
# Bounds: xid >= lo (inclusive) and xid < hi (exclusive); (xid, rank) > (after_xid, after_rank) (exclusive).
_EVENTS = """
WITH ev AS (
    SELECT department_id, xid, 0 AS src, id, ticket_id, doc_json AS doc, changed, NULL::text AS kind,
           NULL::text AS field, NULL::text AS kept, NULL::text AS discarded, NULL::text AS detail,
           NULL::integer AS crew_id, NULL::text AS device_id
    FROM changes
    WHERE department_id = ANY($1::smallint[]) AND xid >= $2::text::xid8 AND xid < $3::text::xid8
    UNION ALL
    SELECT department_id, xid, 1, id, ticket_id, NULL, NULL, kind, field, kept::text, discarded::text, detail,
           crew_id, device_id
    FROM conflicts
    WHERE department_id = ANY($1::smallint[]) AND xid >= $2::text::xid8 AND xid < $3::text::xid8
), ranked AS (
    SELECT ev.*, xid::text::bigint AS x,
           row_number() OVER (PARTITION BY department_id, xid ORDER BY src, id) AS rank
    FROM ev
)
SELECT * FROM ranked
WHERE (x, rank) > ($4::bigint, $5::bigint)
ORDER BY department_id, x, rank
LIMIT $6
"""


# The live reader's cycle in one round trip: the watermark of this statement's own snapshot and the events below it.
# pg_current_snapshot() is the statement's snapshot here (a lone statement, READ COMMITTED), so every transaction
# below its xmin has finished and its rows are visible to the same statement: the range read is final (I2). The
# one-row relation on the left keeps the watermark when no event is in the range.
_ADVANCE = """
WITH w AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS hi),
ev AS (
    SELECT department_id, xid, 0 AS src, id, ticket_id, doc_json AS doc, changed, NULL::text AS kind,
           NULL::text AS field, NULL::text AS kept, NULL::text AS discarded, NULL::text AS detail,
           NULL::integer AS crew_id, NULL::text AS device_id
    FROM changes
    WHERE department_id = ANY($1::smallint[]) AND xid >= $2::text::xid8 AND xid < (SELECT hi FROM w)
    UNION ALL
    SELECT department_id, xid, 1, id, ticket_id, NULL, NULL, kind, field, kept::text, discarded::text, detail,
           crew_id, device_id
    FROM conflicts
    WHERE department_id = ANY($1::smallint[]) AND xid >= $2::text::xid8 AND xid < (SELECT hi FROM w)
), ranked AS (
    SELECT ev.*, xid::text::bigint AS x,
           row_number() OVER (PARTITION BY department_id, xid ORDER BY src, id) AS rank
    FROM ev
)
SELECT (SELECT hi FROM w)::text::bigint AS hi, r.*
FROM (SELECT 1) AS one LEFT JOIN ranked r ON true
ORDER BY r.department_id, r.x, r.rank
"""


async def advance(conn: asyncpg.Connection, departments: Sequence[int], lo: int) -> tuple[int, list[asyncpg.Record]]:
    """(watermark, the departments' events with lo <= xid < watermark in stream order), read in one statement at one
    snapshot: the live reader's whole cycle is one round trip instead of two."""
    rows = await conn.fetch(_ADVANCE, list(departments), str(lo))
    hi = int(rows[0]["hi"])
    if hi <= lo:
        return hi, []
    return hi, [r for r in rows if r["x"] is not None]


async def watermark(conn: asyncpg.Connection) -> int:
    """Every transaction with an xid below this has finished: rows under it can be read once and for all."""
    return int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))


async def events(
    conn: asyncpg.Connection,
    departments: Sequence[int],
    lo: int,
    hi: int,
    after: tuple[int, int] = (0, 0),
    limit: int = 1_000_000,
) -> list[asyncpg.Record]:
    """Events of the departments with lo <= xid < hi and (xid, rank) > after, in stream order."""
    if not departments or hi <= lo:
        return []
    return await conn.fetch(_EVENTS, list(departments), str(lo), str(hi), after[0], after[1], limit)


async def position_is_fresh(conn: asyncpg.Connection, xid: int, retention: timedelta) -> bool:
    """Whether the log since `xid` is still whole: pruning only removes rows older than the retention window.

    The first surviving row at or after the position dates the position (xids and start times grow together for
    anything but a days-long transaction); no row at all means nothing happened since, so nothing was pruned."""
    first = await conn.fetchval(
        "SELECT created_at < now() - $2::interval FROM changes WHERE xid >= $1::text::xid8 ORDER BY xid LIMIT 1",
        str(xid), retention,
    )
    return first is None or not first


async def revoked(conn: asyncpg.Connection, device_ids: Sequence[str], user_ids: Sequence[int]) -> tuple[set[str], set[int]]:
    """Which connected principals lost their token since they authenticated: one set query per kind."""
    devs: set[str] = set()
    users: set[int] = set()
    if device_ids:
        rows = await conn.fetch(
            "SELECT id FROM devices WHERE id = ANY($1::text[]) AND revoked_at IS NOT NULL", list(device_ids)
        )
        devs = {r["id"] for r in rows}
    if user_ids:
        rows = await conn.fetch(
            "SELECT id FROM users WHERE id = ANY($1::integer[]) AND revoked_at IS NOT NULL", list(user_ids)
        )
        users = {r["id"] for r in rows}
    return devs, users


async def department_id(conn: asyncpg.Connection, code: str) -> int | None:
    """An admin names the department it watches by its code."""
    value = await conn.fetchval("SELECT id FROM departments WHERE code = $1", code)
    return None if value is None else int(value)

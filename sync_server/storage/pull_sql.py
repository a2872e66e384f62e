"""SQL behind pull: snapshot-bounded change-log reads (I2, I7) and first pages, apart from the push's writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

# Every read below selects the stored document in the form the answer is written in ({doc}: doc_mp for msgpack,
# doc_json for JSON), so pull splices bytes and never decodes a document (api/splice.py). Column names only are
# substituted (_forms), never values.

# Latest change row per ticket among the rows that concern `crew` and committed inside (base, head].
# `xid >= pg_snapshot_xmin(base)` narrows the index range: everything older is visible in `base` by definition.
# Visibility against both snapshots (not id or time ranges) is what makes a late committer impossible to skip.
_DELTA = """
SELECT DISTINCT ON (ticket_id) ticket_id, holder_crew_id, prev_crew_id, removal_reason, {doc} AS doc
FROM changes
WHERE (holder_crew_id = $1 OR prev_crew_id = $1)
  AND xid >= pg_snapshot_xmin($2::text::pg_snapshot)
  AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
  AND pg_visible_in_snapshot(xid, $3::text::pg_snapshot)
  AND ticket_id > $4
ORDER BY ticket_id, id DESC
LIMIT $5
"""

# The first page of a snapshot in ONE statement, so at one snapshot (in READ COMMITTED a statement reads one snapshot
# and pg_current_snapshot() returns exactly that one): the head; every held ticket's hash (for the scope checksum),
# joined into one value; and the first $2 held tickets in id order, each stored document framed as the answer writes
# an upsert ($3 document $4, separated by $5: engine/pull.UPSERT_FRAME) and joined into one value, with their count
# and, when the crew holds more, the $2-th one's id (where the next page starts; no sort to find it). One row of five
# values whatever the page size: the server copies the page into its answer, with no row, record or Python object
# per ticket (one index scan feeds both aggregates; PostgreSQL's CPU per 200-ticket page is within ~0.05 ms of the
# row-per-ticket form's). Current ticket rows, not the change log's history: a ticket row and its latest change row
# are written together (storage/tickets.record_changes), so at one snapshot they agree, and an index scan of the
# crew's tickets replaces a DISTINCT ON over every change the crew ever saw.
_FIRST_SNAPSHOT = """
SELECT pg_current_snapshot()::text AS head, string_agg(doc_hash, ''::bytea) AS hashes,
  (count(*) FILTER (WHERE n <= $2))::integer AS n, (array_agg(id) FILTER (WHERE n = $2))[1] AS last,
  string_agg($3::{type} || doc || $4::{type}, $5::{type} ORDER BY id) FILTER (WHERE n <= $2) AS page
FROM (SELECT id, doc_hash, {doc} AS doc, row_number() OVER (ORDER BY id) AS n FROM tickets WHERE holder_crew_id = $1) AS t
"""

# A later page of a snapshot cut at `head` ($2), read after other writers may have committed: the crew's tickets from
# their current rows, except those with a change the snapshot does not see (committed since, or in flight at head),
# which are read from the log as of head instead (their latest row visible in head, kept when the crew held them).
# Any change to a ticket the crew held at head, or that brought it to the crew, names the crew as holder or previous
# holder, so the (crew, xid) indexes find them all (the same rows a delta from head would scan, I2, I7).
_SNAPSHOT = """
WITH moved AS MATERIALIZED (
  SELECT DISTINCT ticket_id FROM changes
  WHERE (holder_crew_id = $1 OR prev_crew_id = $1)
    AND xid >= pg_snapshot_xmin($2::text::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
    AND ticket_id > $3)
SELECT * FROM (
  SELECT id AS ticket_id, holder_crew_id, NULL::integer AS prev_crew_id, NULL::text AS removal_reason, {doc} AS doc
  FROM tickets WHERE holder_crew_id = $1 AND id > $3 AND id NOT IN (SELECT ticket_id FROM moved)
  UNION ALL
  SELECT * FROM (
    SELECT DISTINCT ON (ticket_id) ticket_id, holder_crew_id, prev_crew_id, removal_reason, {doc} AS doc
    FROM changes WHERE ticket_id IN (SELECT ticket_id FROM moved) AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
    ORDER BY ticket_id, id DESC) AS at_head
  WHERE holder_crew_id = $1) AS page
ORDER BY ticket_id
LIMIT $4
"""
MIN_UUID = UUID(int=0)

# The first pages of several deltas in ONE statement, at one snapshot (as _FIRST_SNAPSHOT): the head every cursor is
# cut at, each crew's ticket hashes for its scope checksum, and each page, with no transaction round trips. Request i
# ($1..$4 are arrays, one element per request) gets a header row (k = 0: head, hashes) and its page rows (k = 1).
# The hashes are read only when asked to (the cursor carries no checksum) or when the page is not empty: "nothing of
# the crew committed in (base, head]" means the scope, and so its checksum, is what it was at base, which makes an
# empty poll a range scan of the (crew, xid) indexes from base's xmin and nothing else (I2, I4). Concurrent pulls of a
# process share one statement (engine/pull_batch.py): for an empty poll the statement, not the scan, was the cost.
_FIRST_DELTAS = """
WITH h AS MATERIALIZED (SELECT pg_current_snapshot() AS head),
q AS MATERIALIZED (
  SELECT r.crew, r.base::pg_snapshot AS base, r.need, r.lim, r.i
  FROM unnest($1::integer[], $2::text[], $3::boolean[], $4::integer[]) WITH ORDINALITY AS r(crew, base, need, lim, i)
),
p AS MATERIALIZED (
  SELECT q.i, c.* FROM q CROSS JOIN LATERAL (
    SELECT DISTINCT ON (ticket_id) ticket_id, holder_crew_id, prev_crew_id, removal_reason, {doc} AS doc
    FROM changes
    WHERE (holder_crew_id = q.crew OR prev_crew_id = q.crew)
      AND xid >= pg_snapshot_xmin(q.base) AND NOT pg_visible_in_snapshot(xid, q.base)
      AND pg_visible_in_snapshot(xid, (SELECT head FROM h))
    ORDER BY ticket_id, id DESC
    LIMIT q.lim) AS c
)
SELECT q.i, 0 AS k, (SELECT head::text FROM h) AS head,
  CASE WHEN q.need OR EXISTS (SELECT 1 FROM p WHERE p.i = q.i)
       THEN coalesce((SELECT string_agg(doc_hash, ''::bytea) FROM tickets WHERE holder_crew_id = q.crew), ''::bytea)
  END AS hashes,
  NULL::uuid AS ticket_id, NULL::integer AS holder_crew_id, NULL::integer AS prev_crew_id, NULL::text AS removal_reason,
  NULL::{type} AS doc
FROM q
UNION ALL
SELECT p.i, 1, NULL, NULL, p.ticket_id, p.holder_crew_id, p.prev_crew_id, p.removal_reason, p.doc FROM p
ORDER BY 1, 2, 5
"""


def _forms(sql: str) -> dict[bool, str]:
    """The statement reading msgpack documents (True) and JSON text ones (False)."""
    return {True: sql.replace("{doc}", "doc_mp").replace("{type}", "bytea"),
            False: sql.replace("{doc}", "doc_json").replace("{type}", "text")}


_DELTA_SQL, _SNAPSHOT_SQL, _FIRST_DELTAS_SQL, _FIRST_SNAPSHOT_SQL = map(_forms, (_DELTA, _SNAPSHOT, _FIRST_DELTAS, _FIRST_SNAPSHOT))


@dataclass(frozen=True)
class FirstPage:
    """The first page of a delta: its head snapshot, the crew's ticket hashes (None: unchanged since base), the rows
    (ticket_id, holder_crew_id, prev_crew_id, removal_reason and `doc`, the stored document bytes or text)."""

    head: str
    hashes: list[bytes] | None
    rows: list[Any]


@dataclass(frozen=True, slots=True)
class DeltaAsk:
    """One pull's first delta page to read: the crew, the cursor's snapshot, the page size (one more than the
    answer's, to learn has_more) and whether the cursor lacks the scope checksum."""

    crew_id: int
    base: str
    limit: int
    need_hashes: bool


async def first_pages(conn: asyncpg.Connection, asks: Sequence[DeltaAsk], packed: bool) -> list[FirstPage]:
    """Head, checksum input and first page of each crew's changes since its `base`, all at one snapshot, in one
    statement; one FirstPage per ask, in order."""
    rows = await conn.fetch(_FIRST_DELTAS_SQL[packed], [a.crew_id for a in asks], [a.base for a in asks],
                            [a.need_hashes for a in asks], [a.limit for a in asks])
    out: list[FirstPage] = []
    n = len(rows)
    at = 0
    while at < n:  # per ask: its header row, then its page rows (ordered by ask, kind, ticket id)
        head, joined, i = rows[at]["head"], rows[at]["hashes"], rows[at]["i"]
        end = at + 1
        while end < n and rows[end]["i"] == i:
            end += 1
        # The hashes come concatenated (one bytea), not as bytea[]: asyncpg has no built-in codec for bytea[] and
        # introspects it on every new pool connection, a catalog query PostgreSQL plans for ~30 ms under generic plans.
        hashes = None if joined is None else [joined[j : j + 32] for j in range(0, len(joined), 32)]
        out.append(FirstPage(head, hashes, rows[at + 1 : end]))
        at = end
    assert len(out) == len(asks), "one header row per ask"
    return out


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """The first page of a snapshot: its head, every held ticket's hash (32 bytes each, back to back), and the first
    `count` held tickets (id order) as one value, each document framed as asked and joined; `last` is the last one's id
    when the crew holds more (None: this page is the whole scope)."""

    head: str
    hashes: bytes
    count: int
    last: UUID | None
    page: bytes | str


Frame = tuple[bytes, bytes, bytes] | tuple[str, str, str]  # (prefix, suffix, separator) around each stored document


async def first_snapshot(conn: asyncpg.Connection, crew_id: int, limit: int, frame: Frame,
                         packed: bool) -> SnapshotPage:
    """Head, every held ticket's hash and the first `limit` held tickets framed and joined, at one snapshot, in one
    statement (`frame` is bytes for msgpack documents, text for JSON ones)."""
    row = await conn.fetchrow(_FIRST_SNAPSHOT_SQL[packed], crew_id, limit, *frame)
    assert row is not None, "an aggregate over no rows is still one row"
    return SnapshotPage(row["head"], row["hashes"] or b"", row["n"], row["last"], row["page"] or frame[2][:0])


async def warm(conn: asyncpg.Connection) -> None:
    """Plan a device's first pull statements (msgpack: what devices ask for) on a new connection, reading nothing (no
    crew 0): a backend's first run of each loads its catalogue entries and builds its generic plan, ~2 ms of
    PostgreSQL CPU apiece that otherwise landed inside the burst of every device's first pull after a start."""
    try:
        await conn.fetch(_FIRST_SNAPSHOT_SQL[True], 0, 1, b"", b"", b"")
        await conn.fetch(_FIRST_DELTAS_SQL[True], [], [], [], [])
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        pass  # a schema behind this build: the start-up check (migrate.check_schema) says so, not a planning error


async def change_page(conn: asyncpg.Connection, crew_id: int, base: str | None, head: str, after: UUID | None,
                      limit: int, packed: bool) -> list[Any]:
    """A later page of the crew's changes between two snapshots (or of the whole scope at `head` when base is None)."""
    after = after or MIN_UUID
    if base is None:
        return await conn.fetch(_SNAPSHOT_SQL[packed], crew_id, head, after, limit)
    return await conn.fetch(_DELTA_SQL[packed], crew_id, base, head, after, limit)

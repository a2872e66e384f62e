"""SQL behind pull and push: snapshot-bounded change-log reads (I2, I7), device seqs and stored results (I1)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from sync_server.storage.tickets import ChangeColumns
from sync_server.storage.uploads import PHOTO_LOCK_CLASS

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
# and pg_current_snapshot() returns exactly that one): the head, then every ticket the crew holds (its hash, for the
# scope checksum) with the stored document of the first $2. Current ticket rows, not the change log's history: a
# ticket row and its latest change row are written together (storage/tickets.record_changes), so at one snapshot
# they agree, and an index scan of the crew's tickets replaces a DISTINCT ON over every change the crew ever saw.
_FIRST_SNAPSHOT = """
SELECT 0 AS k, pg_current_snapshot()::text AS head, NULL::uuid AS ticket_id, NULL::bytea AS doc_hash, NULL::{type} AS doc
UNION ALL
SELECT 1, NULL, id, doc_hash, CASE WHEN n <= $2 THEN doc END
FROM (SELECT id, doc_hash, {doc} AS doc, row_number() OVER (ORDER BY id) AS n FROM tickets WHERE holder_crew_id = $1) AS t
ORDER BY k, ticket_id
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
    """The first page of a pull: its head snapshot, the crew's ticket hashes (None: unchanged since base), the rows
    (ticket_id, holder_crew_id, prev_crew_id, removal_reason and `doc`, the stored document bytes or text; only
    ticket_id and doc when `held`: a snapshot's rows are all tickets the crew holds)."""

    head: str
    hashes: list[bytes] | None
    rows: list[Any]
    held: bool = False


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


async def first_snapshot(conn: asyncpg.Connection, crew_id: int, limit: int, packed: bool) -> FirstPage:
    """Head, every held ticket's hash and the first `limit` held tickets, at one snapshot, in one statement."""
    rows = await conn.fetch(_FIRST_SNAPSHOT_SQL[packed], crew_id, limit)
    # The records themselves are the page (no object per ticket: a 200-ticket snapshot is on every device's first pull).
    return FirstPage(rows[0]["head"], [r["doc_hash"] for r in rows[1:]], rows[1 : limit + 1], held=True)


async def change_page(conn: asyncpg.Connection, crew_id: int, base: str | None, head: str, after: UUID | None,
                      limit: int, packed: bool) -> list[Any]:
    """A later page of the crew's changes between two snapshots (or of the whole scope at `head` when base is None)."""
    after = after or MIN_UUID
    if base is None:
        return await conn.fetch(_SNAPSHOT_SQL[packed], crew_id, head, after, limit)
    return await conn.fetch(_DELTA_SQL[packed], crew_id, base, head, after, limit)


# The start of a push in ONE statement, taking its locks in the one order every writer uses: the device row (its
# seqs are a single line, I1), then the photo advisory locks in sorted order, then the tickets' rows in id order
# (engine.uploads.mark_blob_verified takes a photo lock, then the rows of the tickets showing it). The order is the
# plan's: UNION ALL runs its branches in order, the device branch first; the ticket branch's uncorrelated
# `(SELECT n FROM p)` is a one-time filter evaluated before its scan yields (and LockRows locks) any row, and `p`
# waits on `d`. Row 0 is the device (absent: unknown device), with the owners of the batch's note ids; the rest are
# the tickets with their STORED documents and whether the crew ever held each (ticket_holders: retention keeps it).
_BEGIN = """
WITH d AS MATERIALIZED (
  SELECT d.last_seq, d.revoked_at, pg_current_xact_id()::text::bigint AS xid, now() AS now, c.name AS crew_name
  FROM devices d JOIN crews c ON c.id = d.crew_id WHERE d.id = $1 FOR UPDATE OF d),
p AS MATERIALIZED (
  SELECT count(pg_advisory_xact_lock($6, hashtext(s))) AS n
  FROM (SELECT s FROM unnest($4::text[]) AS s ORDER BY s) AS o WHERE EXISTS (SELECT 1 FROM d)),
t AS MATERIALIZED (
  SELECT t.id, EXISTS (SELECT 1 FROM ticket_holders h WHERE h.ticket_id = t.id AND h.crew_id = $3) AS held,
    t.department_id, t.crew_id, t.holder_crew_id, t.field_meta::text AS field_meta, t.duplicate_of, t.doc_json AS doc
  FROM tickets t WHERE t.id = ANY($2::uuid[]) AND (SELECT n FROM p) IS NOT NULL ORDER BY t.id FOR UPDATE OF t)
SELECT 0 AS k, d.last_seq, d.revoked_at, d.xid, d.now, d.crew_name,
  ARRAY(SELECT n.id FROM ticket_notes n WHERE n.id = ANY($5::uuid[]) ORDER BY n.id) AS note_ids,
  ARRAY(SELECT n.ticket_id FROM ticket_notes n WHERE n.id = ANY($5::uuid[]) ORDER BY n.id) AS note_tickets,
  NULL::uuid AS id, NULL::boolean AS held, NULL::smallint AS department_id, NULL::integer AS crew_id,
  NULL::integer AS holder_crew_id, NULL::text AS field_meta, NULL::uuid AS duplicate_of, NULL::text AS doc
FROM d
UNION ALL
SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t.id, t.held, t.department_id, t.crew_id, t.holder_crew_id,
  t.field_meta, t.duplicate_of, t.doc
FROM t
ORDER BY k, id
"""


@dataclass(frozen=True)
class PushStart:
    """What a push knows once it holds its locks: the device row (None: unknown device), the locked ticket rows and
    the tickets that already hold the batch's note ids."""

    device: asyncpg.Record | None
    tickets: list[asyncpg.Record]
    note_owner: dict[UUID, UUID]


async def begin_push(conn: asyncpg.Connection, device_id: str, crew_id: int, ticket_ids: Sequence[UUID],
                     photo_hashes: Sequence[str], note_ids: Sequence[UUID]) -> PushStart:
    """Lock device, photos and tickets in that order and read what the fold needs, in one round trip."""
    rows = await conn.fetch(_BEGIN, device_id, sorted(set(ticket_ids)), crew_id, sorted(set(photo_hashes)),
                            list(note_ids), PHOTO_LOCK_CLASS)
    head = rows[0] if rows and rows[0]["k"] == 0 else None
    owners = dict(zip(head["note_ids"], head["note_tickets"])) if head is not None else {}
    return PushStart(head, [r for r in rows if r["k"] == 1], owners)


@dataclass(frozen=True)
class Kept:
    """A stored result as read back: the answer first sent (JSON, key order kept) and the digest of its mutation."""

    result: dict[str, Any]
    digest: bytes | None  # None for rows stored before digests existed


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class StoredResult:
    """One row of mutation_results to write: the answer exactly as sent, with the digest of the mutation."""

    seq: int
    op: str
    ticket_id: UUID | None
    status: str
    reason: str | None
    result: dict[str, Any]
    server_version: int
    digest: bytes


async def stored_results(conn: asyncpg.Connection, device_id: str, seqs: Sequence[int]) -> dict[int, Kept]:
    """Results of already-applied seqs, for replay after a lost response."""
    if not seqs:
        return {}
    rows = await conn.fetch(
        "SELECT seq, result, digest FROM mutation_results WHERE device_id = $1 AND seq = ANY($2::bigint[])",
        device_id, list(seqs),
    )
    return {r["seq"]: Kept(json.loads(r["result"]), r["digest"]) for r in rows}


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class NoteRow:
    """A note to add; its id is client-made (or derived from device and seq), so a replay is a no-op."""

    id: UUID
    ticket_id: UUID
    text: str
    author: str
    device_time: Any


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class ItemRow:
    """An item line after field-level merge."""

    ticket_id: UUID
    item_type: str
    count: int


# orjson leaves these to `default=str`, as json.dumps does (it would write datetimes in its own form)
_JSONB_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _jtext(value: Any) -> str | None:
    """jsonb parameters travel as text (PostgreSQL reparses them, so only the value matters: orjson, the fastest
    encoder, writes them); None stays SQL NULL."""
    return None if value is None else orjson.dumps(value, default=str, option=_JSONB_OPTS).decode()


def result_text(result: dict[str, Any]) -> str:
    """A stored result's text: read back with json.loads, it must give the very dict sent (key order, value types),
    so a replay re-encodes the first answer byte for byte; orjson writes that JSON several times faster."""
    return orjson.dumps(result).decode()


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class TicketWrite:
    """One ticket's new crew-owned state as a push writes it, with its version and the holder for the change log
    (tickets.holder_crew_id is generated, never written); its stored document travels in ChangeColumns."""

    id: UUID
    status: str
    crew_id: int | None
    resolution_code: str | None
    reason_code: str | None
    field_meta: str  # JSON text
    version: int
    holder_crew_id: int | None


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class ConflictRow:
    """A conflict or late report for supervisors (I5), from one mutation of this device."""

    ticket_id: UUID
    department_id: int
    crew_id: int
    seq: int
    kind: str
    field: str | None
    kept: str  # JSON text
    discarded: str  # JSON text
    detail: str | None


@dataclass(frozen=True)
class PhotoRow:
    """A photo reference a push attaches; `verified` is the adding crew's possession of the bytes (photo_possession)."""

    ticket_id: UUID
    sha256: str
    kind: str
    taken_at: Any
    lat: float | None
    lon: float | None
    verified: bool


@dataclass(frozen=True)
class CreatedRow:
    """The office columns of a self-reported ticket; its crew-owned state and document travel in `tickets`."""

    id: UUID
    service_type_id: int
    address: str
    zip: str | None
    lat: float | None
    lon: float | None
    description: str
    source: str | None
    requested_at: Any


class _Params:
    """Numbered parameters of one composed statement: each array is bound once, however many parts read it."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[str, int] = {}

    def __call__(self, name: str, value: Any, cast: str) -> str:
        """`$n::cast` for the array called `name` (bound on first use)."""
        if name not in self._index:
            self.values.append(value)
            self._index[name] = len(self.values)
        return f"${self._index[name]}::{cast}"


# A whole push in ONE statement (data-modifying CTEs over unnest; every part sees the same snapshot and they touch
# different rows, so none needs another's effects): each ticket's new state, version, stored document and hash in a
# single UPDATE (`w`: one tuple version per ticket; PostgreSQL derives tickets.holder_crew_id, a generated column,
# while the log's holder is domain.states.holder of the same state: tests/test_holder_rule.py pins the two to one
# table), new notes (`n`), changed item lines (`i`), holding history (`th`, I5), the change rows (`c`, I2), audit rows
# (`a`, I9), the stored results (`r`), conflicts for supervisors (`f`), attached photos (`ph`: their possession decided
# before, photo_possession), self-reported tickets (`nt`: inserted with their final state, so `w` finds nothing to
# update for them; ticket_photos' foreign key is checked at the statement's end, when the row exists), and the device's
# last_seq (I1: results and last_seq commit with the effects or not at all). The documents were rendered in Python
# (domain.document) from the fold's state.
# Only the parts a push has are in its statement: PostgreSQL sets up every part of a statement on each execution
# (relations, indexes, triggers, constraint expressions) even when its arrays are empty, which cost a one-mutation push
# more than its writes. The text depends only on which parts are present, so a connection prepares a handful of
# statements once (asyncpg's statement cache) and reuses their generic plans.
def _apply_sql(device_id: str, last_seq: int, tickets: Sequence[TicketWrite], changes: ChangeColumns,
               notes: Sequence[NoteRow], items: Sequence[ItemRow], audits: Sequence[tuple[Any, ...]],
               results: Sequence[StoredResult], conflicts: Sequence[ConflictRow], photos: Sequence[PhotoRow],
               created: Sequence[CreatedRow], known_holders: Collection[tuple[UUID, int]]) -> tuple[str, list[Any]]:
    """The push statement with only the parts this push has, and its arguments."""
    p = _Params()
    ctes: list[str] = []
    dev = p("device", device_id, "text")
    ids = [t.id for t in tickets]

    def ticket(name: str, cast: str) -> str:
        return p(name, [getattr(t, name) for t in tickets], cast)

    if len(tickets) > len(created):
        ctes.append(
            "w AS (\n"
            "  UPDATE tickets t SET status = v.st, crew_id = v.crew, resolution_code = v.res, reason_code = v.why,\n"
            "    field_meta = v.meta::jsonb, version = v.ver, updated_at = now(), doc_hash = v.h, doc_json = v.doc, doc_mp = v.mp\n"
            f"  FROM unnest({p('ids', ids, 'uuid[]')}, {ticket('status', 'text[]')}, {ticket('crew_id', 'integer[]')},"
            f" {ticket('resolution_code', 'text[]')}, {ticket('reason_code', 'text[]')}, {ticket('field_meta', 'text[]')},"
            f" {ticket('version', 'integer[]')}, {p('hashes', changes.hashes, 'bytea[]')}, {p('docs', changes.docs, 'text[]')},"
            f" {p('mps', changes.mps, 'bytea[]')}) AS v(id, st, crew, res, why, meta, ver, h, doc, mp)\n"
            "  WHERE t.id = v.id)")
    if notes:
        ctes.append(
            "n AS (\n  INSERT INTO ticket_notes (id, ticket_id, text, author, device_time)\n"
            f"  SELECT * FROM unnest({p('n.id', [n.id for n in notes], 'uuid[]')},"
            f" {p('n.ticket', [n.ticket_id for n in notes], 'uuid[]')}, {p('n.text', [n.text for n in notes], 'text[]')},"
            f" {p('n.author', [n.author for n in notes], 'text[]')},"
            f" {p('n.time', [n.device_time for n in notes], 'timestamptz[]')}))")
    if items:
        ctes.append(
            "i AS (\n  INSERT INTO ticket_items (ticket_id, item_type, count)\n"
            f"  SELECT * FROM unnest({p('i.ticket', [i.ticket_id for i in items], 'uuid[]')},"
            f" {p('i.type', [i.item_type for i in items], 'text[]')}, {p('i.count', [i.count for i in items], 'integer[]')})\n"
            "  ON CONFLICT (ticket_id, item_type) DO UPDATE SET count = EXCLUDED.count)")
    holders = p("holders", [t.holder_crew_id for t in tickets], "integer[]") if tickets else ""
    # holding history: only pairs not already read under the tickets' locks (rows there are never deleted)
    held = list(dict.fromkeys((t.id, t.holder_crew_id) for t in tickets
                              if t.holder_crew_id is not None and (t.id, t.holder_crew_id) not in known_holders))
    if held:
        ctes.append(
            "th AS (\n  INSERT INTO ticket_holders (ticket_id, crew_id)\n"
            f"  SELECT * FROM unnest({p('th.ids', [h[0] for h in held], 'uuid[]')},"
            f" {p('th.crews', [h[1] for h in held], 'integer[]')})\n"
            "  ON CONFLICT DO NOTHING)")
    if tickets:
        ctes.append(
            "c AS (\n"
            "  INSERT INTO changes (ticket_id, department_id, holder_crew_id, prev_crew_id, removal_reason, version, doc_hash,\n"
            "                       changed, actor, doc_json, doc_mp)\n"
            "  SELECT v.id, v.dept, v.holder, v.prev, v.reason, v.ver, v.h,\n"
            f"    CASE WHEN v.changed = '' THEN '{{}}'::text[] ELSE string_to_array(v.changed, ',') END, {dev}, v.doc, v.mp\n"
            f"  FROM unnest({p('ids', ids, 'uuid[]')}, {p('depts', changes.depts, 'smallint[]')}, {holders},"
            f" {p('prevs', changes.prevs, 'integer[]')}, {p('reasons', changes.reasons, 'text[]')},"
            f" {ticket('version', 'integer[]')}, {p('docs', changes.docs, 'text[]')}, {p('hashes', changes.hashes, 'bytea[]')},"
            f" {p('changed', changes.changed, 'text[]')}, {p('mps', changes.mps, 'bytea[]')}) WITH ORDINALITY\n"
            "    AS v(id, dept, holder, prev, reason, ver, doc, h, changed, mp, ord)\n"
            "  ORDER BY v.ord)")
    if audits:
        cols: list[list[Any]] = [[], [], [], [], [], [], [], []]
        for k, a, act, tid, dep, b, af, why in audits:
            for col, v in zip(cols, (k, a, act, tid, dep, _jtext(b), _jtext(af), why)):
                col.append(v)
        a = [p(f"a{i}", col, cast) for i, (col, cast) in enumerate(zip(cols, (
            "text[]", "text[]", "text[]", "uuid[]", "smallint[]", "text[]", "text[]", "text[]")))]
        ctes.append(
            "a AS (\n  INSERT INTO audit_log (actor_kind, actor, action, ticket_id, department_id, before, after, reason)\n"
            f"  SELECT k, a, act, tid, dep, b::jsonb, af::jsonb, why FROM unnest({', '.join(a)}) WITH ORDINALITY\n"
            "    AS v(k, a, act, tid, dep, b, af, why, ord) ORDER BY ord)")
    if results:
        r = [p(f"r.{name}", [getattr(x, name) for x in results], cast) for name, cast in (
            ("seq", "bigint[]"), ("op", "text[]"), ("ticket_id", "uuid[]"), ("status", "text[]"), ("reason", "text[]"))]
        r.append(p("r.result", [result_text(x.result) for x in results], "text[]"))
        r += [p(f"r.{name}", [getattr(x, name) for x in results], cast) for name, cast in (
            ("server_version", "bigint[]"), ("digest", "bytea[]"))]
        ctes.append(
            "r AS (\n  INSERT INTO mutation_results (device_id, seq, op, ticket_id, status, reason, result, server_version, digest)\n"
            f"  SELECT {dev}, seq, op, tid, st, why, res, ver, dig FROM unnest({', '.join(r)})\n"
            "    AS v(seq, op, tid, st, why, res, ver, dig))")
    if conflicts:
        f = [p(f"f.{name}", [getattr(x, name) for x in conflicts], cast) for name, cast in (
            ("ticket_id", "uuid[]"), ("department_id", "smallint[]"), ("crew_id", "integer[]"), ("seq", "bigint[]"),
            ("kind", "text[]"), ("field", "text[]"), ("kept", "text[]"), ("discarded", "text[]"), ("detail", "text[]"))]
        ctes.append(
            "f AS (\n  INSERT INTO conflicts (ticket_id, department_id, crew_id, device_id, seq, kind, field, kept, discarded, detail)\n"
            f"  SELECT tid, dep, crew, {dev}, seq, kind, fld, kept::jsonb, disc::jsonb, detail FROM unnest({', '.join(f)})"
            " WITH ORDINALITY\n    AS v(tid, dep, crew, seq, kind, fld, kept, disc, detail, ord) ORDER BY ord)")
    if photos:
        ph = [p(f"ph.{name}", [getattr(x, name) for x in photos], cast) for name, cast in (
            ("ticket_id", "uuid[]"), ("sha256", "text[]"), ("kind", "text[]"), ("taken_at", "timestamptz[]"),
            ("lat", "float8[]"), ("lon", "float8[]"), ("verified", "boolean[]"))]
        ctes.append(
            "ph AS (\n  INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, lat, lon, added_by, verified)\n"
            f"  SELECT tid, sha, kind, taken, lat, lon, {dev}, ok FROM unnest({', '.join(ph)})\n"
            "    AS v(tid, sha, kind, taken, lat, lon, ok)\n  ON CONFLICT DO NOTHING)")
    if created:
        nt = [p(f"nt.{name}", [getattr(x, name) for x in created], cast) for name, cast in (
            ("id", "uuid[]"), ("service_type_id", "smallint[]"), ("address", "text[]"), ("zip", "text[]"),
            ("lat", "float8[]"), ("lon", "float8[]"), ("description", "text[]"), ("source", "text[]"),
            ("requested_at", "timestamptz[]"))]
        ctes.append(
            "nt AS (\n"
            "  INSERT INTO tickets (id, service_type_id, department_id, status, address, zip, lat, lon, description, source,\n"
            "                       requested_at, crew_id, created_by_device, resolution_code, reason_code, field_meta, version,\n"
            "                       doc_hash, doc_json, doc_mp)\n"
            f"  SELECT n.id, n.stid, v.dept, v.st, n.addr, n.zip, n.lat, n.lon, n.descr, n.src, n.req, v.crew, {dev}, v.res, v.why,\n"
            "    v.meta::jsonb, v.ver, v.h, v.doc, v.mp\n"
            f"  FROM unnest({', '.join(nt)}) AS n(id, stid, addr, zip, lat, lon, descr, src, req)\n"
            f"  JOIN unnest({p('ids', ids, 'uuid[]')}, {ticket('status', 'text[]')}, {ticket('crew_id', 'integer[]')},"
            f" {ticket('resolution_code', 'text[]')}, {ticket('reason_code', 'text[]')}, {ticket('field_meta', 'text[]')},"
            f" {ticket('version', 'integer[]')}, {p('hashes', changes.hashes, 'bytea[]')}, {p('docs', changes.docs, 'text[]')},"
            f" {p('mps', changes.mps, 'bytea[]')}, {p('depts', changes.depts, 'smallint[]')})"
            " AS v(id, st, crew, res, why, meta, ver, h, doc, mp, dept)\n    ON v.id = n.id)")
    sql = ("WITH " + ",\n".join(ctes) + "\n" if ctes else "") + \
        f"UPDATE devices SET last_seq = {p('last_seq', last_seq, 'bigint')} WHERE id = {dev}"
    return sql, p.values


async def apply_push(conn: asyncpg.Connection, device_id: str, last_seq: int, tickets: Sequence[TicketWrite],
                     changes: ChangeColumns, notes: Sequence[NoteRow], items: Sequence[ItemRow],
                     audits: Sequence[tuple[Any, ...]], results: Sequence[StoredResult],
                     conflicts: Sequence[ConflictRow], photos: Sequence[PhotoRow] = (),
                     created: Sequence[CreatedRow] = (), known_holders: Collection[tuple[UUID, int]] = ()) -> None:
    """Every write of a push in one round trip; `tickets` and `changes` list the same tickets in the same order (the
    `created` ones among them), and the caller holds the device row, the photo locks and the tickets' row locks.
    `known_holders`: (ticket, crew) holding rows the caller read under those locks, which need no insert (I5)."""
    assert [t.id for t in tickets] == changes.ids
    sql, args = _apply_sql(device_id, last_seq, tickets, changes, notes, items, audits, results, conflicts, photos,
                           created, known_holders)
    await conn.execute(sql, *args)


# Possession of photos a push attaches, read under the push's photo locks (a statement after begin_push: its snapshot
# sees an upload that committed while the push waited for the lock, engine.uploads.mark_blob_verified). Per hash: the
# crew proved it (delivered the bytes), and the tickets showing it verified that the crew holds or that this push
# folded (whose holder the fold may change); fs_photo_possessed is this rule over the tickets' current holders.
_POSSESSION = """
SELECT s AS sha256, EXISTS (SELECT 1 FROM photo_possession WHERE sha256 = s AND crew_id = $2) AS proven,
  ARRAY(SELECT DISTINCT p.ticket_id FROM ticket_photos p JOIN tickets t ON t.id = p.ticket_id
        WHERE p.sha256 = s AND p.verified AND (t.holder_crew_id = $2 OR t.id = ANY($3::uuid[]))) AS shown
FROM unnest($1::text[]) AS s
"""


@dataclass(frozen=True)
class Possession:
    """What decides whether a crew possesses a photo: proven by delivery, or shown verified on these tickets."""

    proven: bool
    shown: list[UUID]


async def photo_possession(conn: asyncpg.Connection, crew_id: int, hashes: Sequence[str],
                           folded: Sequence[UUID]) -> dict[str, Possession]:
    """Per hash, the facts the possession rule reads; the caller applies it with the holders its fold left."""
    rows = await conn.fetch(_POSSESSION, sorted(set(hashes)), crew_id, list(folded))
    return {r["sha256"]: Possession(r["proven"], list(r["shown"])) for r in rows}


@dataclass(frozen=True)
class ServiceTypes:
    """The service types a department's crews may self-report, by name or code: (id, name); and the department's code."""

    by_key: dict[str, tuple[int, str]]
    department: str | None


async def department_service_types(conn: asyncpg.Connection, department_id: int) -> ServiceTypes:
    """Service types a crew of this department may self-report (by name or code), with the department's code."""
    rows = await conn.fetch("SELECT st.id, st.name, st.code, d.code AS dept FROM departments d"
                            " LEFT JOIN service_types st ON st.department_id = d.id WHERE d.id = $1", department_id)
    by_key = {k: (r["id"], r["name"]) for r in rows if r["id"] is not None for k in (r["name"], r["code"])}
    return ServiceTypes(by_key, rows[0]["dept"] if rows else None)

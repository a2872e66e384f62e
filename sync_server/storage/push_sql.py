"""SQL behind push: its locks and reads in one statement, its writes in another, stored results for replays (I1)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from sync_server.domain.document import RenderedDoc
from sync_server.storage.tickets import ChangeColumns
from sync_server.storage.uploads import PHOTO_LOCK_CLASS

# The start of a push in ONE statement, taking its locks in the one order every writer uses: the device rows (a
# device's seqs are a single line, I1), then the photo advisory locks, then the tickets' rows, each in sorted order
# (engine.uploads.mark_blob_verified takes a photo lock, then the rows of the tickets showing it). The same statement
# starts a batch of several devices' pushes (engine.push_batch): every lock of the batch is taken here, in that order
# over the whole batch, so two batches, or a batch and a single writer, never wait for each other in a cycle.
# The order is the plan's: UNION ALL runs its branches in order, the device branch first; the ticket branch's
# uncorrelated `(SELECT n FROM p)` is a one-time filter evaluated before its scan yields (and LockRows locks) any row,
# and `p` waits on `d`. Rows of k = 0 are the devices found (a missing one: unknown device), k = 2 the owners of the
# batch's note ids, k = 1 the tickets with their STORED documents and whether the pushing crew (each ticket's own,
# `$3`) ever held each (ticket_holders: retention keeps it).
_BEGIN = """
WITH d AS MATERIALIZED (
  SELECT d.id, d.last_seq, d.revoked_at, pg_current_xact_id()::text::bigint AS xid, now() AS now, c.name AS crew_name
  FROM devices d JOIN crews c ON c.id = d.crew_id WHERE d.id = ANY($1::text[]) ORDER BY d.id FOR UPDATE OF d),
p AS MATERIALIZED (
  SELECT count(pg_advisory_xact_lock($6, hashtext(s))) AS n
  FROM (SELECT s FROM unnest($4::text[]) AS s ORDER BY s) AS o WHERE EXISTS (SELECT 1 FROM d)),
t AS MATERIALIZED (
  SELECT t.id, EXISTS (SELECT 1 FROM ticket_holders h WHERE h.ticket_id = t.id AND h.crew_id = q.crew) AS held,
    t.department_id, t.crew_id, t.holder_crew_id, t.field_meta::text AS field_meta, t.duplicate_of, t.doc_json AS doc
  FROM unnest($2::uuid[], $3::integer[]) AS q(id, crew) JOIN tickets t ON t.id = q.id
  WHERE (SELECT n FROM p) IS NOT NULL ORDER BY t.id FOR UPDATE OF t)
SELECT 0 AS k, d.id AS device_id, d.last_seq, d.revoked_at, d.xid, d.now, d.crew_name, NULL::uuid[] AS note_ids,
  NULL::uuid[] AS note_tickets, NULL::uuid AS id, NULL::boolean AS held, NULL::smallint AS department_id,
  NULL::integer AS crew_id, NULL::integer AS holder_crew_id, NULL::text AS field_meta, NULL::uuid AS duplicate_of,
  NULL::text AS doc
FROM d
UNION ALL
SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL,
  ARRAY(SELECT n.id FROM ticket_notes n WHERE n.id = ANY($5::uuid[]) ORDER BY n.id),
  ARRAY(SELECT n.ticket_id FROM ticket_notes n WHERE n.id = ANY($5::uuid[]) ORDER BY n.id),
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
WHERE cardinality($5::uuid[]) > 0
UNION ALL
SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, t.id, t.held, t.department_id, t.crew_id, t.holder_crew_id,
  t.field_meta, t.duplicate_of, t.doc
FROM t
ORDER BY k, device_id, id
"""


@dataclass(frozen=True)
class PushAsk:
    """What one device's push locks and reads: its device row, the crew whose holding history decides late reports,
    its tickets, the photos it attaches and the note ids it adds."""

    device_id: str
    crew_id: int
    ticket_ids: Sequence[UUID]
    photo_hashes: Sequence[str]
    note_ids: Sequence[UUID]


@dataclass(frozen=True)
class PushStart:
    """What a push knows once it holds its locks: the device row (None: unknown device), the locked ticket rows and
    the tickets that already hold the batch's note ids."""

    device: asyncpg.Record | None
    tickets: list[asyncpg.Record]
    note_owner: dict[UUID, UUID]


async def begin_pushes(conn: asyncpg.Connection, asks: Sequence[PushAsk]) -> list[PushStart]:
    """The start of several devices' pushes in one round trip, each ask's view in its order. The asks name distinct
    devices and tickets (a ticket's `held` is read for its ask's crew); photos and note ids may repeat."""
    pairs = sorted({(t, a.crew_id) for a in asks for t in a.ticket_ids})
    assert len({t for t, _ in pairs}) == len(pairs), "a ticket in two asks of one batch"
    rows = await conn.fetch(_BEGIN, sorted({a.device_id for a in asks}), [t for t, _ in pairs], [c for _, c in pairs],
                            sorted({h for a in asks for h in a.photo_hashes}),
                            sorted({n for a in asks for n in a.note_ids}), PHOTO_LOCK_CLASS)
    devices = {r["device_id"]: r for r in rows if r["k"] == 0}
    tickets = {r["id"]: r for r in rows if r["k"] == 1}
    owners = next((dict(zip(r["note_ids"], r["note_tickets"])) for r in rows if r["k"] == 2), {})
    out = []
    for a in asks:
        mine = sorted(set(a.ticket_ids))
        out.append(PushStart(devices.get(a.device_id), [tickets[t] for t in mine if t in tickets],
                             {n: owners[n] for n in a.note_ids if n in owners}))
    return out


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


def _jfrag(value: Any) -> orjson.Fragment | None:
    """A jsonb value inside a json parameter, written as _jtext writes it as a parameter of its own."""
    text = _jtext(value)
    return None if text is None else orjson.Fragment(text)


def _rows(rows: list[dict[str, Any]]) -> str:
    """Rows for json_to_recordset: ids as text, datetimes in RFC 3339 (what PostgreSQL's input functions read)."""
    return orjson.dumps(rows, default=_uuid_text).decode()


def _uuid_text(value: Any) -> str:
    """Ids read back from PostgreSQL are asyncpg's UUID subclass, which orjson leaves to `default`."""
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a push row value")


def result_text(result: dict[str, Any]) -> str:
    """A stored result's text: read back with json.loads, it must give the very dict sent (key order, value types),
    so a replay re-encodes the first answer byte for byte; orjson writes that JSON several times faster. A ticket
    carried with its exact rendering is copied from its canonical text (the bytes orjson would write for it)."""
    ticket = result.get("ticket")
    if isinstance(ticket, RenderedDoc):
        result = {**result, "ticket": orjson.Fragment(ticket.rendered.json)}
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

    def cols(self, prefix: str, rows: Sequence[Any], spec: Sequence[tuple[str, str]]) -> list[str]:
        """`$n::cast` per (attribute, cast) of `spec`: each attribute of `rows` bound as one array."""
        return [self(f"{prefix}.{name}", [getattr(r, name) for r in rows], cast) for name, cast in spec]


# Per table: the attributes of its rows the push statement binds as arrays (the rarer parts), in unnest order, with
# their casts.
_CONFLICT = (("ticket_id", "uuid[]"), ("department_id", "smallint[]"), ("crew_id", "integer[]"), ("seq", "bigint[]"),
             ("kind", "text[]"), ("field", "text[]"), ("kept", "text[]"), ("discarded", "text[]"), ("detail", "text[]"))
_PHOTO = (("ticket_id", "uuid[]"), ("sha256", "text[]"), ("kind", "text[]"), ("taken_at", "timestamptz[]"),
          ("lat", "float8[]"), ("lon", "float8[]"), ("verified", "boolean[]"))
_CREATED = (("id", "uuid[]"), ("service_type_id", "smallint[]"), ("address", "text[]"), ("zip", "text[]"),
            ("lat", "float8[]"), ("lon", "float8[]"), ("description", "text[]"), ("source", "text[]"),
            ("requested_at", "timestamptz[]"))


# A whole push in ONE statement (data-modifying CTEs over json_to_recordset and unnest; every part sees the same snapshot and they touch
# different rows, so none needs another's effects): each ticket's new state, version, stored document and hash in a
# single UPDATE (`w`: one tuple version per ticket; PostgreSQL derives tickets.holder_crew_id, a generated column,
# while the log's holder is domain.states.holder of the same state: tests/test_holder_rule.py pins the two to one
# table), new notes (`n`), changed item lines (`i`), holding history (`th`, I5), the change rows (`c`, I2), audit rows
# (`a`, I9), the stored results (`r`), conflicts for supervisors (`f`), attached photos (`ph`: their possession decided
# before, photo_possession), self-reported tickets (`nt`: inserted with their final state, so `w` finds nothing to
# update for them; ticket_photos' foreign key is checked at the statement's end, when the row exists), and the device's
# last_seq (I1: results and last_seq commit with the effects or not at all). The documents were rendered in Python
# (domain.document) from the fold's state. Several devices' pushes (engine.push_batch) are written by the same
# statement, every row carrying its device: they name distinct devices and tickets, so their rows never meet.
# Only the parts a push has are in its statement: PostgreSQL sets up every part of a statement on each execution
# (relations, indexes, triggers, constraint expressions) even when its arrays are empty, which cost a one-mutation push
# more than its writes. The text depends only on which parts are present, so a connection prepares a handful of
# statements once (asyncpg's statement cache) and reuses their generic plans.
@dataclass
class PushWrite:
    """Everything one device's push writes: `tickets` and `changes` list the same tickets in the same order (the
    `created` ones among them); `known_holders` are (ticket, crew) holding rows read under the locks (no insert)."""

    device_id: str
    last_seq: int
    tickets: Sequence[TicketWrite]
    changes: ChangeColumns
    notes: Sequence[NoteRow] = ()
    items: Sequence[ItemRow] = ()
    audits: Sequence[tuple[Any, ...]] = ()
    results: Sequence[StoredResult] = ()
    conflicts: Sequence[ConflictRow] = ()
    photos: Sequence[PhotoRow] = ()
    created: Sequence[CreatedRow] = ()
    known_holders: Collection[tuple[UUID, int]] = ()


def _apply_sql(writes: Sequence[PushWrite]) -> tuple[str, list[Any]]:
    """The push statement with only the parts these pushes have, and its arguments (one device or a batch's)."""
    p = _Params()
    ctes: list[str] = []
    tickets = [(w.device_id, t) for w in writes for t in w.tickets]
    created = [(w.device_id, c) for w in writes for c in w.created]
    docs_l = [d for w in writes for d in w.changes.docs]
    if tickets:
        # the tickets' scalar columns as ONE json parameter (json_to_recordset parses it once, into the shared `v`):
        # asyncpg type-checks every element of an array parameter in Python, ~0.5 us each, which cost a 25-mutation
        # push more than building its statement; the documents, hashes and msgpack bytes stay arrays (few, large,
        # no escaping), read by position. field_meta travels as the JSON value it is.
        rows = [{"o": o, "id": t.id, "dev": dev, "st": t.status, "crew": t.crew_id, "res": t.resolution_code,
                 "why": t.reason_code, "meta": orjson.Fragment(t.field_meta), "ver": t.version, "dept": dept,
                 "holder": t.holder_crew_id, "prev": prev, "reason": reason, "changed": changed}
                for o, ((dev, t), dept, prev, reason, changed) in enumerate(zip(
                    tickets, *([x for w in writes for x in getattr(w.changes, col)]
                               for col in ("depts", "prevs", "reasons", "changed"))), 1)]
        ctes.append(
            "v AS MATERIALIZED (\n"
            f"  SELECT * FROM json_to_recordset({p('tickets', _rows(rows), 'json')}) AS v(o integer, id uuid, dev text,\n"
            "    st text, crew integer, res text, why text, meta jsonb, ver integer, dept smallint, holder integer,\n"
            "    prev integer, reason text, changed text))")
    docs, hashes, mps = (p("docs", docs_l, "text[]"), p("hashes", [h for w in writes for h in w.changes.hashes], "bytea[]"),
                         p("mps", [m for w in writes for m in w.changes.mps], "bytea[]")) if tickets else ("", "", "")
    if len(tickets) > len(created):
        ctes.append(
            "w AS (\n"
            "  UPDATE tickets t SET status = v.st, crew_id = v.crew, resolution_code = v.res, reason_code = v.why,\n"
            f"    field_meta = v.meta, version = v.ver, updated_at = now(), doc_hash = ({hashes})[v.o],\n"
            f"    doc_json = ({docs})[v.o], doc_mp = ({mps})[v.o]\n"
            "  FROM v WHERE t.id = v.id)")
    notes = [n for w in writes for n in w.notes]
    if notes:
        note_rows = p("notes", _rows([{"id": n.id, "tid": n.ticket_id, "body": n.text, "author": n.author,
                                        "dt": n.device_time} for n in notes]), "json")
        ctes.append(
            "n AS (\n  INSERT INTO ticket_notes (id, ticket_id, text, author, device_time)\n"
            f"  SELECT id, tid, body, author, dt FROM json_to_recordset({note_rows})\n"
            "    AS v(id uuid, tid uuid, body text, author text, dt timestamptz))")
    items = [i for w in writes for i in w.items]
    if items:
        item_rows = p("items", _rows([{"tid": i.ticket_id, "kind": i.item_type, "n": i.count} for i in items]), "json")
        ctes.append(
            "i AS (\n  INSERT INTO ticket_items (ticket_id, item_type, count)\n"
            f"  SELECT tid, kind, n FROM json_to_recordset({item_rows}) AS v(tid uuid, kind text, n integer)\n"
            "  ON CONFLICT (ticket_id, item_type) DO UPDATE SET count = EXCLUDED.count)")
    # holding history: only pairs not already read under the tickets' locks (rows there are never deleted)
    held = list(dict.fromkeys((t.id, t.holder_crew_id) for w in writes for t in w.tickets
                              if t.holder_crew_id is not None and (t.id, t.holder_crew_id) not in w.known_holders))
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
            f"  SELECT v.id, v.dept, v.holder, v.prev, v.reason, v.ver, ({hashes})[v.o],\n"
            "    CASE WHEN v.changed = '' THEN '{}'::text[] ELSE string_to_array(v.changed, ',') END, v.dev,\n"
            f"    ({docs})[v.o], ({mps})[v.o]\n"
            "  FROM v ORDER BY v.o)")
    audits = [a for w in writes for a in w.audits]
    if audits:
        rows = [{"o": o, "k": k, "a": a, "act": act, "tid": tid, "dep": dep, "b": _jfrag(b), "af": _jfrag(af), "why": why}
                for o, (k, a, act, tid, dep, b, af, why) in enumerate(audits, 1)]
        ctes.append(
            "a AS (\n  INSERT INTO audit_log (actor_kind, actor, action, ticket_id, department_id, before, after, reason)\n"
            f"  SELECT k, a, act, tid, dep, b, af, why FROM json_to_recordset({p('audits', _rows(rows), 'json')})\n"
            "    AS v(o integer, k text, a text, act text, tid uuid, dep smallint, b jsonb, af jsonb, why text) ORDER BY o)")
    results = [(w.device_id, x) for w in writes for x in w.results]
    if results:
        # the stored result text stays an array: it must be kept exactly as sent, and it is long
        rows = [{"o": o, "dev": dev, "seq": x.seq, "op": x.op, "tid": x.ticket_id, "st": x.status, "why": x.reason,
                 "ver": x.server_version, "dig": x.digest.hex()} for o, (dev, x) in enumerate(results, 1)]
        ctes.append(
            "r AS (\n  INSERT INTO mutation_results (device_id, seq, op, ticket_id, status, reason, result, server_version, digest)\n"
            f"  SELECT dev, seq, op, tid, st, why, ({p('r.result', [result_text(x.result) for _, x in results], 'text[]')})[o],"
            " ver, decode(dig, 'hex')\n"
            f"  FROM json_to_recordset({p('results', _rows(rows), 'json')})\n"
            "    AS v(o integer, dev text, seq bigint, op text, tid uuid, st text, why text, ver bigint, dig text))")
    conflicts = [c for w in writes for c in w.conflicts]
    if conflicts:
        devs = p("f.dev", [w.device_id for w in writes for _ in w.conflicts], "text[]")
        ctes.append(
            "f AS (\n  INSERT INTO conflicts (ticket_id, department_id, crew_id, device_id, seq, kind, field, kept, discarded, detail)\n"
            "  SELECT tid, dep, crew, dev, seq, kind, fld, kept::jsonb, disc::jsonb, detail"
            f" FROM unnest({', '.join(p.cols('f', conflicts, _CONFLICT))}, {devs})"
            " WITH ORDINALITY\n    AS v(tid, dep, crew, seq, kind, fld, kept, disc, detail, dev, ord) ORDER BY ord)")
    photos = [ph for w in writes for ph in w.photos]
    if photos:
        devs = p("ph.dev", [w.device_id for w in writes for _ in w.photos], "text[]")
        ctes.append(
            "ph AS (\n  INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, lat, lon, added_by, verified)\n"
            f"  SELECT tid, sha, kind, taken, lat, lon, dev, ok FROM unnest({', '.join(p.cols('ph', photos, _PHOTO))}, {devs})\n"
            "    AS v(tid, sha, kind, taken, lat, lon, ok, dev)\n  ON CONFLICT DO NOTHING)")
    if created:
        ctes.append(
            "nt AS (\n"
            "  INSERT INTO tickets (id, service_type_id, department_id, status, address, zip, lat, lon, description, source,\n"
            "                       requested_at, crew_id, created_by_device, resolution_code, reason_code, field_meta, version,\n"
            "                       doc_hash, doc_json, doc_mp)\n"
            "  SELECT n.id, n.stid, v.dept, v.st, n.addr, n.zip, n.lat, n.lon, n.descr, n.src, n.req, v.crew, v.dev, v.res, v.why,\n"
            f"    v.meta, v.ver, ({hashes})[v.o], ({docs})[v.o], ({mps})[v.o]\n"
            f"  FROM unnest({', '.join(p.cols('nt', [c for _, c in created], _CREATED))}) AS n(id, stid, addr, zip, lat, lon, descr, src, req)\n"
            "  JOIN v ON v.id = n.id)")
    if len(writes) == 1:  # the common single push: a plain keyed update
        last = f"UPDATE devices SET last_seq = {p('last_seq', writes[0].last_seq, 'bigint')}" \
               f" WHERE id = {p('device', writes[0].device_id, 'text')}"
    else:
        last = (f"UPDATE devices d SET last_seq = u.seq FROM unnest({p('devices', [w.device_id for w in writes], 'text[]')},"
                f" {p('last_seqs', [w.last_seq for w in writes], 'bigint[]')}) AS u(id, seq) WHERE d.id = u.id")
    sql = ("WITH " + ",\n".join(ctes) + "\n" if ctes else "") + last
    return sql, p.values


async def apply_push(conn: asyncpg.Connection, device_id: str, last_seq: int, tickets: Sequence[TicketWrite],
                     changes: ChangeColumns, notes: Sequence[NoteRow], items: Sequence[ItemRow],
                     audits: Sequence[tuple[Any, ...]], results: Sequence[StoredResult],
                     conflicts: Sequence[ConflictRow], photos: Sequence[PhotoRow] = (),
                     created: Sequence[CreatedRow] = (), known_holders: Collection[tuple[UUID, int]] = ()) -> None:
    """Every write of one push in one round trip; the caller holds the device row, the photo locks and the tickets'
    row locks (begin_pushes)."""
    await apply_pushes(conn, [PushWrite(device_id, last_seq, tickets, changes, notes, items, audits, results, conflicts,
                                        photos, created, known_holders)])


async def apply_pushes(conn: asyncpg.Connection, writes: Sequence[PushWrite]) -> None:
    """Every write of one or several devices' pushes in ONE statement (I1: each device's results and last_seq commit
    with its effects); the caller holds every device row, photo lock and ticket row lock they need (begin_pushes), and
    no two writes name the same device or ticket."""
    for w in writes:
        assert [t.id for t in w.tickets] == w.changes.ids
    sql, args = _apply_sql(writes)
    await conn.execute(sql, *args)


# Possession of photos a push attaches, read under the push's photo locks (a statement after begin_pushes: its snapshot
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

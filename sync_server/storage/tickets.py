"""SQL for tickets and the change log: set-based loads of whole wire documents and the one way a change is recorded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from sync_server.domain.document import render, ticket_doc
from sync_server.domain.ticket import TicketRecord as TicketRecord  # the one ticket value, read and written here

# One statement per batch of tickets: each ticket's own fields under their wire names (domain.document.SCALAR_FIELDS)
# and its children as arrays of typed rows, in one round trip at one snapshot; the document is built and rendered in
# Python (domain.document.ticket_doc, render), the one renderer every writer shares with the push.
_TICKET_ROWS = """
SELECT t.id, t.sr_number, st.name AS service_type, d.code AS department, t.status, t.priority, t.address, t.zip,
  t.lat, t.lon, t.council_district, t.description, t.source, t.requested_at, t.service_date, t.due_at, c.name AS crew,
  t.resolution_code, t.reason_code, t.created_by_device, t.updated_at, t.version,
  t.department_id, t.crew_id, t.holder_crew_id, t.field_meta::text AS field_meta, t.duplicate_of,
  ARRAY(SELECT ROW(n.id, n.text, n.author, n.device_time, n.created_at) FROM ticket_notes n WHERE n.ticket_id = t.id)
    AS notes,
  ARRAY(SELECT ROW(p.sha256, p.kind, p.taken_at, p.lat, p.lon, p.verified) FROM ticket_photos p WHERE p.ticket_id = t.id)
    AS photos,
  ARRAY(SELECT ROW(i.item_type, i.count) FROM ticket_items i WHERE i.ticket_id = t.id) AS items
FROM tickets t
JOIN service_types st ON st.id = t.service_type_id
JOIN departments d ON d.id = t.department_id
LEFT JOIN crews c ON c.id = t.crew_id
WHERE t.id = ANY($1::uuid[])
"""


def _floats(doc: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL writes 34.0 as 34; the wire form (and so the canonical bytes) keeps coordinates as floats."""
    for obj in (doc, *doc["photos"]):
        for k in ("lat", "lon"):
            if isinstance(obj.get(k), int):
                obj[k] = float(obj[k])
    return doc


async def load_tickets(conn: asyncpg.Connection, ids: Iterable[UUID]) -> dict[UUID, TicketRecord]:
    """Whole current tickets in one set query (never a query per ticket), their documents built from the rows."""
    id_list = list(dict.fromkeys(ids))
    if not id_list:
        return {}
    rows = await conn.fetch(_TICKET_ROWS, id_list)
    return {r["id"]: _record(r, ticket_doc(r, r["notes"], r["photos"], r["items"])) for r in rows}


_STORED_JSON = "SELECT id, doc_json AS doc FROM tickets WHERE id = ANY($1::uuid[])"
_STORED_MP = "SELECT id, doc_mp AS doc FROM tickets WHERE id = ANY($1::uuid[])"


async def stored_documents(conn: asyncpg.Connection, ids: Sequence[UUID], packed: bool) -> dict[UUID, str | bytes]:
    """Tickets' documents as stored at their last change (msgpack bytes or canonical JSON text), for answers that
    splice them instead of rendering every ticket from its rows; a row stored before documents were is rendered."""
    rows = await conn.fetch(_STORED_MP if packed else _STORED_JSON, list(ids))
    out: dict[UUID, str | bytes] = {r["id"]: r["doc"] for r in rows if r["doc"] is not None}
    missing = [r["id"] for r in rows if r["doc"] is None]
    for tid, rec in (await load_tickets(conn, missing)).items():
        rendered = render(rec.doc)
        out[tid] = rendered.mp if packed else rendered.json
    return out


def _record(r: asyncpg.Record, doc: dict[str, Any]) -> TicketRecord:
    """A loaded row and its document as the engine's typed record."""
    return TicketRecord(
        doc=doc,
        department_id=r["department_id"],
        crew_id=r["crew_id"],
        holder_crew_id=r["holder_crew_id"],
        field_meta=orjson.loads(r["field_meta"]),
        duplicate_of=r["duplicate_of"],
    )


async def stored_records(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> tuple[dict[UUID, TicketRecord], set[UUID]]:
    """Locked ticket rows carrying their stored document (`doc`: tickets.doc_json) and `held` (the pushing crew ever
    held it) as records, plus the ids the crew ever held: the push reads documents instead of rendering them."""
    # a row without a stored document (written by a writer that predates stored documents): render it, already locked
    rendered = await load_tickets(conn, [r["id"] for r in rows if r["doc"] is None])
    # orjson: a push parses every locked ticket's document, and json.loads was a visible share
    return ({r["id"]: rendered.get(r["id"]) or _record(r, _floats(orjson.loads(r["doc"]))) for r in rows},
            {r["id"] for r in rows if r["held"]})


async def lock_tickets(conn: asyncpg.Connection, ids: Sequence[UUID]) -> dict[UUID, asyncpg.Record]:
    """Row-lock tickets in id order (a fixed order, so bulk actions never deadlock each other)."""
    rows = await conn.fetch(
        "SELECT id, status, crew_id, holder_crew_id, department_id, version FROM tickets"
        " WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(ids),
    )
    return {r["id"]: r for r in rows}


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class ChangeEntry:
    """One committed change of one ticket, as devices and supervisors will read it."""

    record: TicketRecord
    prev_crew_id: int | None = None
    removal_reason: str | None = None
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeColumns:
    """Change-log entries as the column arrays one set-based statement takes, each document rendered once here."""

    ids: list[UUID]
    depts: list[int]
    holders: list[int | None]
    prevs: list[int | None]
    reasons: list[str | None]
    versions: list[int]
    docs: list[str]
    hashes: list[bytes]
    mps: list[bytes]
    changed: list[str]  # comma-joined field names ('' for none)

    @classmethod
    def of(cls, entries: Sequence[ChangeEntry]) -> ChangeColumns:
        """Render each entry's document (canonical text, msgpack, hash) once: ticket and change rows store the same."""
        cols = cls([], [], [], [], [], [], [], [], [], [])
        for e in entries:
            d = e.record.doc
            out = e.record.rendered
            cols.ids.append(e.record.id)
            cols.depts.append(e.record.department_id)
            cols.holders.append(e.record.holder_crew_id)
            cols.prevs.append(e.prev_crew_id)
            cols.reasons.append(e.removal_reason)
            cols.versions.append(d["version"])
            cols.docs.append(out.json)
            cols.hashes.append(out.hash)
            cols.mps.append(out.mp)
            cols.changed.append(",".join(e.changed))
        return cols


async def record_changes(conn: asyncpg.Connection, entries: Sequence[ChangeEntry], actor: str, *, notify: bool = True) -> None:
    """Append change-log rows and refresh each ticket's checksum; callers hold the tickets' row locks (I2 ordering).

    `notify=False`: the caller wakes the live feed itself after commit (notify_after_commit), which keeps its commit
    out of NOTIFY's database-wide commit lock (PostgreSQL <= 16 holds it through the WAL flush, serialising commits).
    """
    if not entries:
        return
    cols = ChangeColumns.of(entries)
    ids, depts, holders, prevs, reasons, versions = cols.ids, cols.depts, cols.holders, cols.prevs, cols.reasons, cols.versions
    docs, digests, changed, packed = cols.docs, cols.hashes, cols.changed, cols.mps
    crews = {c for e in entries for c in (e.record.holder_crew_id, e.prev_crew_id) if c is not None}
    # Arrays, not executemany: one statement and one round trip whatever the batch size; ids are drawn here, under
    # the ticket locks. The live feed's wake-up rides along (CTE `n`, joined so it runs); NOTIFY is transactional,
    # so it fires only if this commits.
    notify_cte = (" n AS (" + NOTIFY_SQL.replace("$1", "$11") + " AS sent)") if notify else " n AS (SELECT $11::text AS sent)"
    await conn.execute(
        "WITH h AS (UPDATE tickets t SET doc_hash = v.h, doc_json = v.doc, doc_mp = v.mp"
        " FROM unnest($1::uuid[], $8::bytea[], $7::text[], $12::bytea[]) AS v(id, h, doc, mp) WHERE t.id = v.id),"
        # Holding history (state, never pruned): "did this crew ever hold it" must outlive the change log (I5).
        " th AS (INSERT INTO ticket_holders (ticket_id, crew_id) SELECT DISTINCT v.id, v.c FROM unnest($1::uuid[],"
        " $3::integer[]) AS v(id, c) WHERE v.c IS NOT NULL ON CONFLICT DO NOTHING),"
        + notify_cte +
        " INSERT INTO changes (ticket_id, department_id, holder_crew_id, prev_crew_id, removal_reason, version,"
        " doc_hash, changed, actor, doc_json, doc_mp)"
        " SELECT v.id, v.dept, v.holder, v.prev, v.reason, v.version, v.h,"
        " CASE WHEN v.changed = '' THEN '{}'::text[] ELSE string_to_array(v.changed, ',') END, $10, v.doc, v.mp"
        " FROM unnest($1::uuid[], $2::smallint[], $3::integer[], $4::integer[], $5::text[], $6::integer[], $7::text[],"
        " $8::bytea[], $9::text[], $12::bytea[]) WITH ORDINALITY"
        " AS v(id, dept, holder, prev, reason, version, doc, h, changed, mp, ord)"
        " CROSS JOIN n ORDER BY v.ord",
        ids, depts, holders, prevs, reasons, versions, docs, digests, changed, actor,
        live_payload(set(depts), crews), packed,
    )


# The live feed's wake-up: the payload is "<xid>;d=<department ids>;c=<crew ids>" (crews "*" when too many to list).
# Only a hint: the feed reads the change log, so a lost or coalesced notification never loses an event.
NOTIFY_SQL = "SELECT pg_notify('fieldsync_changes', pg_current_xact_id()::text || $1)"


# The same wake-up sent after the writer committed, in its own one-statement transaction with synchronous_commit off
# for that transaction only: a hint needs no durable commit, and the writer's commit did not queue behind NOTIFY's lock.
NOTIFY_AFTER_SQL = "SELECT set_config('synchronous_commit', 'off', true), pg_notify('fieldsync_changes', $1)"


async def notify_after_commit(conn: asyncpg.Connection, xid: int, departments: Iterable[int], crews: Iterable[int]) -> None:
    """Wake live feeds for a committed transaction `xid` (the payload record_changes would have sent)."""
    await conn.execute(NOTIFY_AFTER_SQL, f"{xid}{live_payload(departments, crews)}")


def live_payload(departments: Iterable[int], crews: Iterable[int]) -> str:
    """Small enough for NOTIFY's 8000-byte limit whatever the batch size."""
    crew_text = ",".join(map(str, sorted(crews)))
    if len(crew_text) > 6000:
        crew_text = "*"
    return f";d={','.join(map(str, sorted(departments)))};c={crew_text}"


async def audit(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[str, str, str, UUID | None, int | None, Any, Any, str | None]],
) -> None:
    """Audit rows (actor_kind, actor, action, ticket_id, department_id, before, after, reason) in the caller's transaction (I9)."""
    if not rows:
        return
    cols: list[list[Any]] = [[], [], [], [], [], [], [], []]
    for k, a, act, tid, dep, b, af, why in rows:
        for col, v in zip(cols, (k, a, act, tid, dep, _json(b), _json(af), why)):
            col.append(v)
    # One INSERT over arrays: a push audits every mutation, and per-row statements would dominate it.
    await conn.execute(
        "INSERT INTO audit_log (actor_kind, actor, action, ticket_id, department_id, before, after, reason)"
        " SELECT k, a, act, tid, dep, b::jsonb, af::jsonb, why FROM unnest($1::text[], $2::text[], $3::text[],"
        " $4::uuid[], $5::smallint[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY"
        " AS v(k, a, act, tid, dep, b, af, why, ord) ORDER BY ord",
        *cols,
    )


def _json(value: Any) -> str | None:
    """jsonb parameters travel as text; None stays SQL NULL."""
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


# Columns a caller may set through `update_tickets`; names come from this fixed set, never from input.
UPDATABLE = frozenset({
    "status", "priority", "crew_id", "due_at", "service_date", "resolution_code", "reason_code", "duplicate_of",
    "description", "field_meta",
})


async def update_tickets(conn: asyncpg.Connection, ids: Sequence[UUID], values: dict[str, Any]) -> None:
    """Set the same values on locked tickets and bump version; PostgreSQL recomputes the holding crew (I3, a generated column)."""
    unknown = set(values) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    cols = sorted(values)
    sets = [f"{c} = ${i + 2}" + ("::jsonb" if c == "field_meta" else "") for i, c in enumerate(cols)]
    sql = "UPDATE tickets SET " + ", ".join([*sets, "version = version + 1", "updated_at = now()"]) + " WHERE id = ANY($1::uuid[])"
    params = [_json(values[c]) if c == "field_meta" else values[c] for c in cols]
    await conn.execute(sql, list(ids), *params)


async def backfill_docs(conn: asyncpg.Connection, page: int = 500) -> tuple[int, int]:
    """Store rendered documents on rows written before documents were stored: (tickets, change rows) filled.

    Idempotent (only NULL columns are filled). Tickets are rendered from their rows (load_tickets); change rows
    from their own jsonb document, so each keeps the exact state it logged (and its doc_hash stays true).
    """
    tickets = changes = 0
    while True:
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM tickets WHERE doc_json IS NULL ORDER BY id LIMIT $1", page)]
        if not ids:
            break
        recs = await load_tickets(conn, ids)
        outs = [render(recs[i].doc) for i in ids]
        await conn.execute(
            "UPDATE tickets t SET doc_json = v.doc, doc_mp = v.mp FROM unnest($1::uuid[], $2::text[], $3::bytea[])"
            " AS v(id, doc, mp) WHERE t.id = v.id", ids, [o.json for o in outs], [o.mp for o in outs])
        tickets += len(ids)
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT id, doc::text AS doc FROM changes WHERE id > $1 AND doc_json IS NULL ORDER BY id LIMIT $2", after, page)
        if not rows:
            break
        after = rows[-1]["id"]
        outs = [render(_floats(json.loads(r["doc"]))) for r in rows]
        await conn.execute(
            "UPDATE changes c SET doc_json = v.doc, doc_mp = v.mp FROM unnest($1::bigint[], $2::text[], $3::bytea[])"
            " AS v(id, doc, mp) WHERE c.id = v.id", [r["id"] for r in rows], [o.json for o in outs], [o.mp for o in outs])
        changes += len(rows)
    return tickets, changes

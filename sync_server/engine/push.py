"""Exactly-once push (I1, I5, I6): one transaction per request (or per batch of concurrent devices' requests,
engine/push_batch), mutations folded in seq order, results stored with the effects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import orjson

from protocol import ErrorCode, MutationResult, MutationStatus, ProtocolError, ReasonCode, TicketStatus
from protocol.canonical import op_note_id
from protocol.fields import format_datetime
from sync_server.auth import Principal
from sync_server.domain.catalog import CODE_FIELDS, code_refusal
from sync_server.domain.conflicts import Conflict, DeviceCtx, Outcome, Where, WorkTicket, apply, op_note, rejected
from sync_server.domain.document import NewNote, RenderedDoc, created_doc, photo_entry
from sync_server.domain.states import holder
from sync_server.domain.ticket import TicketRecord
from sync_server.engine.changes import change_entries
from sync_server.engine.intake import NewTicket
from sync_server.engine.push_parse import Parsed, parse_batch
from sync_server.engine.push_results import (conflict_info, holding, last_carries_ticket, replayed_result, result_dict,
                                             wire_result)
from sync_server.engine.tx import run_in_tx
from sync_server.engine.wakeups import LiveWakeups
from sync_server.storage import push_sql as store
from sync_server.storage.org import CodeCache
from sync_server.storage.tickets import ChangeColumns, load_tickets, notify_after_commit, stored_records

if TYPE_CHECKING:
    from sync_server.engine.push_batch import PushBatcher


@dataclass
class _Batch:
    """Accumulated writes of one push, flushed in sets at the end."""

    work: dict[UUID, WorkTicket] = field(default_factory=dict)
    records: dict[UUID, TicketRecord] = field(default_factory=dict)
    before: dict[UUID, TicketRecord | None] = field(default_factory=dict)
    created: list[NewTicket] = field(default_factory=list)
    notes: list[tuple[Any, ...]] = field(default_factory=list)
    photos: list[tuple[Any, ...]] = field(default_factory=list)
    conflicts: list[tuple[int, UUID, Conflict]] = field(default_factory=list)
    audits: list[tuple[Any, ...]] = field(default_factory=list)
    outcomes: list[tuple[Parsed, Outcome]] = field(default_factory=list)
    types: store.ServiceTypes = field(default_factory=lambda: store.ServiceTypes({}, None))
    possessed: dict[str, bool] = field(default_factory=dict)  # per attached photo: the crew has its bytes
    held: set[UUID] = field(default_factory=set)  # tickets whose holding row for this crew exists (read under the lock)
    bases: dict[UUID, TicketRecord] = field(default_factory=dict)  # self-reported tickets as inserted, before the fold
    crew_name: str = ""  # the pushing crew's, and the transaction's time in wire form: what the fold's changes show
    stamp: str = ""


async def push(pool: asyncpg.Pool, who: Principal, raw: list[dict[str, Any]], codes: CodeCache | None = None,
               wakeups: LiveWakeups | None = None, batcher: PushBatcher | None = None) -> dict[str, Any]:
    """Apply a device's batch exactly once; a replayed seq gets its stored result, a gap is refused whole.

    Returns the PushResponse as a JSON-mode dict: ticket documents come pre-rendered from storage, and building
    models only to serialise them again would dominate the cost of a push. `wakeups`: the process's coalesced
    live-feed NOTIFY sender (without one, the push notifies on its own connection after COMMIT). `batcher`: the
    process's push batcher, which may run this push in one transaction with other devices' concurrent pushes.
    """
    parsed = parse_batch(raw)
    assert who.device_id is not None and who.crew_id is not None and who.department_id is not None
    dev = DeviceCtx(who.device_id, who.crew_id, who.department_id)
    if batcher is not None:
        return await batcher.push(pool, dev, parsed, codes, wakeups)
    return await push_one(pool, dev, parsed, codes, wakeups)


async def push_one(pool: asyncpg.Pool, dev: DeviceCtx, parsed: list[Parsed], codes: CodeCache | None = None,
                   wakeups: LiveWakeups | None = None) -> dict[str, Any]:
    """One device's push in its own transaction."""
    wake: list[_Wake] = []

    async def body(conn: asyncpg.Connection) -> dict[str, Any]:
        wake.clear()  # a retried body starts over
        return await _push_tx(conn, dev, parsed, wake, codes)

    async def after_commit(conn: asyncpg.Connection, _result: dict[str, Any]) -> None:
        for w in wake:  # outside the transaction: pushes do not queue behind NOTIFY's commit lock
            if wakeups is not None:
                wakeups.wake(w.xid, w.departments, w.crews)
            else:
                await notify_after_commit(conn, w.xid, w.departments, w.crews)

    return await run_in_tx(pool, body, after_commit=after_commit, retry_if=_note_id_race)


def _note_id_race(exc: asyncpg.PostgresError) -> bool:
    """Two pushes (of different crews) used one client-made note id at once: both read "unused" before either
    inserted. The retry reads the winner's note and answers this push `already_exists` (I6), never a 500."""
    return isinstance(exc, asyncpg.UniqueViolationError) and getattr(exc, "constraint_name", None) == "ticket_notes_pkey"


@dataclass(frozen=True)
class _Wake:
    """Who a committed push concerns: the live feed's wake-up, sent after commit."""

    xid: int
    departments: set[int]
    crews: set[int]


@dataclass
class _Plan:
    """One device's push decided under its locks: the answer, what to write (None: nothing new) and who to wake."""

    response: dict[str, Any]
    write: store.PushWrite | None
    wake: list[_Wake]


def _ask(dev: DeviceCtx, parsed: list[Parsed]) -> store.PushAsk:
    """What a push locks and reads; the locks and reads cover the whole request, replays included (a replay is rare,
    and its extra locks harmless)."""
    models = [p.model for p in parsed if p.model is not None]
    return store.PushAsk(dev.device_id, dev.crew_id, [m.ticket_id for m in models],
                         [m.args.sha256 for m in models if m.op == "attach_photo"],
                         [m.args.note_id for m in models if m.op == "add_note"])


async def _push_tx(conn: asyncpg.Connection, dev: DeviceCtx, parsed: list[Parsed],
                   wake: list[_Wake] | None = None, codes: CodeCache | None = None) -> dict[str, Any]:
    """The push transaction's body; who to wake after commit is appended to `wake` (None: nobody is woken)."""
    # one round trip: device row, photo locks, ticket rows (that order), stored documents and note-id owners
    (start,) = await store.begin_pushes(conn, [_ask(dev, parsed)])
    plan = await _plan(conn, dev, parsed, start, codes or CodeCache())
    if plan.write is not None:
        await store.apply_pushes(conn, [plan.write])
    if wake is not None:
        wake.extend(plan.wake)
    return plan.response


async def push_many(pool: asyncpg.Pool, members: list[tuple[DeviceCtx, list[Parsed]]], codes: CodeCache | None = None,
                    wakeups: LiveWakeups | None = None) -> list[dict[str, Any] | ProtocolError]:
    """Several devices' pushes in ONE transaction: one lock-and-read statement, each device's fold over its part of
    the shared read, one write statement for all (engine/push_batch). Each answer is what the push alone would have
    got: the members name distinct devices, tickets, photos and note ids, so no member reads what another writes.
    A member refused as a whole (revoked, seq_gap, seq_reused) gets its error and writes nothing; the others commit.
    Any other error fails the whole transaction (the caller then runs each member alone)."""
    cache = codes or CodeCache()

    async def body(conn: asyncpg.Connection) -> list[_Plan | ProtocolError]:
        starts = await store.begin_pushes(conn, [_ask(dev, parsed) for dev, parsed in members])
        outs: list[_Plan | ProtocolError] = []
        for (dev, parsed), start in zip(members, starts, strict=True):
            try:
                outs.append(await _plan(conn, dev, parsed, start, cache))
            except ProtocolError as exc:  # decided before any write of this member
                outs.append(exc)
        writes = [o.write for o in outs if isinstance(o, _Plan) and o.write is not None]
        if writes:
            await store.apply_pushes(conn, writes)
        return outs

    async def after_commit(conn: asyncpg.Connection, outs: list[_Plan | ProtocolError]) -> None:
        for w in (w for o in outs if isinstance(o, _Plan) for w in o.wake):
            if wakeups is not None:
                wakeups.wake(w.xid, w.departments, w.crews)
            else:
                await notify_after_commit(conn, w.xid, w.departments, w.crews)

    outs = await run_in_tx(pool, body, after_commit=after_commit, retry_if=_note_id_race)
    return [o.response if isinstance(o, _Plan) else o for o in outs]


async def _plan(conn: asyncpg.Connection, dev: DeviceCtx, parsed: list[Parsed], start: store.PushStart,
                codes: CodeCache) -> _Plan:
    """Everything of one push but its write statement, under the locks `start` holds: the checks that refuse the
    whole request, the fold, the answers and the rows to write."""
    wake: list[_Wake] = []
    row = start.device
    if row is None or row["revoked_at"] is not None:
        raise ProtocolError(ErrorCode.TOKEN_REVOKED, "this device has been revoked")
    last_seq = int(row["last_seq"])
    replay = [p for p in parsed if p.seq <= last_seq]
    fresh = [p for p in parsed if p.seq > last_seq]
    if fresh and fresh[0].seq != last_seq + 1:
        raise ProtocolError(ErrorCode.SEQ_GAP, f"expected seq {last_seq + 1}, got {fresh[0].seq}",
                            {"expected_seq": last_seq + 1, "last_seq": last_seq})
    version = int(row["xid"]) if fresh else 0
    stored = await store.stored_results(conn, dev.device_id, [p.seq for p in replay])
    for p in replay:  # before any effect: a reused seq refuses the whole request, so nothing in it is applied
        kept = stored.get(p.seq)
        if kept is not None and kept.digest is not None and kept.digest != p.digest:
            raise ProtocolError(ErrorCode.SEQ_REUSED, f"seq {p.seq} was already applied with a different body",
                                {"seq": p.seq, "stored_digest": kept.digest.hex()})
    batch = await _fold(conn, dev, fresh, codes, start)
    # Every push renders its documents in Python from the fold (an attached photo's state from the crew's possession,
    # read under the photo locks; a self-reported ticket's office fields from its mutation) and writes everything,
    # results and last_seq included, in one statement (the caller's).
    if fresh:
        batch.possessed = await _possessed(conn, batch, dev)
    after = _next_records(batch) if fresh else {}
    depts = {r.department_id for r in after.values()} | {dev.department_id for _ in batch.conflicts}
    if depts:
        crews = {c for r in (*after.values(), *(b for b in batch.before.values() if b is not None))
                 if (c := r.holder_crew_id) is not None}
        wake.append(_Wake(version, depts, crews))
    legacy_ids = [UUID(tid) for r in stored.values() if r.digest is None and (tid := r.result.get("ticket_id"))]
    current = await load_tickets(conn, [i for i in legacy_ids if i not in after]) if legacy_ids else {}
    current.update(after)
    results: list[dict[str, Any]] = []
    for p in replay:
        kept = stored.get(p.seq)
        if kept is None:  # applied long ago and its result pruned: still never applied twice
            results.append(wire_result(MutationResult(
                seq=p.seq, status=MutationStatus.DUPLICATE, reason=ReasonCode.ALREADY_EXISTS,
                message="applied earlier; its stored result has expired", server_version=0, replayed=True), None))
        elif kept.digest is None:  # stored before digests existed: answered as it always was
            results.append(wire_result(*replayed_result(kept.result, current, dev)))
        else:  # the first answer, byte for byte, marked as a replay
            results.append({**kept.result, "replayed": True})
    fresh_results = [_result(p, o, current, batch, dev, version) for p, o in batch.outcomes]
    fresh_results = last_carries_ticket(fresh_results)
    results.extend(fresh_results)
    write = None
    if fresh:
        last_seq = fresh[-1].seq
        kept_results = [store.StoredResult(p.seq, p.op, p.ticket_id, r["status"], r["reason"], r, version, p.digest)
                        for r, (p, _) in zip(fresh_results, batch.outcomes)]
        write = _write(dev, batch, after, last_seq, kept_results)
    response = {
        "results": results,
        "server_version": version or max((int(r["server_version"]) for r in results), default=0),
        "last_seq": last_seq,
    }
    return _Plan(response, write, wake)


async def _fold(conn: asyncpg.Connection, dev: DeviceCtx, fresh: list[Parsed], cache: CodeCache,
                start: store.PushStart) -> _Batch:
    """Fold mutations in seq order in memory over the tickets `begin_pushes` locked.

    Lock order, everywhere: device row, then photo advisory locks (sorted hashes), then ticket rows (id order).
    Photo verification (engine.uploads.mark_blob_verified) takes a photo lock and then the rows of the tickets
    showing it, so a push holds its photo locks before its first ticket row lock or the two deadlock (begin_pushes).
    Locking the hash of an attach that the fold later rejects costs nothing but a short wait.
    """
    batch = _Batch()
    records, held_by = await stored_records(conn, start.tickets)  # ever held: ticket_holders, kept by retention
    batch.records, batch.held = records, held_by
    assert start.device is not None  # the caller refused an unknown device
    batch.crew_name, batch.stamp = start.device["crew_name"], format_datetime(start.device["now"])
    for tid, rec in records.items():
        batch.work[tid] = rec.known_id(tid).work({dev.crew_id} if tid in held_by else set())
    if any(p.model is not None and p.model.op == "self_report" for p in fresh):
        batch.types = await store.department_service_types(conn, dev.department_id)
    # Note ids are client-made and global: one already used on another ticket must be refused, not dropped by the
    # insert's ON CONFLICT (an "applied" with no effect would break I5).
    codes = await _codes(conn, fresh, records, cache)
    note_owner = dict(start.note_owner)
    for p in fresh:
        if p.error is not None:
            batch.outcomes.append((p, p.error))
            continue
        m = p.model
        if m.op == "self_report":
            out = _self_report(batch, m, dev, codes, op_note_id(dev.device_id, p.seq))
            if out.status is MutationStatus.APPLIED:
                _collect(batch, p, out, batch.work[m.ticket_id], dev)
            batch.outcomes.append((p, out))
            continue
        if m.op == "add_note" and note_owner.get(m.args.note_id, m.ticket_id) != m.ticket_id:
            batch.outcomes.append((p, rejected(ReasonCode.ALREADY_EXISTS, "note id already used on another ticket")))
            continue
        t = batch.work.get(m.ticket_id)
        if t is None:
            batch.outcomes.append((p, rejected(ReasonCode.NOT_IN_SCOPE, "ticket is not in your crew's scope")))
            continue
        bad = code_refusal(m.op, m.args, codes.get(_service_type(batch, m.ticket_id))) if m.op in CODE_FIELDS else None
        if bad is not None and t.where(dev) is not Where.FOREIGN:  # a foreign ticket answers not_in_scope (I3)
            batch.outcomes.append((p, rejected(ReasonCode.INVALID_ARGS, bad)))
            continue
        trial = t.copy()
        # the derived note id only for ops carrying a note: a uuid5 per mutation would cost more than the op
        note_id = op_note_id(dev.device_id, p.seq) if op_note(m.args) else None
        out = apply(trial, m.op, m.args, dev, base_version=m.base_version, device_time=m.device_time, note_id=note_id)
        if out.status is not MutationStatus.REJECTED:
            if out.new_note is not None:
                note_owner[out.new_note[0]] = m.ticket_id
            batch.work[m.ticket_id] = trial
            if m.ticket_id not in batch.before:  # a ticket self-reported earlier in this batch has before=None
                batch.before[m.ticket_id] = records[m.ticket_id]
            _collect(batch, p, out, trial, dev)
        batch.outcomes.append((p, out))
    return batch


async def _codes(conn: asyncpg.Connection, fresh: list[Parsed], records: dict[UUID, TicketRecord],
                 cache: CodeCache) -> dict[str, Any]:
    """Allowed codes of the service types this batch's code-carrying ops touch (from the app's cache; none without
    such ops)."""
    if not any(p.model is not None and p.model.op in CODE_FIELDS for p in fresh):
        return {}
    names = {r.doc["service_type"] for r in records.values()}
    names |= {p.model.args.service_type for p in fresh if p.model is not None and p.model.op == "self_report"}
    return await cache.get(conn, sorted(names))


def _service_type(batch: _Batch, ticket_id: UUID) -> str | None:
    """The service type of a locked ticket, or of one self-reported earlier in this batch."""
    rec = batch.records.get(ticket_id)
    if rec is not None:
        return str(rec.doc["service_type"])
    return next((n.service_type for n in batch.created if n.id == ticket_id), None)


def _self_report(batch: _Batch, m: Any, dev: DeviceCtx, codes: dict[str, Any], note_id: UUID) -> Outcome:
    """Create-and-close proactive work; the client-made id makes a retried create a duplicate, never a second ticket."""
    existing = batch.work.get(m.ticket_id)
    if existing is not None or any(n.id == m.ticket_id for n in batch.created):
        if existing is None or existing.created_by_device == dev.device_id:
            return Outcome(MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS, "self-report already recorded")
        return rejected(ReasonCode.ALREADY_EXISTS, "ticket id already in use")
    a = m.args
    if a.service_type not in batch.types.by_key:  # checked here: a failing INSERT would poison the whole batch (I6)
        return rejected(ReasonCode.INVALID_ARGS, f"service type {a.service_type!r} is not one of your department's")
    bad = code_refusal(m.op, a, codes.get(a.service_type))
    if bad is not None:
        return rejected(ReasonCode.INVALID_ARGS, bad)
    new = NewTicket(
        id=m.ticket_id, service_type=a.service_type, address=a.address, lat=a.lat, lon=a.lon, zip=a.zip,
        description=a.description, source="self_report", requested_at=m.device_time, crew_id=dev.crew_id,
        status=TicketStatus.COMPLETED, created_by_device=dev.device_id,
    )
    batch.created.append(new)
    base = batch.bases[new.id] = _created(batch, new, dev)
    wt = base.work({dev.crew_id})  # the fold's state of the new ticket, from its value like any other ticket's
    wt.resolution_code, wt.items, wt.touched = a.resolution_code, {i.item_type: i.count for i in a.items}, True
    batch.work[m.ticket_id] = wt
    batch.before[m.ticket_id] = None
    out = Outcome(MutationStatus.APPLIED, audit_action="self_report")
    if a.note:  # deterministic id (device, seq): a replay cannot add a second note
        wt.note_ids.add(note_id)
        out.new_note = (note_id, a.note)
    return out


def _collect(batch: _Batch, p: Parsed, out: Outcome, t: WorkTicket, dev: DeviceCtx) -> None:
    m = p.model
    if out.new_note is not None:
        batch.notes.append((out.new_note[0], t.id, out.new_note[1], dev.device_id, m.device_time))
    if out.new_photo is not None:
        ph = out.new_photo
        batch.photos.append((t.id, ph["sha256"], ph["kind"], ph["taken_at"], ph["lat"], ph["lon"], dev.device_id))
    for c in out.conflicts:
        batch.conflicts.append((p.seq, t.id, c))
    if out.audit_action is not None:
        batch.audits.append(("device", dev.device_id, out.audit_action, t.id, t.department_id, None,
                             # the args as JSON text in place (orjson.Fragment): the row's jsonb reads the same value
                             {"seq": p.seq, "op": m.op, "args": orjson.Fragment(m.args.model_dump_json()),
                              "status": out.status._value_},
                             out.reason._value_ if out.reason else None))


async def _possessed(conn: asyncpg.Connection, batch: _Batch, dev: DeviceCtx) -> dict[str, bool]:
    """Whether the crew possesses each photo the push attaches (it delivered the bytes, or a ticket it holds once the
    fold is applied shows the photo available): fs_photo_possessed's rule, with the holders this push leaves."""
    if not batch.photos:
        return {}
    facts = await store.photo_possession(conn, dev.crew_id, [ph[1] for ph in batch.photos], list(batch.records))

    def held(tid: UUID) -> bool:  # a ticket outside the push was found because the crew holds it
        w = batch.work.get(tid)
        return w is None or holder(w.status, w.crew_id) == dev.crew_id

    return {sha: f.proven or any(held(t) for t in f.shown) for sha, f in facts.items()}


def _created(batch: _Batch, n: NewTicket, dev: DeviceCtx) -> TicketRecord:
    """A self-reported ticket as its row is inserted, before the fold's state is laid over it."""
    status = n.status or (TicketStatus.ASSIGNED if n.crew_id is not None else TicketStatus.UNASSIGNED)
    doc = created_doc(id=str(n.id), service_type=batch.types.by_key[n.service_type][1],
                      department=batch.types.department, status=status.value, address=n.address, zip=n.zip,
                      lat=n.lat, lon=n.lon, description=n.description, source=n.source,
                      requested_at=format_datetime(n.requested_at),
                      crew=batch.crew_name if n.crew_id is not None else None, created_by_device=n.created_by_device,
                      updated_at=batch.stamp)
    return TicketRecord(doc=doc, department_id=dev.department_id, crew_id=n.crew_id,
                        holder_crew_id=holder(status, n.crew_id)).known_id(n.id)


def _next_records(batch: _Batch) -> dict[UUID, TicketRecord]:
    """Each touched ticket as the fold left it, its value advanced from the locked one (or, for a self-reported
    ticket, from its mutation's): no re-read."""
    notes: dict[UUID, list[NewNote]] = {}
    for nid, tid, text, author, device_time in batch.notes:
        notes.setdefault(tid, []).append(NewNote(str(nid), text, author, format_datetime(device_time) if device_time
                                                 else None, batch.stamp))
    photos: dict[UUID, list[dict[str, Any]]] = {}
    for tid, sha, kind, taken_at, lat, lon, _ in batch.photos:
        photos.setdefault(tid, []).append(photo_entry(sha, kind, format_datetime(taken_at), lat, lon, batch.possessed[sha]))
    out: dict[UUID, TicketRecord] = {}
    for tid, t in batch.work.items():
        rec = batch.records.get(tid) or batch.bases.get(tid)
        if not t.touched or rec is None or tid not in batch.before:
            continue
        out[tid] = rec.advanced(t, crew_name=batch.crew_name, updated_at=batch.stamp, notes=notes.get(tid, []),
                                photos=photos.get(tid))
    return out


def _write(dev: DeviceCtx, batch: _Batch, after: dict[UUID, TicketRecord], last_seq: int,
           results: list[store.StoredResult]) -> store.PushWrite:
    """The push's rows for the one write statement: ticket state with its stored document, self-reported tickets,
    notes, items, photos, change rows, audit, conflicts, results and last_seq (I1, I2, I5, I9)."""
    before = {tid: batch.before[tid] for tid in after}
    entries, _ = change_entries(before, after, actor_kind="device", actor=dev.device_id, action="push", audit_rows=False)
    items: list[store.ItemRow] = []
    for tid, rec in after.items():
        old = before[tid]
        had = {i["item_type"]: i["count"] for i in old.doc["items"]} if old is not None else {}
        items.extend(store.ItemRow(tid, k, v) for k, v in batch.work[tid].items.items() if had.get(k) != v)
    return store.PushWrite(
        dev.device_id, last_seq,
        [store.TicketWrite(tid, r.doc["status"], r.crew_id, r.doc["resolution_code"], r.doc["reason_code"],
                           orjson.dumps(r.field_meta).decode(), r.doc["version"], r.holder_crew_id)
         for tid, r in after.items()],
        ChangeColumns.of(entries), [store.NoteRow(*n) for n in batch.notes], items, batch.audits, results,
        [store.ConflictRow(tid, after[tid].department_id if tid in after else dev.department_id, dev.crew_id, seq,
                           c.kind, c.field, json.dumps(c.kept), json.dumps(c.discarded), c.detail)
         for seq, tid, c in batch.conflicts],
        [store.PhotoRow(tid, sha, kind, taken_at, lat, lon, batch.possessed[sha])
         for tid, sha, kind, taken_at, lat, lon, _ in batch.photos],
        [store.CreatedRow(n.id, batch.types.by_key[n.service_type][0], n.address, n.zip, n.lat, n.lon, n.description,
                          n.source, n.requested_at) for n in batch.created],
        {(tid, dev.crew_id) for tid in batch.held},
    )


def _result(p: Parsed, o: Outcome, current: dict[UUID, TicketRecord], batch: _Batch, dev: DeviceCtx,
            version: int) -> dict[str, Any]:
    """Tell the device exactly what happened, with the ticket as it now stands if the crew still holds it.

    Built as the JSON-mode dict `MutationResult.model_dump(mode="json")` gives, key for key and in its order (the wire
    bytes and stored results must not change; tests/test_push_results.py compares the two): building and dumping a
    model per mutation cost more than the rest of the result.
    """
    tid = p.ticket_id
    rec = (current.get(tid) or batch.records.get(tid)) if tid is not None else None
    doc, removed = holding(rec, batch.work.get(tid) if tid is not None else None, dev)
    if doc is not None and tid in current:  # a ticket this push changed: rendered once for its rows and its answers
        rendered = current[tid].rendered
        if rendered.exact:
            doc = RenderedDoc(doc, rendered)
    return result_dict(p.seq, o.status, o.reason, o.message, doc, removed, [conflict_info(c) for c in o.conflicts], version)

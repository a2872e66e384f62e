"""Gap-free, snapshot-consistent pull (I2, I3, I4, I7): every page of one pull is cut at one snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final
from uuid import UUID

import asyncpg
import msgpack

from protocol import PROTOCOL_VERSION, CursorSigner, CursorState, PullRequest, ScopeChecksum, format_datetime
from sync_server.auth import Principal
from sync_server.engine.pull_batch import FirstPages
from sync_server.storage import pull_sql as store
from sync_server.storage.pull_sql import DeltaAsk, Frame

# Cursors older than this fraction of the retention window get a fresh snapshot: pruning keeps history for the
# whole window, so the margin only guards against clock skew between the pruner and this process.
_EXPIRY_MARGIN = 0.95


# An upsert is the whole current ticket as its stored document (msgpack bytes or canonical JSON text), never decoded
# here; a plain value, not an object per ticket (a snapshot page holds hundreds).
Upsert = bytes | str


@dataclass(frozen=True, slots=True)
class Removal:
    """The ticket left the crew's scope, and why."""

    ticket_id: str
    reason: str


# How the answer wraps each upsert's stored document, per encoding (True: msgpack): prefix, suffix, and the separator
# between changes. A snapshot's first page comes from PostgreSQL already framed so and joined (storage.first_snapshot).
UPSERT_MP: Final[tuple[bytes, bytes, bytes]] = (
    b"\x82" + msgpack.packb("kind") + msgpack.packb("upsert") + msgpack.packb("ticket"), b"", b"")
UPSERT_JSON: Final[tuple[str, str, str]] = ('{"kind":"upsert","ticket":', "}", ",")
UPSERT_FRAME: Final[dict[bool, Frame]] = {True: UPSERT_MP, False: UPSERT_JSON}


@dataclass(frozen=True, slots=True)
class Framed:
    """`count` upserts already in the answer's wire form (UPSERT_FRAME), joined: copied into the answer as they are."""

    count: int
    body: bytes | str


@dataclass(frozen=True, slots=True)
class PullPage:
    """One PullResponse (protocol/models.py) with the documents still in their stored form: api/splice.py writes it."""

    changes: list[Upsert | Removal]  # in ticket id order
    cursor: str
    has_more: bool
    reset: bool
    scope_checksum: str
    watermark: int
    server_time: str
    framed: Framed | None = None  # upserts that follow `changes` (a snapshot's first page, whose `changes` is empty)


def scope_of(who: Principal) -> str:
    """The cursor's scope identity: a cursor minted for one crew is refused for every other."""
    return f"crew:{who.crew_id}"


def _xmin(snapshot: str) -> int:
    """Watermark from a pg_snapshot text: every xid below xmin has committed or aborted, and is in the snapshot."""
    return int(snapshot.split(":", 1)[0])


async def pull(pool: asyncpg.Pool, who: Principal, req: PullRequest, signer: CursorSigner, retention_s: float,
               packed: bool, batch: FirstPages) -> PullPage:
    """One page of the crew's changes; documents are read in the form the answer is written in (packed: msgpack)."""
    assert who.crew_id is not None
    scope = scope_of(who)
    state = signer.decode(req.cursor, scope=scope) if req.cursor else None
    now = int(time.time())
    rows: list[Any]
    if state is not None and state.head is not None:  # a later page of a page set: same snapshot, no checksum work
        base = None if state.reset else state.snapshot
        head, checksum, reset = state.head, state.checksum or "", state.reset
        async with pool.acquire() as conn:
            rows = await store.change_page(conn, who.crew_id, base, head, UUID(state.after) if state.after else None,
                                           req.limit + 1, packed)
    else:
        expired = state is None or now - state.issued_at > retention_s * _EXPIRY_MARGIN
        base = None if expired else state.snapshot  # type: ignore[union-attr]
        reset = expired
        known = None if base is None or state is None else state.checksum
        # One statement at one snapshot either way, no transaction round trips. A snapshot reads the crew's current
        # ticket rows; a delta reads the log since base, and an empty poll neither scans history nor re-sums the
        # checksum (the previous page set's checksum rides in the cursor, signed).
        if base is None:
            return await _first_snapshot(pool, who.crew_id, req.limit, signer, scope, now, packed)
        # with the other deltas and polls waiting at this moment, in one statement (engine/pull_batch.py)
        first = await batch.read(pool, DeltaAsk(who.crew_id, base, req.limit + 1, known is None), packed)
        head, rows = first.head, first.rows
        checksum = ScopeChecksum.of(first.hashes).hexdigest() if first.hashes is not None else str(known)
    has_more = len(rows) > req.limit
    rows = rows[: req.limit]
    changes: list[Upsert | Removal] = []
    for r in rows:
        if r["holder_crew_id"] == who.crew_id:
            changes.append(r["doc"])
        elif not reset:  # a fresh snapshot has nothing to remove from
            changes.append(Removal(str(r["ticket_id"]), r["removal_reason"] or "unassigned"))
    if has_more:
        nxt = CursorState(PROTOCOL_VERSION, scope, base or head, state.issued_at if state and state.head else now,
                          head=head, after=str(rows[-1]["ticket_id"]), checksum=checksum, reset=reset)
    else:  # the checksum rides along, so the next poll with nothing new answers without re-summing it
        nxt = CursorState(PROTOCOL_VERSION, scope, head, now, checksum=checksum)
    return PullPage(changes, signer.encode(nxt), has_more, reset, checksum, _xmin(head),
                    format_datetime(datetime.now(timezone.utc)))


async def _first_snapshot(pool: asyncpg.Pool, crew_id: int, limit: int, signer: CursorSigner, scope: str, now: int,
                          packed: bool) -> PullPage:
    """A fresh snapshot's first page: every document arrives from PostgreSQL framed and joined (one value), and the
    scope checksum sums every held ticket's hash, the page's and the later pages' alike (I4)."""
    async with pool.acquire() as conn:
        snap = await store.first_snapshot(conn, crew_id, limit, UPSERT_FRAME[packed], packed)
    scope_sum = ScopeChecksum.of_joined(snap.hashes)
    checksum = scope_sum.hexdigest()
    has_more = scope_sum.count > snap.count  # the crew holds more tickets than this page carries
    if has_more:  # later pages read the scope at this head, after the last ticket sent (change_page)
        nxt = CursorState(PROTOCOL_VERSION, scope, snap.head, now, head=snap.head, after=str(snap.last),
                          checksum=checksum, reset=True)
    else:
        nxt = CursorState(PROTOCOL_VERSION, scope, snap.head, now, checksum=checksum)
    return PullPage([], signer.encode(nxt), has_more, True, checksum, _xmin(snap.head),
                    format_datetime(datetime.now(timezone.utc)), Framed(snap.count, snap.page))

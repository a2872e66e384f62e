"""Gap-free, snapshot-consistent pull (I2, I3, I4, I7): every page of one pull is cut from the change log at one snapshot."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import asyncpg

from protocol import PROTOCOL_VERSION, CursorSigner, CursorState, PullRequest, ScopeChecksum, format_datetime
from sync_server.auth import Principal
from sync_server.storage import sync as store

# Cursors older than this fraction of the retention window get a fresh snapshot: pruning keeps history for the
# whole window, so the margin only guards against clock skew between the pruner and this process.
_EXPIRY_MARGIN = 0.95


def scope_of(who: Principal) -> str:
    """The cursor's scope identity: a cursor minted for one crew is refused for every other."""
    return f"crew:{who.crew_id}"


def _xmin(snapshot: str) -> int:
    """Watermark from a pg_snapshot text: every xid below xmin has committed or aborted, and is in the snapshot."""
    return int(snapshot.split(":", 1)[0])


async def pull(pool: asyncpg.Pool, who: Principal, req: PullRequest, signer: CursorSigner, retention_s: float) -> dict[str, Any]:
    """One page of the crew's changes; the response is a plain dict because documents come pre-rendered from the log."""
    assert who.crew_id is not None
    scope = scope_of(who)
    state = signer.decode(req.cursor, scope=scope) if req.cursor else None
    now = int(time.time())
    if state is not None and state.head is not None:
        base = None if state.reset else state.snapshot
        head, checksum, reset = state.head, state.checksum or "", state.reset
        async with pool.acquire() as conn:
            rows = await store.change_page(conn, who.crew_id, base, head, UUID(state.after) if state.after else None, req.limit + 1)
    else:
        expired = state is None or now - state.issued_at > retention_s * _EXPIRY_MARGIN
        base = None if expired else state.snapshot  # type: ignore[union-attr]
        reset = expired
        known = None if base is None or state is None else state.checksum
        async with pool.acquire() as conn:
            if base is None:  # a whole snapshot: three reads in one repeatable-read transaction (measured cheaper than
                # the one-statement form below for 200-ticket scopes: ops/bench/bench_hotpath.py initial pull)
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    head = await store.current_snapshot(conn)  # first statement: this is the transaction's snapshot
                    hashes: list[bytes] | None = await store.scope_hashes(conn, who.crew_id)
                    rows = await store.change_page(conn, who.crew_id, None, head, None, req.limit + 1)
            else:  # one statement, one snapshot, no transaction round trips; an empty poll neither scans history
                # nor re-sums the checksum (the previous page set's checksum rides in the cursor, signed)
                first = await store.first_page(conn, who.crew_id, base, req.limit + 1, need_hashes=known is None)
                head, hashes, rows = first.head, first.hashes, first.rows
        checksum = ScopeChecksum.of(hashes).hexdigest() if hashes is not None else str(known)
    has_more = len(rows) > req.limit
    rows = rows[: req.limit]
    changes: list[dict[str, Any]] = []
    for r in rows:
        if r["holder_crew_id"] == who.crew_id:
            changes.append({"kind": "upsert", "ticket": json.loads(r["doc"])})
        elif not reset:  # a fresh snapshot has nothing to remove from
            changes.append({"kind": "remove", "ticket_id": str(r["ticket_id"]), "reason": r["removal_reason"] or "unassigned"})
    if has_more:
        nxt = CursorState(PROTOCOL_VERSION, scope, base or head, state.issued_at if state and state.head else now,
                          head=head, after=str(rows[-1]["ticket_id"]), checksum=checksum, reset=reset)
    else:  # the checksum rides along, so the next poll with nothing new answers without re-summing it
        nxt = CursorState(PROTOCOL_VERSION, scope, head, now, checksum=checksum)
    return {
        "changes": changes,
        "cursor": signer.encode(nxt),
        "has_more": has_more,
        "reset": reset,
        "scope_checksum": checksum,
        "watermark": _xmin(head),
        "server_time": format_datetime(datetime.now(timezone.utc)),
    }


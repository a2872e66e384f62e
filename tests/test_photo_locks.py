"""Lock order between push and photo verification: photo locks first, then ticket rows, in both, so they never deadlock.

The race is forced, not hoped for: the test holds the photo's advisory lock while verification and then a push that
attaches the same photo queue behind it, and releases it once both wait. The two transaction bodies run on their own
connections without the retry helper, so a deadlock PostgreSQL breaks surfaces here instead of being retried away.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import asyncpg

from sync_server.domain.conflicts import DeviceCtx
from sync_server.engine.push import _push_tx
from sync_server.engine.push_parse import parse_batch
from sync_server.engine.uploads import mark_blob_verified
from sync_server.storage.uploads import PHOTO_LOCK_CLASS
from tests.factories import World, make_tickets
from tests.test_uploads_support import noise_jpeg, sha

ROUNDS = 3


def _attach(seq: int, ticket_id: object, digest: str, kind: str) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat()
    return {"seq": seq, "op": "attach_photo", "ticket_id": str(ticket_id), "args": {"sha256": digest, "kind": kind,
            "taken_at": now}, "base_version": None, "device_time": now}


async def _waiting_on_advisory(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))


async def _wait_for_waiters(pool: asyncpg.Pool, n: int) -> None:
    for _ in range(500):
        if await _waiting_on_advisory(pool) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} transactions never queued on the photo lock")


async def test_upload_completion_during_push_attaching_same_photo(pool: asyncpg.Pool, world: World) -> None:
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    d = world.device("san-1")
    dev = DeviceCtx(d.device_id, d.crew_id, world.departments["sanitation"])
    seq = 0
    for i in range(ROUNDS):  # bounded: each round forces the interleaving once
        data = noise_jpeg(seed=500 + i)
        digest = sha(data)
        seq += 1
        async with pool.acquire() as conn, conn.transaction():  # the ticket already shows the photo as pending
            await _push_tx(conn, dev, parse_batch([_attach(seq, t.ticket.id, digest, "before")]))
        gate = await pool.acquire()
        tx = gate.transaction()
        await tx.start()
        await gate.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", PHOTO_LOCK_CLASS, digest)

        async def verify() -> bool:
            async with pool.acquire() as conn, conn.transaction():
                return await mark_blob_verified(conn, digest, len(data), "image/jpeg", 64, 48, d.device_id, d.crew_id)

        async def push(n: int) -> dict[str, Any]:
            async with pool.acquire() as conn, conn.transaction():
                return await _push_tx(conn, dev, parse_batch([_attach(n, t.ticket.id, digest, "after")]))

        try:
            verifying = asyncio.create_task(verify())
            await _wait_for_waiters(pool, 1)
            seq += 1
            pushing = asyncio.create_task(push(seq))
            await _wait_for_waiters(pool, 2)
        finally:
            await tx.commit()
            await pool.release(gate)
        # A deadlock would raise asyncpg.DeadlockDetectedError from one of the two here.
        inserted, result = await asyncio.wait_for(asyncio.gather(verifying, pushing), 30)
        assert inserted is True
        assert [r["status"] for r in result["results"]] == ["applied"]
        async with pool.acquire() as conn:
            doc = json.loads(await conn.fetchval("SELECT doc_json FROM changes WHERE ticket_id = $1 ORDER BY id DESC"
                                                 " LIMIT 1", t.ticket.id))
            blobs = await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", digest)
        assert blobs == 1
        mine = sorted((p["kind"], p["state"]) for p in doc["photos"] if p["sha256"] == digest)
        assert mine == [("after", "available"), ("before", "available")]  # each attach once, both visible

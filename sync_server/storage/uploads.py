"""SQL for upload sessions, blobs and photo scope checks; every function runs on the connection it is given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

PHOTO_LOCK_CLASS = 0x46535048  # 'FSPH': advisory locks keyed by a photo hash (see lock_photo)
_DEVICE_UPLOAD_LOCK_CLASS = 0x46535550  # 'FSUP': serialises one device's session creation (concurrency limit)


async def lock_photo(conn: asyncpg.Connection, sha256: str) -> None:
    """Serialise "bytes became available" with "photo attached to a ticket" for one hash until commit.

    Without it an attach committing concurrently with verification could read the blob as missing while the
    verifier reads the attach as missing, and the ticket would show the photo pending forever.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", PHOTO_LOCK_CLASS, sha256)


async def open_creation(conn: asyncpg.Connection, ticket_id: UUID, crew_id: int, device_id: str, sha256: str) -> bool:
    """Whether the device may upload this photo for this ticket, taking the device's creation lock and then the photo's
    lock (in that order) in the same round trip; the reads that need the locks come in the next statement, whose
    snapshot is taken after them (READ COMMITTED).

    A device uploads to tickets its crew holds, to tickets it reported itself, and the bytes of a photo its crew
    already attached to the ticket: a late field report's photo (kept after the ticket left the crew, I5) must still
    arrive, or it would stay pending forever. The device lock keeps two simultaneous creations by one device from both
    slipping under the session limit; the photo lock keeps a blob collection (engine.blob_gc) from deleting the hash
    while this session, which protects it, is not yet committed. A refused check leaves the locks to the rollback.
    """
    row = await conn.fetchrow(
        "SELECT (EXISTS (SELECT 1 FROM tickets WHERE id = $1 AND (holder_crew_id = $2 OR created_by_device = $3))"
        " OR EXISTS (SELECT 1 FROM ticket_photos p WHERE p.ticket_id = $1 AND p.sha256 = $4"
        " AND p.added_by IN (SELECT id FROM devices WHERE crew_id = $2))) AS may,"
        " pg_advisory_xact_lock($5, hashtext($3)) AS device_lock, pg_advisory_xact_lock($6, hashtext($4)) AS photo_lock",
        ticket_id, crew_id, device_id, sha256, _DEVICE_UPLOAD_LOCK_CLASS, PHOTO_LOCK_CLASS,
    )
    return bool(row is not None and row["may"])


async def creation_state(conn: asyncpg.Connection, device_id: str, sha256: str, length: int,
                         crew_id: int) -> asyncpg.Record:
    """What a creation decides on, in one round trip: `known` (a verified blob of this size that the crew possesses:
    the session starts complete), `open_sessions` (the device's unfinished, unexpired sessions) and the device's newest
    such session for these exact bytes (id, upload_offset, length, state, expires_at, metadata; NULL when none)."""
    row = await conn.fetchrow(
        "SELECT COALESCE(b.size = $3 AND fs_photo_possessed($2, $4), false) AS known,"
        " (SELECT count(*) FROM upload_sessions WHERE device_id = $1 AND state = 'open' AND expires_at > now())"
        " AS open_sessions, s.id, s.upload_offset, s.length, s.state, s.expires_at, s.metadata"
        " FROM (SELECT 1) AS one LEFT JOIN blobs b ON b.sha256 = $2"
        " LEFT JOIN LATERAL (SELECT * FROM upload_sessions WHERE device_id = $1 AND sha256 = $2 AND length = $3"
        " AND state = 'open' AND expires_at > now() ORDER BY created_at DESC LIMIT 1) s ON true",
        device_id, sha256, length, crew_id,
    )
    assert row is not None  # one row always (FROM a one-row relation)
    return row


async def get_blob(conn: asyncpg.Connection, sha256: str) -> asyncpg.Record | None:
    """The verified blob row, or None while the bytes are missing or unverified."""
    return await conn.fetchrow(
        "SELECT sha256, size, media_type, width, height, verified_at FROM blobs WHERE sha256 = $1", sha256
    )


async def insert_session(
    conn: asyncpg.Connection, *, id: str, device_id: str, sha256: str, ticket_id: UUID, kind: str,
    taken_at: datetime, lat: float | None, lon: float | None, filename: str | None, length: int, complete: bool,
    metadata: str, expiry_seconds: int,
) -> asyncpg.Record:
    """Create a session; a hash the server already has starts complete (offset = length)."""
    return await conn.fetchrow(
        "INSERT INTO upload_sessions (id, device_id, sha256, ticket_id, kind, taken_at, lat, lon, filename, length,"
        " upload_offset, state, metadata, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::bigint, CASE WHEN $11 THEN $10::bigint ELSE 0 END,"
        " CASE WHEN $11 THEN 'complete' ELSE 'open' END, $12, now() + make_interval(secs => $13)) RETURNING *",
        id, device_id, sha256, ticket_id, kind, taken_at, lat, lon, filename, length, complete, metadata,
        float(expiry_seconds),
    )


async def get_session(conn: asyncpg.Connection, upload_id: str) -> asyncpg.Record | None:
    """A session with a flag telling whether it has expired (the database clock decides, for every process alike),
    and the size of the stored blob of its hash, if any (NULL while no device delivered it): one round trip."""
    return await conn.fetchrow(
        "SELECT s.*, (s.state = 'open' AND s.expires_at <= now() AND (s.lease_until IS NULL OR s.lease_until < now()))"
        " AS due, b.size AS blob_size FROM upload_sessions s LEFT JOIN blobs b ON b.sha256 = s.sha256 WHERE s.id = $1",
        upload_id,
    )


async def claim_session(
    conn: asyncpg.Connection, upload_id: str, device_id: str, offset: int, token: str, lease_seconds: float
) -> asyncpg.Record | None:
    """Mark the session as written by this request if it is open and at the client's offset.

    The caller holds the upload's advisory write lease (engine.upload_leases), which is what excludes a second
    writer; a token left by a request whose process died is simply replaced.
    """
    return await conn.fetchrow(
        "UPDATE upload_sessions SET lease_token = $4, lease_until = now() + make_interval(secs => $5), updated_at = now()"
        " WHERE id = $1 AND device_id = $2 AND state = 'open' AND expires_at > now() AND upload_offset = $3"
        " RETURNING *",
        upload_id, device_id, offset, token, lease_seconds,
    )


async def renew_lease(conn: asyncpg.Connection, upload_id: str, token: str, lease_seconds: float) -> bool:
    """Extend a long PATCH's lease; False means it was lost (terminated or expired) and the writer must stop."""
    row = await conn.fetchval(
        "UPDATE upload_sessions SET lease_until = now() + make_interval(secs => $3)"
        " WHERE id = $1 AND lease_token = $2 AND state = 'open' RETURNING 1",
        upload_id, token, lease_seconds,
    )
    return row is not None


async def release_session(
    conn: asyncpg.Connection, upload_id: str, token: str, offset: int, expiry_seconds: int
) -> asyncpg.Record | None:
    """Acknowledge bytes (already fsynced) and drop the lease; the idle-expiry clock restarts. Returns the session as
    it now stands (what the PATCH answers), None when the lease was lost (terminated or taken over)."""
    return await conn.fetchrow(
        "UPDATE upload_sessions SET upload_offset = $3, lease_token = NULL, lease_until = NULL, updated_at = now(),"
        " expires_at = now() + make_interval(secs => $4) WHERE id = $1 AND lease_token = $2 RETURNING *",
        upload_id, token, offset, float(expiry_seconds),
    )


async def complete_session(conn: asyncpg.Connection, upload_id: str, token: str | None) -> bool:
    """Mark done (offset = length); with a token only the lease holder may."""
    row = await conn.fetchval(
        "UPDATE upload_sessions SET state = 'complete', upload_offset = length, lease_token = NULL, lease_until = NULL,"
        " updated_at = now() WHERE id = $1 AND state = 'open' AND ($2::text IS NULL OR lease_token = $2) RETURNING 1",
        upload_id, token,
    )
    return row is not None


async def delete_session(conn: asyncpg.Connection, upload_id: str) -> None:
    """Forget a session (termination or a failed verification)."""
    await conn.execute("DELETE FROM upload_sessions WHERE id = $1", upload_id)


async def expire_session(conn: asyncpg.Connection, upload_id: str) -> None:
    """Mark one overdue session expired, so later requests get 410 rather than 404."""
    await conn.execute(
        "UPDATE upload_sessions SET state = 'expired', lease_token = NULL, lease_until = NULL"
        " WHERE id = $1 AND state = 'open' AND expires_at <= now()",
        upload_id,
    )


async def expire_due(conn: asyncpg.Connection, limit: int) -> list[str]:
    """Expire a batch of idle sessions not being written right now; returns their ids for partial-file cleanup."""
    rows = await conn.fetch(
        "UPDATE upload_sessions SET state = 'expired', lease_token = NULL, lease_until = NULL WHERE id IN ("
        " SELECT id FROM upload_sessions WHERE state = 'open' AND expires_at <= now()"
        " AND (lease_until IS NULL OR lease_until < now()) ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " RETURNING id",
        limit,
    )
    return [r["id"] for r in rows]


async def purge_finished(conn: asyncpg.Connection, keep_seconds: float) -> int:
    """Drop rows of finished or expired sessions once no client can reasonably still ask about them."""
    status = await conn.execute(
        "DELETE FROM upload_sessions WHERE state <> 'open' AND expires_at < now() - make_interval(secs => $1)",
        keep_seconds,
    )
    return int(status.split()[-1])


async def insert_blob(
    conn: asyncpg.Connection, sha256: str, size: int, media_type: str, width: int | None, height: int | None,
    uploaded_by: str | None = None,
) -> bool:
    """Record a verified blob; False when it was already there (content addressing: stored once)."""
    row = await conn.fetchval(
        "INSERT INTO blobs (sha256, size, media_type, width, height, uploaded_by) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (sha256) DO NOTHING RETURNING 1",
        sha256, size, media_type, width, height, uploaded_by,
    )
    return row is not None


async def photo_possessed(conn: asyncpg.Connection, sha256: str, crew_id: int) -> bool:
    """Whether the crew proved it has these bytes (delivered them, or holds a ticket showing them): the one rule
    (SQL fs_photo_possessed) that lets a hash stand in for the bytes."""
    return bool(await conn.fetchval("SELECT fs_photo_possessed($1, $2)", sha256, crew_id))


async def record_possession(conn: asyncpg.Connection, sha256: str, crew_id: int) -> None:
    """A device of the crew delivered bytes that hashed to sha256."""
    await conn.execute(
        "INSERT INTO photo_possession (sha256, crew_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", sha256, crew_id
    )


async def tickets_to_verify(conn: asyncpg.Connection, sha256: str, crew_id: int) -> list[UUID]:
    """Tickets whose still-pending reference to a hash the crew's delivery proves: its own attaches, and tickets it
    holds. In id order (the lock order)."""
    return [r["ticket_id"] for r in await conn.fetch(
        "SELECT DISTINCT p.ticket_id FROM ticket_photos p JOIN tickets t ON t.id = p.ticket_id"
        " WHERE p.sha256 = $1 AND NOT p.verified"
        " AND (t.holder_crew_id = $2 OR p.added_by IN (SELECT id FROM devices WHERE crew_id = $2))"
        " ORDER BY p.ticket_id",
        sha256, crew_id,
    )]


async def verify_photos(conn: asyncpg.Connection, sha256: str, ticket_ids: Sequence[UUID]) -> None:
    """Show a hash as available on these tickets."""
    await conn.execute(
        "UPDATE ticket_photos SET verified = true WHERE sha256 = $1 AND ticket_id = ANY($2::uuid[]) AND NOT verified",
        sha256, list(ticket_ids),
    )


async def photo_visible_to_crew(conn: asyncpg.Connection, sha256: str, crew_id: int) -> bool:
    """A crew sees photos of tickets it holds, where the photo is verified (an attach by hash alone shows nothing)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ticket_photos p JOIN tickets t ON t.id = p.ticket_id"
        " WHERE p.sha256 = $1 AND p.verified AND t.holder_crew_id = $2)",
        sha256, crew_id,
    ))


async def photo_visible_to_department(conn: asyncpg.Connection, sha256: str, department_id: int) -> bool:
    """A supervisor sees verified photos of its department's tickets."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ticket_photos p JOIN tickets t ON t.id = p.ticket_id"
        " WHERE p.sha256 = $1 AND p.verified AND t.department_id = $2)",
        sha256, department_id,
    ))


async def ticket_department(conn: asyncpg.Connection, ticket_id: UUID) -> int | None:
    """Department of a ticket, or None when it does not exist."""
    return await conn.fetchval("SELECT department_id FROM tickets WHERE id = $1", ticket_id)


async def ticket_photo_rows(conn: asyncpg.Connection, ticket_id: UUID) -> Sequence[asyncpg.Record]:
    """A ticket's photos with their blob details (NULL while pending, including an attach not yet proven)."""
    return await conn.fetch(
        "SELECT p.sha256, p.kind, p.taken_at, p.lat, p.lon, p.added_by, p.created_at,"
        " b.size, b.media_type, b.width, b.height, b.verified_at"
        " FROM ticket_photos p LEFT JOIN blobs b ON b.sha256 = p.sha256 AND p.verified WHERE p.ticket_id = $1"
        " ORDER BY p.created_at, p.sha256, p.kind",
        ticket_id,
    )

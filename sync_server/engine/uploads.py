"""Resumable, content-addressed photo uploads (I8): sessions, leased PATCH streaming, verification, visibility.

A photo becomes visible only through `mark_blob_verified`, after its bytes were hashed, sniffed, decode-checked
and published to the blob store; ticket sync never waits for any of this.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import asyncpg
import structlog

from protocol import ErrorCode, ProtocolError, UploadMetadata
from sync_server import images
from sync_server.auth import Principal
from sync_server.blobs import BlobStore, BlobStoreUnavailable, Variant, blob_key
from sync_server.engine.changes import commit_changes
from sync_server.engine.tx import run_in_tx
from sync_server.engine import upload_parts as parts
from sync_server.engine.upload_leases import LeaseHolder
from sync_server.settings import Settings
from sync_server.storage import uploads as sql
from sync_server.storage.tickets import load_tickets, lock_tickets, update_tickets

log = structlog.get_logger(__name__)

LEASE_SECONDS = 60.0  # row lease: keeps the expiry sweep off an upload being written (exclusion is LeaseHolder's)
BUSY_RETRY_AFTER = 5  # seconds a client waits when another request is writing its upload (usually its own lost one)
RENEW_EVERY = 15.0
MAX_PATCH_SECONDS = 600.0  # even a trickling client gives its request back after this; it resumes with a new PATCH
RETRY_AFTER_SECONDS = 30
MIN_PHOTO_BYTES = 16
lock_photo = sql.lock_photo  # re-exported: an attach takes it (before any ticket row lock) to insert ticket_photos


class _PartialLost(Exception):
    """The partial file holds fewer bytes than the database acknowledged."""

    def __init__(self, size: int) -> None:
        super().__init__(f"partial file has {size} bytes")
        self.size = size


class BodyInterrupted(Exception):
    """The request body stopped (client gone, stalled, or too slow); bytes already written may be kept."""


@dataclass(frozen=True)
class Uploads:
    """What the upload use cases need, built once per app."""

    pool: asyncpg.Pool
    settings: Settings
    store: BlobStore
    partial_dir: Path
    leases: LeaseHolder  # write leases that die with this process (engine.upload_leases)
    # Hashing and decoding are CPU-bound: a pool sized to the cores bounds their native memory and keeps them from
    # queueing ahead of the small partial-file writes on the default executor.
    cpu: Executor | None = None
    inflight: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # derivative jobs in this process

    def partial(self, upload_id: str) -> Path:
        """Partial bytes of one session; ids are server-made tokens, so the name is safe."""
        return self.partial_dir / f"{upload_id}.part"


@dataclass(frozen=True)
class SessionView:
    """What tus responses report about a session."""

    id: str
    offset: int
    length: int
    complete: bool
    expires_at: object
    metadata: str | None


def _view(row: asyncpg.Record) -> SessionView:
    return SessionView(row["id"], row["upload_offset"], row["length"], row["state"] == "complete", row["expires_at"],
                       row["metadata"])


async def mark_blob_verified(
    conn: asyncpg.Connection, sha256: str, size: int, media_type: str, width: int | None, height: int | None,
    uploaded_by: str, crew_id: int,
) -> bool:
    """Record that `crew_id` delivered verified bytes and flip the tickets this proves to `available` via the change log.

    A blob is stored once, but possession is per crew: another crew's attach of the same hash stays pending until
    that crew delivers the bytes too. Returns False when the blob was already stored. Runs in the caller's transaction.
    Lock order (the same in push): the photo's advisory lock first, then the ticket rows in id order.
    """
    await sql.lock_photo(conn, sha256)
    inserted = await sql.insert_blob(conn, sha256, size, media_type, width, height, uploaded_by)
    await sql.record_possession(conn, sha256, crew_id)
    ids = await sql.tickets_to_verify(conn, sha256, crew_id)
    if ids:
        await lock_tickets(conn, ids)
        before = await load_tickets(conn, ids)
        await sql.verify_photos(conn, sha256, ids)
        # An empty update only bumps version/updated_at: the photo's state is rendered from ticket_photos.verified,
        # and the bump puts the flip into the change log that devices pull.
        await update_tickets(conn, ids, {})
        await commit_changes(conn, {t: before[t] for t in ids}, actor_kind="system", actor="uploads",
                             action="photo_available")
    return inserted


async def create_upload(up: Uploads, who: Principal, meta: UploadMetadata, length: int, raw_metadata: str) -> SessionView:
    """tus creation: authorise, enforce limits, and complete at once when the crew already possesses the hash.

    Knowing a hash is not possession: for another crew's photo the device must send the bytes (I3).
    """
    device_id, crew_id = who.device_id, who.crew_id
    if device_id is None or crew_id is None:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only enrolled devices upload photos")
    limit = up.settings.max_photo_bytes
    if length > limit:
        raise ProtocolError(ErrorCode.UPLOAD_TOO_LARGE, f"photo exceeds {limit} bytes", {"limit": limit})
    if length < MIN_PHOTO_BYTES:  # would otherwise be "complete" at creation without ever being checked
        raise ProtocolError(ErrorCode.UNSUPPORTED_IMAGE, "too small to be a photo")
    upload_id = secrets.token_urlsafe(24)

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        # Three statements (checks and locks; what the decision reads; the insert): each is a round trip that holds
        # a pool connection while the event loop is busy elsewhere at the fleet's knee.
        if not await sql.open_creation(conn, meta.ticket_id, crew_id, device_id, meta.sha256):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket")
        state = await sql.creation_state(conn, device_id, meta.sha256, length, crew_id)
        known = bool(state["known"])
        if not known and state["id"] is not None:
            # A creation whose answer was lost is retried blind: hand back the session already open for these exact
            # bytes (the client resumes from its offset) instead of opening another that counts against the limit.
            return state
        if not known and state["open_sessions"] >= up.settings.max_uploads_per_device:
            raise ProtocolError(ErrorCode.TOO_MANY_UPLOADS, "too many unfinished uploads for this device",
                                {"retry_after": RETRY_AFTER_SECONDS, "limit": up.settings.max_uploads_per_device})
        return await sql.insert_session(
            conn, id=upload_id, device_id=device_id, sha256=meta.sha256, ticket_id=meta.ticket_id,
            kind=meta.kind.value, taken_at=meta.taken_at, lat=meta.lat, lon=meta.lon, filename=meta.filename,
            length=length, complete=known, metadata=raw_metadata, expiry_seconds=up.settings.upload_expiry_seconds,
        )

    row = await run_in_tx(up.pool, body)
    log.info("upload.created", upload=upload_id, sha256=meta.sha256, length=length, deduplicated=row["state"] == "complete")
    return _view(row)


async def _lookup(conn: asyncpg.Connection, who: Principal, upload_id: str) -> tuple[asyncpg.Record, bool, bool]:
    """The caller's session as (row, forget its partial bytes, expired): expired on access when overdue, completed when
    its crew came to possess the hash meanwhile (another device of the crew delivered it)."""
    row = await sql.get_session(conn, upload_id)
    if row is None or row["device_id"] != who.device_id:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such upload")
    if row["due"]:
        await sql.expire_session(conn, upload_id)
        return row, True, True
    if row["state"] == "expired":
        return row, False, True
    if (row["state"] == "open" and row["lease_token"] is None and row["blob_size"] == row["length"]
            and who.crew_id is not None and await sql.photo_possessed(conn, row["sha256"], who.crew_id)
            and await sql.complete_session(conn, upload_id, None)):
        again = await sql.get_session(conn, upload_id)
        assert again is not None
        return again, True, False
    return row, False, False


async def _settle_lookup(up: Uploads, upload_id: str, forget: bool, expired: bool) -> None:
    """After the connection is back in the pool (file and store I/O never hold one): drop what the lookup ended."""
    if forget:
        await forget_partial(up, upload_id)
    if expired:
        raise ProtocolError(ErrorCode.UPLOAD_EXPIRED, "upload expired; start a new one")


async def find_upload(up: Uploads, who: Principal, upload_id: str) -> SessionView:
    """The caller's session (see _lookup: expired or completed on access)."""
    async with up.pool.acquire() as conn:
        row, forget, expired = await _lookup(conn, who, upload_id)
    await _settle_lookup(up, upload_id, forget, expired)
    return _view(row)


def _complete_answer(view: SessionView, offset: int) -> SessionView:
    """Content addressing: the bytes are already here (this or another device's upload). Core-tus clients (tuspy,
    TUSKit) ignore Upload-Offset on creation and PATCH from 0, so any in-range offset is answered "complete" and the
    body is dropped unread: the client stops after one chunk instead of failing on a 409."""
    if offset > view.length:
        raise ProtocolError(ErrorCode.UPLOAD_OFFSET_MISMATCH, "upload is already complete", {"offset": view.length})
    return view


async def terminate_upload(up: Uploads, who: Principal, upload_id: str) -> None:
    """tus termination: forget the session and its partial bytes (an in-flight PATCH loses its lease and stops)."""
    async with up.pool.acquire() as conn:
        row = await sql.get_session(conn, upload_id)
        if row is None or row["device_id"] != who.device_id:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such upload")
        await sql.delete_session(conn, upload_id)
    await forget_partial(up, upload_id)


async def patch_upload(
    up: Uploads, who: Principal, upload_id: str, offset: int, read: Callable[[], Awaitable[bytes]],
    checksum: tuple[str, bytes] | None,
) -> SessionView:
    """Append one request body at `offset` under a lease; verify and publish when the last byte arrives.

    The database offset only ever covers fsynced bytes; the file is cut back to it before writing, so a crash
    or a rejected chunk (checksum, overflow) never leaves unacknowledged bytes in the photo. The lease comes first, so
    that looking the session up and claiming it share one pool connection (two pool waits per PATCH, not three).
    """
    if not await up.leases.acquire(upload_id):
        view = await find_upload(up, who, upload_id)  # not the caller's, expired, complete or moved: say so first
        if view.complete:
            return _complete_answer(view, offset)
        if offset != view.offset:
            raise ProtocolError(ErrorCode.UPLOAD_OFFSET_MISMATCH, "Upload-Offset differs from the server's",
                                {"offset": view.offset})
        raise ProtocolError(ErrorCode.UPLOAD_BUSY, "another request is writing this upload; retry after Retry-After",
                            {"offset": view.offset, "retry_after": BUSY_RETRY_AFTER})
    try:
        return await _patch_leased(up, who, upload_id, offset, read, checksum)
    finally:
        await asyncio.shield(up.leases.release(upload_id))


async def _patch_leased(
    up: Uploads, who: Principal, upload_id: str, offset: int, read: Callable[[], Awaitable[bytes]],
    checksum: tuple[str, bytes] | None,
) -> SessionView:
    """The PATCH body of patch_upload, run while this process holds the upload's write lease."""
    token = secrets.token_hex(12)
    claimed = None
    async with up.pool.acquire() as conn:
        row, forget, expired = await _lookup(conn, who, upload_id)
        if not expired and row["state"] == "open" and row["upload_offset"] == offset:
            claimed = await sql.claim_session(conn, upload_id, who.device_id or "", offset, token, LEASE_SECONDS)
    await _settle_lookup(up, upload_id, forget, expired)
    view = _view(row)
    if view.complete:
        return _complete_answer(view, offset)
    if claimed is None:  # not at the client's offset (or another request finished it meanwhile): resume from ours
        raise ProtocolError(ErrorCode.UPLOAD_OFFSET_MISMATCH, "Upload-Offset differs from the server's; HEAD and resume",
                            {"offset": view.offset})
    length = claimed["length"]
    loop = asyncio.get_running_loop()
    f = await _open_partial(up, upload_id, token, offset)
    written = 0
    keep_partial_progress = checksum is None  # a chunk with a checksum is all-or-nothing (tus checksum extension)
    released = False
    try:
        try:
            written = await _stream(up, f, read, checksum, length - offset, upload_id, token)
        except BodyInterrupted as exc:
            kept = written_so_far(f, offset) if keep_partial_progress else 0
            if offset + kept >= length and up.leases.holds(upload_id):
                # Every byte arrived; only the end of the request was lost (the client hung up or timed out between
                # our last read and the end of the body). Verify and publish now: acknowledging offset == length on
                # an open session would tell a HEAD "done" while the photo stays pending forever.
                written = kept
                log.info("upload.interrupted_after_last_byte", upload=upload_id, why=str(exc))
            else:
                acked = await _acknowledge(up, f, upload_id, token, offset, offset + kept)
                kept = (acked["upload_offset"] if acked is not None else offset) - offset
                released = True
                log.info("upload.interrupted", upload=upload_id, kept=kept, why=str(exc))
                raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "request body interrupted; HEAD the upload and "
                                    "resume", {"retry_after": 1, "offset": offset + kept}) from None
        except ProtocolError:
            await loop.run_in_executor(None, _settle, f, offset)
            await _release(up, upload_id, token, offset)
            released = True
            raise
        if offset + written < length:
            acked = await _acknowledge(up, f, upload_id, token, offset, offset + written)
            released = True
            if acked is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "upload was terminated")
            if acked["upload_offset"] < offset + written:
                raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "photo store unavailable; HEAD the upload and "
                                    "resume", {"retry_after": 2, "offset": offset})
            await loop.run_in_executor(None, f.close)
            return _view(acked)  # the acknowledging UPDATE returned the session: no second read
        await loop.run_in_executor(None, _settle, f, offset + written)
        await loop.run_in_executor(None, f.close)
        released = True  # from here the session either completes or is deleted
        return await _finish(up, who, upload_id, token, claimed)
    finally:
        if not f.closed:
            await loop.run_in_executor(None, f.close)
        if not released:
            # Cancelled mid-stream: keep nothing unacknowledged, and give the lease back even while cancelled.
            await asyncio.shield(_release(up, upload_id, token, offset))


async def _stream(
    up: Uploads, f: BinaryIO, read: Callable[[], Awaitable[bytes]], checksum: tuple[str, bytes] | None, room: int,
    upload_id: str, token: str,
) -> int:
    """Copy the body to the file chunk by chunk, each write in the executor; returns bytes written.

    Every chunk is written as soon as it is read (aiohttp hands over everything buffered, so chunks grow when
    the disk is the bottleneck): what arrived before a disconnect is on disk and can be acknowledged.
    """
    loop = asyncio.get_running_loop()
    hasher = hashlib.new(checksum[0]) if checksum is not None else None
    written = 0
    started = renewed = time.monotonic()
    while True:
        chunk = await read()
        if not chunk:
            break
        if written + len(chunk) > room:
            raise ProtocolError(ErrorCode.UPLOAD_TOO_LARGE, "body runs past Upload-Length", {"length_left": room})
        written += await loop.run_in_executor(None, _write, f, chunk, hasher)
        now = time.monotonic()
        if now - renewed > RENEW_EVERY:
            if not up.leases.holds(upload_id):  # our lease connection died: another request may be writing now
                raise BodyInterrupted("write lease lost")
            async with up.pool.acquire() as conn:
                if not await sql.renew_lease(conn, upload_id, token, LEASE_SECONDS):
                    raise ProtocolError(ErrorCode.NOT_FOUND, "upload was terminated or expired")
            renewed = now
        if now - started > MAX_PATCH_SECONDS:
            raise BodyInterrupted("request took too long")
    if checksum is not None and hasher is not None and hasher.digest() != checksum[1]:
        raise ProtocolError(ErrorCode.CHECKSUM_MISMATCH, "Upload-Checksum does not match the chunk")
    return written


async def _open_partial(up: Uploads, upload_id: str, token: str, offset: int) -> BinaryIO:
    """The partial file positioned at `offset`; with shared partials a short local copy is rebuilt from the store.

    When the bytes cannot be found (a local-partials host that did not write them, or pieces lost from the store)
    the session is cut back to what exists and the client resumes from there rather than failing forever.
    """
    path = up.partial(upload_id)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _open_at, path, offset)
    except _PartialLost as lost:
        have = lost.size
    if parts.shared(up.settings):
        try:
            have = await parts.restore(up.store, upload_id, path, offset)
        except (BlobStoreUnavailable, OSError) as exc:
            await _release(up, upload_id, token, offset)
            log.warning("upload.restore_failed", upload=upload_id, error=str(exc))
            raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "photo store unavailable, retry",
                                {"retry_after": 2, "offset": offset}) from None
        if have == offset:
            return await loop.run_in_executor(None, _open_at, path, offset)
    await _release(up, upload_id, token, have)
    raise ProtocolError(ErrorCode.UPLOAD_OFFSET_MISMATCH, "partial bytes are not on this server; resume from "
                        "Upload-Offset", {"offset": have})


async def _acknowledge(up: Uploads, f: BinaryIO, upload_id: str, token: str, offset: int,
                       new: int) -> asyncpg.Record | None:
    """Make bytes up to `new` durable (fsync; with shared partials, stored as a piece) and record the offset, releasing
    the lease; returns the session as recorded (its offset stays `offset` when the store refused the piece: nothing
    unshared is acknowledged), None when the session was terminated meanwhile."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _settle, f, new)
    if new > offset and parts.shared(up.settings):
        try:
            await parts.save_piece(up.store, up.partial(upload_id), upload_id, offset, new)
        except (BlobStoreUnavailable, OSError) as exc:
            log.warning("upload.piece_failed", upload=upload_id, error=str(exc))
            await loop.run_in_executor(None, _settle, f, offset)
            new = offset
    return await _release(up, upload_id, token, new)


def written_so_far(f: BinaryIO, offset: int) -> int:
    """Bytes this request appended (the file position after buffered writes)."""
    return f.tell() - offset


async def _finish(up: Uploads, who: Principal, upload_id: str, token: str, session: asyncpg.Record) -> SessionView:
    """Whole-file checks, publish to the store, then make visible in one transaction; any failure discards all."""
    path = up.partial(upload_id)
    sha = session["sha256"]
    try:
        actual = await images.sha256_file_async(path, up.cpu)
        if actual != sha:
            raise ProtocolError(ErrorCode.CHECKSUM_MISMATCH, "uploaded bytes do not hash to the declared sha256",
                                {"sha256": sha})
        info = await images.inspect_image_async(path, up.settings.max_photo_pixels, up.cpu)
    except ProtocolError as err:
        await _discard(up, upload_id)
        log.info("upload.rejected", upload=upload_id, code=err.code.value)
        raise
    await up.store.put_file(blob_key(Variant.ORIGINAL, sha), path, info.media_type, consume=True)

    async def body(conn: asyncpg.Connection) -> asyncpg.Record | None:
        assert who.device_id is not None and who.crew_id is not None  # only devices create sessions
        await mark_blob_verified(conn, sha, session["length"], info.media_type, info.width, info.height,
                                 who.device_id, who.crew_id)
        await sql.complete_session(conn, upload_id, token)
        return await sql.get_session(conn, upload_id)

    row = await run_in_tx(up.pool, body)
    await forget_partial(up, upload_id)
    log.info("upload.verified", upload=upload_id, sha256=sha, media_type=info.media_type, size=session["length"])
    if row is None:  # terminated while verifying: the blob is stored and visible all the same
        raise ProtocolError(ErrorCode.NOT_FOUND, "upload was terminated")
    return _view(row)


async def _discard(up: Uploads, upload_id: str) -> None:
    async with up.pool.acquire() as conn:
        await sql.delete_session(conn, upload_id)
    await forget_partial(up, upload_id)


async def _release(up: Uploads, upload_id: str, token: str, offset: int) -> asyncpg.Record | None:
    async with up.pool.acquire() as conn:
        return await sql.release_session(conn, upload_id, token, offset, up.settings.upload_expiry_seconds)


async def forget_partial(up: Uploads, upload_id: str) -> None:
    """Drop an upload's partial bytes: the local file, and its pieces in the store when partials are shared.

    A store failure only leaves garbage (the bucket's lifecycle rule on partials/ removes it), so it is logged.
    """
    await remove_file(up.partial(upload_id))
    if parts.shared(up.settings):
        try:
            await parts.forget(up.store, upload_id)
        except BlobStoreUnavailable as exc:
            log.warning("upload.pieces_not_deleted", upload=upload_id, error=str(exc))


async def remove_file(path: Path) -> None:
    """Unlink off the loop; a file already gone is fine."""
    await asyncio.get_running_loop().run_in_executor(None, lambda: path.unlink(missing_ok=True))


def _open_at(path: Path, offset: int) -> BinaryIO:
    """Open the partial file cut back to the acknowledged offset (drops bytes a crash or a bad chunk left)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+b", buffering=0)
    size = os.fstat(fd).st_size
    if size < offset:
        f.close()
        raise _PartialLost(size)
    f.truncate(offset)
    f.seek(offset)
    return f  # type: ignore[return-value]


def _write(f: BinaryIO, data: bytes, hasher: hashlib._Hash | None) -> int:
    f.write(data)
    if hasher is not None:
        hasher.update(data)
    return len(data)


def _settle(f: BinaryIO, size: int) -> None:
    """Cut the file to what will be acknowledged and fsync it before the offset is recorded."""
    f.truncate(size)
    f.seek(size)
    os.fsync(f.fileno())

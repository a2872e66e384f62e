"""Photo downloads: scope authorisation (I3), lazily generated derivatives cached in the store, the supervisor list.

Split from engine.uploads (which owns how bytes arrive): this side only ever reads verified blobs.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from protocol import ErrorCode, ProtocolError
from sync_server import images
from sync_server.auth import Principal, Role
from sync_server.blobs import Variant, blob_key, derivative_key
from sync_server.engine.uploads import Uploads, remove_file
from sync_server.storage import uploads as sql

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServedBlob:
    """A stored object a download may stream."""

    key: str
    media_type: str
    etag: str


async def photo_for_download(up: Uploads, who: Principal, sha256: str, variant: Variant) -> ServedBlob:
    """Authorise by scope (crew: held tickets; supervisor: department; admin: all) and name the object to serve.

    Out-of-scope and unknown hashes answer the same 404 (I3); originals are evidence and go only to supervisors.
    """
    async with up.pool.acquire() as conn:
        blob = await sql.get_blob(conn, sha256)
        if blob is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such photo")
        if who.role is Role.DEVICE:
            visible = who.crew_id is not None and await sql.photo_visible_to_crew(conn, sha256, who.crew_id)
        elif who.role is Role.SUPERVISOR:
            visible = who.department_id is not None and await sql.photo_visible_to_department(conn, sha256, who.department_id)
        else:
            visible = True
    if not visible:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such photo")
    if variant is Variant.ORIGINAL:
        if who.role is Role.DEVICE:
            raise ProtocolError(ErrorCode.FORBIDDEN, "originals are served to supervisors only")
        return ServedBlob(blob_key(variant, sha256), blob["media_type"], f'"{sha256}"')
    key = await ensure_derivative(up, sha256, variant, blob["media_type"])
    return ServedBlob(key, images.JPEG, f'"{sha256}.{variant.value}.{images.DERIVATIVE_VERSION}"')


async def ensure_derivative(up: Uploads, sha256: str, variant: Variant, media: str) -> str:
    """Generate a derivative once, off the loop, and cache it in the store; concurrent requests share one job."""
    key = derivative_key(variant, sha256, images.DERIVATIVE_VERSION)
    if await up.store.stat(key) is not None:
        return key
    job = up.inflight.get(key)
    if job is None:
        job = asyncio.ensure_future(_derive(up, sha256, variant, media, key))
        up.inflight[key] = job
        job.add_done_callback(lambda _: up.inflight.pop(key, None))
    await asyncio.shield(job)
    return key


async def _derive(up: Uploads, sha256: str, variant: Variant, media: str, key: str) -> None:
    original = blob_key(Variant.ORIGINAL, sha256)
    local = up.store.local_path(original)
    tmp: Path | None = None
    if local is None:
        tmp = up.partial_dir / f"derive-{secrets.token_hex(8)}"
        up.partial_dir.mkdir(parents=True, exist_ok=True)
        await up.store.fetch_to(original, tmp)
        local = tmp
    try:
        data = await images.make_derivative_async(local, variant.value, media, up.cpu)
    finally:
        if tmp is not None:
            await remove_file(tmp)
    await up.store.put_bytes(key, data, images.JPEG)
    log.info("photo.derivative", sha256=sha256, variant=variant.value, bytes=len(data))


async def ticket_photos(up: Uploads, who: Principal, ticket_id: object) -> list[asyncpg.Record]:
    """A ticket's photos for its department's supervisors (or an admin); other departments get 404."""
    async with up.pool.acquire() as conn:
        dept = await sql.ticket_department(conn, ticket_id)  # type: ignore[arg-type]
        if dept is None or (who.role is Role.SUPERVISOR and dept != who.department_id):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket")
        return list(await sql.ticket_photo_rows(conn, ticket_id))  # type: ignore[arg-type]

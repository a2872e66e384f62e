"""Unfinished tus uploads kept in the shared photo store (upload_partials=store), so any host resumes any upload.

Each PATCH's acknowledged byte range [start, end) is stored as one object `partials/<upload id>/<start>-<end>`
*before* the database offset moves past it, so the offset never covers bytes that exist only on one host's disk.
The host writing a PATCH keeps working on its local partial file (a cache); a host whose copy is shorter than the
acknowledged offset (the upload began elsewhere, or this host lost its disk) rebuilds it from the pieces first.
The whole photo is still hashed against its declared sha256 at completion, so a wrong piece can never be published.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

import structlog

from sync_server.blobs import BlobStore
from sync_server.settings import Settings

log = structlog.get_logger(__name__)

PREFIX = "partials/"
MEDIA_TYPE = "application/octet-stream"
_NAME = re.compile(r"^(\d{12})-(\d{12})$")


def shared(settings: Settings) -> bool:
    """Whether partial bytes must reach the shared store before they are acknowledged."""
    return settings.upload_partials == "store"


def piece_key(upload_id: str, start: int, end: int) -> str:
    """Named by range: a retry of the same range overwrites (same bytes from an honest client) instead of piling up."""
    return f"{PREFIX}{upload_id}/{start:012d}-{end:012d}"


async def save_piece(store: BlobStore, path: Path, upload_id: str, start: int, end: int) -> None:
    """Copy bytes [start, end) of the local partial file to the store; raises BlobStoreUnavailable when it cannot.

    One object per PATCH, read whole: a PATCH body is at most max_photo_bytes (25 MiB by default).
    """
    data = await asyncio.get_running_loop().run_in_executor(None, _read_range, path, start, end)
    await store.put_bytes(piece_key(upload_id, start, end), data, MEDIA_TYPE)


async def restore(store: BlobStore, upload_id: str, path: Path, offset: int) -> int:
    """Rebuild the local partial file from the stored pieces, up to `offset`; returns how many bytes it now holds.

    Fewer than `offset` means the pieces are gone (bucket emptied, lifecycle rule too short): the caller tells the
    client to resume from the shorter offset rather than failing forever.
    """
    pieces = _parse(upload_id, await store.list_keys(f"{PREFIX}{upload_id}/"))
    chain = _chain(pieces, offset)
    loop = asyncio.get_running_loop()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.restore")
    f = await loop.run_in_executor(None, open, tmp, "wb")
    have = 0
    try:
        for start, end in chain:
            async for chunk in store.read_range(piece_key(upload_id, start, end), 0, end - start):
                await loop.run_in_executor(None, f.write, chunk)
            have = end
        await loop.run_in_executor(None, _sync_close, f)
        await loop.run_in_executor(None, os.replace, tmp, path)  # a crash mid-restore never leaves a torn cache
    finally:
        if not f.closed:
            await loop.run_in_executor(None, f.close)
        await loop.run_in_executor(None, lambda: tmp.unlink(missing_ok=True))
    log.info("upload.partial_restored", upload=upload_id, pieces=len(chain), offset=have, wanted=offset)
    return have


async def forget(store: BlobStore, upload_id: str) -> None:
    """Delete an upload's pieces (completed, terminated, expired); a failure leaves garbage the bucket's lifecycle
    rule on `partials/` collects, never a wrong photo."""
    keys = await store.list_keys(f"{PREFIX}{upload_id}/")
    for key in keys:
        await store.delete(key)


def _parse(upload_id: str, keys: dict[str, int]) -> dict[int, list[int]]:
    """start -> ends of the pieces whose size matches their name (a piece of another size is not trusted)."""
    out: dict[int, list[int]] = {}
    base = f"{PREFIX}{upload_id}/"
    for key, size in keys.items():
        m = _NAME.match(key.removeprefix(base))
        if m is None:
            continue
        start, end = int(m.group(1)), int(m.group(2))
        if end > start and end - start == size:
            out.setdefault(start, []).append(end)
    return out


def _chain(pieces: dict[int, list[int]], offset: int) -> list[tuple[int, int]]:
    """Pieces laid end to end from 0 reaching `offset`, else the longest such run that stays within it.

    A search, not a walk: a piece whose acknowledgement was lost (its process died after the PUT) may start where a
    later, acknowledged piece also starts and end elsewhere. Each position is expanded once, so this is linear.
    """
    best: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack: list[tuple[int, list[tuple[int, int]]]] = [(0, [])]
    while stack:
        pos, path = stack.pop()
        if pos == offset:
            return path
        if pos in seen:
            continue
        seen.add(pos)
        if pos > (best[-1][1] if best else 0):
            best = path
        for end in sorted(pieces.get(pos, ())):  # longest pushed last, so tried first
            if end <= offset:
                stack.append((end, [*path, (pos, end)]))
    return best


def _read_range(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    if len(data) != end - start:
        raise OSError(f"partial file {path.name} ends before {end}")
    return data


def _sync_close(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()

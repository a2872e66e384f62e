"""Photos: seeded PNG bytes (a real image the server can inspect) and a resumable tus uploader (I8).

The uploader behaves like a phone's: photos wait in the gallery until there is signal; an upload that is
cut off mid-way resumes at the server's `Upload-Offset` (HEAD) instead of starting again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from protocol import ErrorCode

import asyncio
from collections.abc import Callable

from .metrics import Metrics
from .transport import RETRYABLE_TRANSPORT, Dropped, SimHttpError, Transport, backoff_delay

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = 1024  # small chunks, so a dropped PATCH leaves a partial upload to resume


@functools.lru_cache(maxsize=4096)  # a photo is re-read at every upload step
def png_bytes(seed: int, size: int = 24) -> bytes:
    """A valid RGB PNG whose pixels come from the seed: same seed, same bytes, same SHA-256.

    One randbytes call per row (not one getrandbits per byte): every photo tap builds a new one, and the per-byte
    generator was ~4 % of a 1,000-device simulator's CPU."""
    rng = random.Random(seed)
    raw = b"".join(b"\x00" + rng.randbytes(size * 3) for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def sha256_hex(data: bytes) -> str:
    """The photo's identity on the wire."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class PendingPhoto:
    """A photo in the device's gallery waiting to be uploaded; `url` and `offset` survive an app restart."""

    sha256: str
    ticket_id: str
    kind: str
    taken_at: str
    seed: int
    url: str | None = None
    offset: int = 0
    restarts: int = 0
    not_before: float = 0.0  # monotonic time before which the server asked us not to retry (Retry-After)

    def data(self) -> bytes:
        """The bytes, re-read from 'disk' (regenerated from the seed)."""
        return png_bytes(self.seed)

    def to_disk(self) -> dict[str, Any]:
        """What the phone persists about this upload."""
        return dict(self.__dict__)


def _metadata(p: PendingPhoto) -> str:
    pairs = {"sha256": p.sha256, "ticket_id": p.ticket_id, "kind": p.kind, "taken_at": p.taken_at,
             "filename": f"{p.sha256[:12]}.png"}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


class UploadRefused(Exception):
    """The server will not take this photo (e.g. the ticket left the crew before the upload started)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def upload_step(t: Transport, token: str, p: PendingPhoto, fault: str | None) -> bool:
    """Advance one upload by one request; True when the server holds every byte (state `available`).

    Raises Dropped/SimHttpError/http1.TransportError for the caller's retry policy, UploadRefused when retrying is futile.
    """
    data = p.data()
    had_url = p.url is not None
    try:
        if p.url is None:
            _, h, _ = await t.request("POST", "/v1/uploads", token=token, kind="upload", fault=fault,
                                      headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": _metadata(p),
                                               "Content-Type": "application/offset+octet-stream"}, ok=(201,))
            p.url, p.offset = h["Location"], int(h.get("Upload-Offset", "0"))
            return p.offset >= len(data)
        if p.offset < 0:  # offset unknown after a lost PATCH answer: ask the server where it stands
            _, h, _ = await t.request("HEAD", _path(t, p.url), token=token, kind="upload", headers=dict(TUS), ok=(200, 204))
            p.offset = int(h["Upload-Offset"])
            return p.offset >= len(data)
        end = min(len(data), p.offset + CHUNK)
        try:
            _, h, _ = await t.request("PATCH", _path(t, p.url), token=token, kind="upload", body=data[p.offset:end],
                                      fault=fault, headers={**TUS, "Upload-Offset": str(p.offset),
                                                            "Content-Type": "application/offset+octet-stream"},
                                      ok=(200, 204))
        except Dropped:
            p.offset = -1
            raise
        p.offset = int(h["Upload-Offset"])
        return p.offset >= len(data)
    except SimHttpError as exc:
        code = exc.code
        if code is ErrorCode.UPLOAD_OFFSET_MISMATCH:
            p.offset = -1
            return False
        if code in (ErrorCode.UPLOAD_EXPIRED, ErrorCode.NOT_FOUND) and had_url and p.restarts < 3:
            p.url, p.offset, p.restarts = None, 0, p.restarts + 1  # the session is gone: start a new upload
            return False
        if not exc.retryable:
            raise UploadRefused(code.value if code else str(exc.status)) from None
        raise


def _path(t: Transport, url: str) -> str:
    """Location may be absolute; requests go through the transport's base URL."""
    if url.startswith(t.base):
        return url[len(t.base):]
    if url.startswith("http"):
        return "/" + url.split("/", 3)[3]
    return url


async def advance_photo(t: Transport, token: str, p: PendingPhoto, rng: random.Random, metrics: Metrics, *,
                        budget: int, fault: Callable[[], str | None], online: Callable[[], bool]) -> str:
    """Spend at most `budget` requests on one upload; returns "done", "deferred", "offline" or "budget".

    Raises UploadRefused when retrying is futile. Every request that did not move the upload forward is followed
    by a jittered, exponentially growing pause, and an answer carrying Retry-After (429, 503, 409 upload_busy)
    defers the photo to a later round no earlier than the server asked: a busy or failing server never sees a
    device hammer one upload.
    """
    loop = asyncio.get_running_loop()
    idle = 0  # consecutive requests that made no progress
    for _ in range(budget):
        if not online():
            return "offline"
        before = p.offset
        try:
            if await upload_step(t, token, p, fault()):
                return "done"
            if p.offset > before >= 0:
                idle = 0
                continue
        except UploadRefused:
            raise
        except Dropped:
            pass
        except SimHttpError as exc:
            metrics.errors[f"upload:{exc.code.value if exc.code else exc.status}"] += 1
            if exc.retry_after:
                # At least what the server asked, plus up to half again of jitter so a fleet does not return at once.
                p.not_before = loop.time() + exc.retry_after * (1.0 + 0.5 * rng.random())
                return "deferred"
        except RETRYABLE_TRANSPORT as exc:
            metrics.errors[f"upload:{type(exc).__name__}"] += 1
        idle += 1
        metrics.counters["upload_backoffs"] += 1
        await asyncio.sleep(backoff_delay(idle, rng, cap=2.0))
    return "budget"

"""The blob store contract the upload and download paths call; implementations must never expose a torn object."""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 256 << 10  # read/stream granularity: large enough for throughput, small enough to keep memory flat


class Variant(StrEnum):
    """What is stored per photo: the evidence original, and derivatives generated lazily for serving."""

    ORIGINAL = "original"
    THUMB = "thumb"
    DISPLAY = "display"


def blob_key(variant: Variant, sha256: str) -> str:
    """Object key sharded by hash prefix, so no directory (or S3 prefix listing) grows past ~65k entries per level."""
    if not _SHA.match(sha256):
        raise ValueError("sha256 must be 64 lowercase hex characters")
    return f"{variant.value}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def derivative_key(variant: Variant, sha256: str, version: str) -> str:
    """A derivative's key names its recipe version, so a changed recipe (e.g. stricter metadata stripping) is never
    answered from a copy cached under the old one; stale versions are dead weight an operator may delete."""
    return f"{variant.value}/v{version}/{blob_key(variant, sha256).split('/', 1)[1]}"


class BlobStoreUnavailable(Exception):
    """The store could not be reached or refused a write: callers answer a retryable 503 instead of a bare 500."""


@dataclass(frozen=True)
class BlobStat:
    """What a download needs before streaming: the size for Content-Length and Range (and the write time, which
    blob collection re-reads before deleting an object without a row)."""

    size: int
    modified: float | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its size, and when it was last written (the collector's grace period counts from here)."""

    size: int
    modified: float  # seconds since the epoch


class BlobStore(abc.ABC):
    """Every method is async and keeps blocking I/O off the event loop (STYLE rule 15)."""

    @abc.abstractmethod
    async def stat(self, key: str) -> BlobStat | None:
        """Size of a complete object, or None; a half-written object is never reported."""

    @abc.abstractmethod
    async def put_file(self, key: str, src: Path, media_type: str, *, consume: bool = False) -> None:
        """Publish a complete local file atomically; with consume the source may be moved instead of copied."""

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        """Publish a small object (derivatives) atomically."""

    @abc.abstractmethod
    def read_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) in chunks, never the whole object at once."""

    @abc.abstractmethod
    async def fetch_to(self, key: str, dest: Path) -> None:
        """Copy an object to a local file (Pillow needs a seekable file for derivatives)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object if present."""

    @abc.abstractmethod
    async def list_keys(self, prefix: str) -> dict[str, int]:
        """Keys under `prefix` with their sizes (shared partial uploads find their pieces this way); bounded callers only."""

    @abc.abstractmethod
    async def list_objects(self, prefix: str) -> dict[str, ObjectInfo]:
        """Keys under `prefix` with size and write time (blob collection, one shard prefix at a time)."""

    def local_path(self, key: str) -> Path | None:
        """A local file holding the object, when the backend has one (lets aiohttp use sendfile)."""
        return None

    async def close(self) -> None:
        """Release clients and threads."""

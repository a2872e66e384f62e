"""Local filesystem blob store: temp file, fsync, atomic rename, directory fsync, so a crash never shows a torn photo."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from sync_server.blobs.base import CHUNK, BlobStat, BlobStore, ObjectInfo

log = structlog.get_logger(__name__)

TEMP_PREFIX = ".tmp-"  # temp files share the final directory (same filesystem, so rename is atomic) but never its names


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the new directory entry is only safe once the directory itself is synced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsBlobStore(BlobStore):
    """Objects live at <root>/<variant>/<aa>/<bb>/<sha256>; only complete, synced files ever get that name."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Final location of a key (keys come from blob_key, never from input, so no traversal is possible)."""
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        """The final file, which the download path may hand to aiohttp's sendfile."""
        return self.path(key)

    async def stat(self, key: str) -> BlobStat | None:
        """Size of the published file, or None."""
        return await asyncio.get_running_loop().run_in_executor(None, self._stat_sync, key)

    def _stat_sync(self, key: str) -> BlobStat | None:
        try:
            st = os.stat(self.path(key))
            return BlobStat(st.st_size, st.st_mtime)
        except FileNotFoundError:
            return None

    async def put_file(self, key: str, src: Path, media_type: str, *, consume: bool = False) -> None:
        """Publish a complete file; consume moves it (zero copy) when it is on the same filesystem."""
        await asyncio.get_running_loop().run_in_executor(None, self._put_file_sync, key, Path(src), consume)

    def _put_file_sync(self, key: str, src: Path, consume: bool) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if consume:
            with open(src, "rb+") as f:
                os.fsync(f.fileno())
            try:
                self._publish(src, final)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        tmp = self.write_temp_from(key, src)
        self._publish(tmp, final)
        if consume:
            src.unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        """Publish a small object via temp file and rename."""
        await asyncio.get_running_loop().run_in_executor(None, self._put_bytes_sync, key, data)

    def _put_bytes_sync(self, key: str, data: bytes) -> None:
        tmp = self.write_temp(key, data)
        self._publish(tmp, self.path(key))

    def write_temp(self, key: str, data: bytes) -> Path:
        """First half of a publish: a synced temp file beside the final name; a crash here leaves nothing visible."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TEMP_PREFIX}{final.name}.{secrets.token_hex(6)}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def write_temp_from(self, key: str, src: Path) -> Path:
        """Copy a file to a synced temp file beside the final name (cross-filesystem publish)."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TEMP_PREFIX}{final.name}.{secrets.token_hex(6)}"
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        return tmp

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        """rename(2) is atomic: readers see the old state or the whole new file; the dir fsync makes it survive power loss."""
        os.replace(tmp, final)
        fsync_dir(final.parent)

    async def read_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream a byte range in CHUNK reads, each in the executor."""
        loop = asyncio.get_running_loop()
        f = await loop.run_in_executor(None, open, self.path(key), "rb")
        try:
            await loop.run_in_executor(None, f.seek, start)
            left = end - start
            while left > 0:
                chunk = await loop.run_in_executor(None, f.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            await loop.run_in_executor(None, f.close)

    async def fetch_to(self, key: str, dest: Path) -> None:
        """Copy out (used only by code that is backend-agnostic; fs callers can read local_path directly)."""
        await asyncio.get_running_loop().run_in_executor(None, shutil.copyfile, self.path(key), dest)

    async def delete(self, key: str) -> None:
        """Remove a published object."""
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.path(key).unlink(missing_ok=True))

    async def list_keys(self, prefix: str) -> dict[str, int]:
        """Published files under a key prefix (temp files are never listed)."""
        found = await self.list_objects(prefix)
        return {k: v.size for k, v in found.items()}

    async def list_objects(self, prefix: str) -> dict[str, ObjectInfo]:
        """Published files under a key prefix with size and mtime (temp files are never listed)."""
        return await asyncio.get_running_loop().run_in_executor(None, self._list_sync, prefix)

    def _list_sync(self, prefix: str) -> dict[str, ObjectInfo]:
        base = self.path(prefix)
        top = base if prefix.endswith("/") else base.parent
        out: dict[str, ObjectInfo] = {}
        if not top.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                p = Path(dirpath) / name
                key = p.relative_to(self.root).as_posix()
                if name.startswith(TEMP_PREFIX) or not key.startswith(prefix):
                    continue
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                out[key] = ObjectInfo(st.st_size, st.st_mtime)
        return out

    def sweep_temp(self, older_than: float = 3600.0) -> int:
        """Delete temp files a crash left behind (blocking: call from an executor); they were never visible."""
        removed = 0
        cutoff = time.time() - older_than
        if not self.root.exists():
            return 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    p = Path(dirpath) / name
                    try:
                        if p.stat().st_mtime < cutoff:
                            p.unlink()
                            removed += 1
                    except FileNotFoundError:
                        continue
        if removed:
            log.info("blobs.temp_swept", removed=removed)
        return removed

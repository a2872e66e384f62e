"""Helpers shared by the upload and blob tests: images made with Pillow, tus requests over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

TUS = {"Tus-Resumable": "1.0.0"}


def noise_jpeg(w: int = 64, h: int = 48, *, seed: int = 1, gps: bool = False, quality: int = 90) -> bytes:
    """A JPEG of random pixels (distinct per seed), optionally carrying EXIF GPS like a phone photo."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", (w, h), bytes(rnd.getrandbits(8) for _ in range(w * h * 3)))
    out = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if gps:
        exif = Image.Exif()
        exif[0x010F] = "TestPhone"  # Make
        gps_ifd = exif.get_ifd(0x8825)
        gps_ifd[1] = "N"
        gps_ifd[2] = (34.0, 3.0, 0.0)
        gps_ifd[3] = "W"
        gps_ifd[4] = (118.0, 15.0, 0.0)
        kwargs["exif"] = exif
    img.save(out, "JPEG", quality=quality, **kwargs)
    return out.getvalue()


def png_bytes(w: int = 32, h: int = 32, mode: str = "RGB") -> bytes:
    """A small valid PNG."""
    out = io.BytesIO()
    Image.new(mode, (w, h), 0).save(out, "PNG")
    return out.getvalue()


def sha(data: bytes) -> str:
    """Hex SHA-256, the photo's identity."""
    return hashlib.sha256(data).hexdigest()


def metadata(values: dict[str, str]) -> str:
    """tus Upload-Metadata header."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def photo_meta(data: bytes, ticket_id: Any, *, digest: str | None = None, kind: str = "before") -> dict[str, str]:
    """Upload metadata for a photo of a ticket."""
    return {
        "sha256": digest or sha(data), "ticket_id": str(ticket_id), "kind": kind,
        "taken_at": datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc).isoformat(), "lat": "34.05", "lon": "-118.25",
        "filename": "IMG_0001.JPG",
    }


def auth(token: str, **extra: str) -> dict[str, str]:
    """tus + bearer headers."""
    return {**TUS, "Authorization": f"Bearer {token}", **extra}


async def create(http: aiohttp.ClientSession, url: str, token: str, data: bytes, ticket_id: Any, *,
                 digest: str | None = None, length: int | None = None, kind: str = "before") -> aiohttp.ClientResponse:
    """POST /v1/uploads; the caller reads status and headers."""
    async with http.post(url + "/v1/uploads", headers=auth(
        token, **{"Upload-Length": str(len(data) if length is None else length),
                  "Upload-Metadata": metadata(photo_meta(data, ticket_id, digest=digest, kind=kind))},
    )) as resp:
        await resp.read()
        return resp


async def patch(http: aiohttp.ClientSession, location: str, token: str, offset: int, body: bytes,
                **extra: str) -> aiohttp.ClientResponse:
    """One PATCH; returns the (read) response."""
    async with http.patch(location, data=body, headers=auth(
        token, **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream", **extra},
    )) as resp:
        await resp.read()
        return resp


async def head_offset(http: aiohttp.ClientSession, location: str, token: str) -> tuple[int, int | None]:
    """(status, Upload-Offset) of an upload."""
    async with http.head(location, headers=auth(token)) as resp:
        off = resp.headers.get("Upload-Offset")
        return resp.status, int(off) if off is not None else None


async def upload(http: aiohttp.ClientSession, url: str, token: str, data: bytes, ticket_id: Any, *,
                 chunk: int = 1 << 20, digest: str | None = None) -> aiohttp.ClientResponse:
    """Create and upload in chunks; returns the last response (201 for a deduplicated create)."""
    resp = await create(http, url, token, data, ticket_id, digest=digest)
    assert resp.status == 201, resp.status
    location = resp.headers["Location"]
    offset = int(resp.headers["Upload-Offset"])
    last = resp
    for _ in range(len(data) // chunk + 2):
        if offset >= len(data):
            break
        last = await patch(http, location, token, offset, data[offset:offset + chunk])
        if last.status != 204:
            return last
        offset = int(last.headers["Upload-Offset"])
    return last


async def raw_patch_partial(url: str, path: str, token: str, offset: int, total: int, part: bytes, *,
                            close: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Send a PATCH declaring `total` body bytes but only `part` of them, then hang up (or stay silent)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {total}\r\n\r\n"
    )
    writer.write(head.encode() + part)
    await writer.drain()
    if close:
        writer.close()
        await writer.wait_closed()
        return None
    return reader, writer  # keep the writer referenced: dropping it would close the socket


def partial_files(data_dir: Path) -> list[Path]:
    """Partial upload files left on disk."""
    d = data_dir / "uploads"
    return sorted(d.glob("*.part")) if d.exists() else []


def stored_originals(data_dir: Path) -> list[Path]:
    """Published originals in the filesystem store."""
    d = data_dir / "blobs" / "original"
    return sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")) if d.exists() else []

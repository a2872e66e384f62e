"""Image safety and derivatives: trust magic bytes not client headers, refuse bombs, serve copies without EXIF/GPS.

Every function that touches pixels is blocking and runs in an executor via the async wrappers at the bottom.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from protocol import ErrorCode, ProtocolError

JPEG, PNG, WEBP, HEIC = "image/jpeg", "image/png", "image/webp", "image/heic"
# Pillow's format name for each media type we accept: the decoded format must agree with the magic bytes,
# so a file cannot claim one format to a sniffer and be parsed as another.
_PIL_FORMAT = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP", HEIC: "HEIF"}
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})

# Long side of each served derivative, in pixels.
DERIVATIVE_SIZES = {"thumb": 320, "display": 2048}
DERIVATIVE_VERSION = "2"  # part of the ETag and the cache key: bump when the derivative recipe changes
_heif_lock = threading.Lock()
_heif_ready = False


def _ensure_heif() -> None:
    """Register the HEIF opener on first use, not at import (no work at import time)."""
    global _heif_ready
    with _heif_lock:
        if not _heif_ready:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _heif_ready = True


def sniff(head: bytes) -> str | None:
    """Media type from the first bytes of a file, or None; the client's Content-Type is never consulted."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIC_BRANDS:
        return HEIC
    return None


@dataclass(frozen=True)
class ImageInfo:
    """What the blobs row records about a verified photo."""

    media_type: str
    width: int
    height: int


def _unsupported(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNSUPPORTED_IMAGE, message)


def inspect_image(path: Path, max_pixels: int) -> ImageInfo:
    """Sniff, check the declared size against the pixel cap before decoding, then decode fully (blocking)."""
    with open(path, "rb") as f:
        media = sniff(f.read(32))
    if media is None:
        raise _unsupported("not a JPEG, PNG, WebP or HEIC image")
    if media == HEIC:
        _ensure_heif()
    try:
        with Image.open(path, formats=[_PIL_FORMAT[media]]) as img:
            width, height = img.size
            # The header's size is checked before any pixel is decoded: that is what stops a decompression bomb.
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise _unsupported(f"image is {width}x{height}, above the {max_pixels} pixel limit")
            if img.format != _PIL_FORMAT[media]:
                raise _unsupported("image content does not match its signature")
            if media == JPEG:
                # DCT scaling still entropy-decodes every block (so corrupt data fails) at 1/8 of the memory.
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            img.load()
    except ProtocolError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise _unsupported(f"image does not decode: {type(exc).__name__}") from None
    return ImageInfo(media, width, height)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file read in chunks (hashlib releases the GIL, so executor threads run in parallel)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(256 << 10):
            h.update(chunk)
    return h.hexdigest()


def make_derivative(src: Path, variant: str, media: str) -> bytes:
    """A JPEG no larger than the variant's size, oriented by EXIF, carrying pixels and a colour profile only.

    Served copies reach every device of a crew: nothing a camera or an editor wrote (EXIF with GPS, XMP, IPTC,
    JPEG COM comments, PNG text chunks) may travel with them.
    """
    size = DERIVATIVE_SIZES[variant]
    if media == HEIC:
        _ensure_heif()
    with Image.open(src, formats=[_PIL_FORMAT[media]]) as img:
        if media == JPEG:
            img.draft("RGB", (size, size))
        oriented = ImageOps.exif_transpose(img)
        if oriented.mode not in ("RGB", "L"):
            rgba = oriented.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            oriented = flat
        oriented.thumbnail((size, size), Image.Resampling.LANCZOS)
        # Pillow's JPEG writer copies some of `info` on its own (the COM comment, and XMP in newer releases): start
        # from pixels alone and hand over only what we chose. The ICC colour profile is kept on purpose: it holds
        # colour data, not personal data, and dropping it shifts wide-gamut phone photos.
        icc = img.info.get("icc_profile")
        clean = Image.frombytes(oriented.mode, oriented.size, oriented.tobytes())
        out = io.BytesIO()
        kwargs = {"icc_profile": icc} if icc else {}
        clean.save(out, "JPEG", quality=82, optimize=True, **kwargs)
        return out.getvalue()


async def inspect_image_async(path: Path, max_pixels: int, executor: Executor | None = None) -> ImageInfo:
    """inspect_image off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(executor, inspect_image, path, max_pixels)


async def sha256_file_async(path: Path, executor: Executor | None = None) -> str:
    """sha256_file off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(executor, sha256_file, path)


async def make_derivative_async(src: Path, variant: str, media: str, executor: Executor | None = None) -> bytes:
    """make_derivative off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(executor, make_derivative, src, variant, media)

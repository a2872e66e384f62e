"""Public photo links of `extensions=true`: only the display derivative of an after-photo (metadata and GPS stripped
when it is derived), never an original and never a before-photo, which may show residents or their property."""

from __future__ import annotations

import re

from aiohttp import web

from sync_server import images
from sync_server.api.uploads import UPLOADS
from sync_server.blobs.base import Variant
from sync_server.engine.photos import ensure_derivative
from sync_server.keys import POOL
from sync_server.open311 import store

_SHA = re.compile(r"[0-9a-f]{64}")


async def after_photo(request: web.Request) -> web.StreamResponse:
    """GET /open311/v2/media/{sha256}.jpg: 404 for anything but a verified after-photo."""
    sha = request.match_info["sha256"]
    if not _SHA.fullmatch(sha):
        raise web.HTTPNotFound(text="no such photo")
    async with request.app[POOL].acquire() as conn:
        media = await store.public_photo_media(conn, sha)
    if media is None:
        raise web.HTTPNotFound(text="no such photo")
    up = request.app[UPLOADS]
    key = await ensure_derivative(up, sha, Variant.DISPLAY, media)
    stat = await up.store.stat(key)
    if stat is None:
        raise web.HTTPNotFound(text="no such photo")
    resp = web.StreamResponse(headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
    resp.content_type = images.JPEG
    resp.content_length = stat.size
    await resp.prepare(request)
    async for chunk in up.store.read_range(key, 0, stat.size):
        await resp.write(chunk)
    await resp.write_eof()
    return resp

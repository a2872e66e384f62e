"""tus 1.0.0 upload endpoints and photo downloads: headers in, engine call, headers out.

Off-the-shelf tus clients read plain statuses and headers (204, 409, 460, Upload-Offset); FieldSync clients read
the error envelope. Every error answer carries both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import format_datetime
from typing import Literal
from uuid import UUID

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ConfigDict

from protocol import ErrorCode, PhotoKind, PhotoState, ProtocolError, UploadMetadata
from protocol.codec import encode_error
from sync_server.api.http import principal, respond, response_type, undecodable_body
from sync_server.api.middleware import TUS_RESUMABLE, error_response
from sync_server.api.registry import route
from sync_server.auth import Role
from sync_server.blobs import Variant, open_store
from sync_server.blobs.fs import FsBlobStore
from sync_server.engine import blob_gc
from sync_server.engine import photos as downloads
from sync_server.engine import upload_sweep
from sync_server.engine import uploads as engine
from sync_server.engine.upload_leases import LeaseHolder
from sync_server.keys import DSN, POOL, PRINCIPAL, SETTINGS

from sync_server.metrics import METRICS, Metrics
log = structlog.get_logger(__name__)

TUS_VERSION = TUS_RESUMABLE
TUS_EXTENSIONS = "creation,checksum,termination,expiration"
OFFSET_TYPE = "application/offset+octet-stream"
UPLOADS = web.AppKey("fieldsync.uploads", engine.Uploads)
_SHA = re.compile(r"^[0-9a-f]{64}$")
_DIGITS = re.compile(r"^[0-9]{1,15}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Body bytes taken per read: bounds what each of many concurrent uploads holds in flight between socket and disk.
READ_CHUNK = 256 << 10


class PhotoQuery(BaseModel):
    """Which size of a photo to serve."""

    model_config = ConfigDict(extra="forbid")
    variant: Literal["thumb", "display", "original"] = "display"


class TicketPhoto(BaseModel):
    """One photo of a ticket as a supervisor reviews it."""

    sha256: str
    kind: PhotoKind
    taken_at: datetime
    lat: float | None = None
    lon: float | None = None
    state: PhotoState
    added_by: str
    attached_at: datetime
    size: int | None = None
    media_type: str | None = None
    width: int | None = None
    height: int | None = None
    urls: dict[str, str]


class TicketPhotoList(BaseModel):
    """A ticket's photos, pending ones included (their bytes have not arrived yet)."""

    ticket_id: UUID
    photos: list[TicketPhoto]


def _tus_headers(resp: web.StreamResponse) -> web.StreamResponse:
    resp.headers["Tus-Resumable"] = TUS_VERSION
    resp.headers["Cache-Control"] = "no-store"
    return resp


def tus(handler: Handler) -> Handler:
    """Check Tus-Resumable (412 otherwise) and put tus headers on every answer, errors included."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            err = ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"this server speaks tus {TUS_VERSION}",
                                {"tus_version": TUS_VERSION})
            media = response_type(request)
            # tus mandates 412 here; the envelope still carries a stable code for FieldSync clients.
            refused = web.Response(status=412, body=encode_error(err, media), content_type=media)
            refused.headers["Tus-Version"] = TUS_VERSION
            return _tus_headers(refused)
        resp: web.StreamResponse
        try:
            resp = await handler(request)
        except ProtocolError as err:
            resp = error_response(request, err)
            if "offset" in err.details:
                resp.headers["Upload-Offset"] = str(err.details["offset"])
            if "retry_after" in err.details and "Retry-After" not in resp.headers:  # e.g. 409 upload_busy
                resp.headers["Retry-After"] = str(err.details["retry_after"])
        return _tus_headers(resp)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def options(request: web.Request) -> web.Response:
    """tus discovery: public, so clients can learn the server's capabilities before authenticating."""
    resp = web.Response(status=204)
    resp.headers.update({
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        "Tus-Max-Size": str(request.app[SETTINGS].max_photo_bytes),
    })
    return resp


def _int_header(request: web.Request, name: str) -> int:
    value = request.headers.get(name)
    if value is None or not _DIGITS.match(value):
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"{name} header must be a non-negative integer", {"header": name})
    return int(value)


def _expires(resp: web.StreamResponse, view: engine.SessionView) -> None:
    if not view.complete and isinstance(view.expires_at, datetime):
        resp.headers["Upload-Expires"] = format_datetime(view.expires_at, usegmt=True)


@tus
async def create(request: web.Request) -> web.Response:
    """tus creation: POST with Upload-Length and Upload-Metadata; a hash the server already has is complete at once."""
    who = principal(request, Role.DEVICE)
    if "Upload-Defer-Length" in request.headers:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "Upload-Defer-Length is not supported", {"header": "Upload-Defer-Length"})
    length = _int_header(request, "Upload-Length")
    raw = request.headers.get("Upload-Metadata", "")
    meta = UploadMetadata.from_tus(raw)
    view = await engine.create_upload(request.app[UPLOADS], who, meta, length, raw)
    resp = web.Response(status=201)
    base = request.app[SETTINGS].public_url
    path = f"/v1/uploads/{view.id}"
    resp.headers["Location"] = (base.rstrip("/") + path) if base else str(request.url.with_path(path).with_query(None))
    resp.headers["Upload-Offset"] = str(view.offset)
    _expires(resp, view)
    return resp


@tus
async def head(request: web.Request) -> web.Response:
    """tus offset discovery: where to resume."""
    who = principal(request, Role.DEVICE)
    view = await engine.find_upload(request.app[UPLOADS], who, request.match_info["upload_id"])
    resp = web.Response(status=200)
    resp.headers["Upload-Offset"] = str(view.offset)
    resp.headers["Upload-Length"] = str(view.length)
    if view.metadata:
        resp.headers["Upload-Metadata"] = view.metadata
    _expires(resp, view)
    return resp


CHECKSUM_ALGORITHMS = {"sha256": 32, "sha1": 20}  # sha1 only guards a chunk in transit (tuspy's default);
# content identity is always the whole-file SHA-256.


def _checksum(request: web.Request) -> tuple[str, bytes] | None:
    value = request.headers.get("Upload-Checksum")
    if value is None:
        return None
    algo, _, digest = value.strip().partition(" ")
    algo = algo.lower()
    if algo not in CHECKSUM_ALGORITHMS:
        raise ProtocolError(ErrorCode.CHECKSUM_UNSUPPORTED, "Upload-Checksum algorithm must be sha256 or sha1",
                            {"header": "Upload-Checksum"})
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != CHECKSUM_ALGORITHMS[algo]:
        raise ProtocolError(ErrorCode.CHECKSUM_UNSUPPORTED, "Upload-Checksum digest is not valid base64 of the right length",
                            {"header": "Upload-Checksum"})
    return algo, raw


def _body_reader(request: web.Request, timeout: float) -> Callable[[], Awaitable[bytes]]:
    """Each read waits at most `timeout`: a stalled client gets its request cut instead of holding it forever."""

    async def read() -> bytes:
        try:
            return await asyncio.wait_for(request.content.read(READ_CHUNK), timeout)
        except TimeoutError:
            raise engine.BodyInterrupted("body stalled") from None
        except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError) as exc:
            raise engine.BodyInterrupted(type(exc).__name__) from None
        except RequestPayloadError:  # a Content-Encoding that does not decode: resending it would fail the same way
            raise undecodable_body() from None

    return read


@tus
async def patch(request: web.Request) -> web.Response:
    """tus append: stream the body to the partial file at Upload-Offset; verify and publish after the last byte."""
    who = principal(request, Role.DEVICE)
    if request.content_type != OFFSET_TYPE:
        raise ProtocolError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"PATCH bodies must be {OFFSET_TYPE}")
    offset = _int_header(request, "Upload-Offset")
    checksum = _checksum(request)
    settings = request.app[SETTINGS]
    view = await engine.patch_upload(request.app[UPLOADS], who, request.match_info["upload_id"], offset,
                                     _body_reader(request, settings.upload_read_timeout_seconds), checksum)
    request.app[METRICS].upload_bytes.inc(max(0, view.offset - offset))
    resp = web.Response(status=204)
    resp.headers["Upload-Offset"] = str(view.offset)
    _expires(resp, view)
    return resp


@tus
async def delete(request: web.Request) -> web.Response:
    """tus termination: the session and its partial bytes are gone."""
    who = principal(request, Role.DEVICE)
    await engine.terminate_upload(request.app[UPLOADS], who, request.match_info["upload_id"])
    return web.Response(status=204)


_TUNNELLED: dict[str, Handler] = {"PATCH": patch, "DELETE": delete, "HEAD": head}


async def method_override(request: web.Request) -> web.StreamResponse:
    """tus 1.0.0: X-HTTP-Method-Override MUST be read as the request's method, for clients whose HTTP stack or proxy
    cannot send PATCH or DELETE (tus-js-client's overridePatchMethod); a POST without one is refused like any other
    method the upload URL does not serve."""
    target = _TUNNELLED.get(request.headers.get("X-HTTP-Method-Override", "").strip().upper())
    if target is None:
        allowed = sorted({*_TUNNELLED, "OPTIONS"})
        err = ProtocolError(ErrorCode.METHOD_NOT_ALLOWED, "POST on an upload needs X-HTTP-Method-Override: PATCH, "
                            "DELETE or HEAD", {"allowed": allowed, "header": "X-HTTP-Method-Override"})
        return _tus_headers(error_response(request, err, {"Allow": ", ".join(allowed)}))
    return await target(request)


class _BlobFileResponse(web.FileResponse):
    """sendfile with Range support, but with the content-addressed ETag instead of aiohttp's mtime-based one."""

    def __init__(self, path: object, etag: str, **kwargs: object) -> None:
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self._content_etag = etag

    @property  # type: ignore[override]
    def etag(self) -> object:
        return web.StreamResponse.etag.fget(self)  # type: ignore[attr-defined]

    @etag.setter
    def etag(self, value: object) -> None:
        self.headers["ETag"] = self._content_etag


def _etag_matches(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.strip('"')
    return any(tag.strip().removeprefix("W/").strip('"') == wanted for tag in header.split(","))


async def download(request: web.Request) -> web.StreamResponse:
    """A photo by hash; immutable content, so an ETag match is a 304 and caches may keep it forever."""
    who = request[PRINCIPAL]
    sha = request.match_info["sha256"]
    extra = set(request.query) - {"variant"}
    variant_q = request.query.get("variant", "display")
    if extra or variant_q not in ("thumb", "display", "original"):
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "variant must be thumb, display or original", {"field": "variant"})
    if not _SHA.match(sha):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such photo")
    up = request.app[UPLOADS]
    served = await downloads.photo_for_download(up, who, sha, Variant(variant_q))
    headers = {
        "ETag": served.etag,
        "Cache-Control": "private, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",  # with the sandbox CSP: a polyglot original can never run as a page
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Accept-Ranges": "bytes",
    }
    if _etag_matches(request, served.etag):
        return web.Response(status=304, headers=headers)
    local = up.store.local_path(served.key)
    if isinstance(up.store, FsBlobStore) and local is not None:
        resp = _BlobFileResponse(local, served.etag, headers=headers)
        resp.content_type = served.media_type
        return resp
    return await _stream_blob(request, up, served, headers)


async def _stream_blob(request: web.Request, up: engine.Uploads, served: downloads.ServedBlob,
                       headers: dict[str, str]) -> web.StreamResponse:
    """Range-aware streaming from a store without local files (S3), chunk by chunk."""
    stat = await up.store.stat(served.key)
    if stat is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such photo")
    size = stat.size
    start, end, status = 0, size, 200
    try:
        rng = request.http_range
    except ValueError:
        rng = None
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if rng is not None and rng.start is not None:
        if rng.start < 0 and rng.stop is None:
            start = max(0, size + rng.start)
        else:
            start, end = rng.start, min(rng.stop if rng.stop is not None else size, size)
        if start >= size or end <= start:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = served.media_type
    resp.content_length = end - start
    await resp.prepare(request)
    if request.method != "HEAD":
        chunks: AsyncIterator[bytes] = up.store.read_range(served.key, start, end)
        async for chunk in chunks:
            await resp.write(chunk)
    await resp.write_eof()
    return resp


async def ticket_photo_list(request: web.Request) -> web.Response:
    """A ticket's photos for review; tickets of other departments answer 404 like unknown ones."""
    who = principal(request, Role.SUPERVISOR, Role.ADMIN)
    try:
        ticket_id = UUID(request.match_info["ticket_id"])
    except ValueError:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket") from None
    rows = await downloads.ticket_photos(request.app[UPLOADS], who, ticket_id)
    photos = [
        TicketPhoto(
            sha256=r["sha256"], kind=r["kind"], taken_at=r["taken_at"], lat=r["lat"], lon=r["lon"],
            state=PhotoState.AVAILABLE if r["size"] is not None else PhotoState.PENDING, added_by=r["added_by"],
            attached_at=r["created_at"], size=r["size"], media_type=r["media_type"], width=r["width"],
            height=r["height"],
            urls={v: f"/v1/photos/{r['sha256']}?variant={v}" for v in ("thumb", "display", "original")},
        )
        for r in rows
    ]
    return respond(request, TicketPhotoList(ticket_id=ticket_id, photos=photos))


async def _uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    """Store and sweeper live with the app: expired sessions lose their partial bytes even if no client returns."""
    settings = app[SETTINGS]
    store = open_store(settings)
    cpu = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="fieldsync-photo")
    up = engine.Uploads(app[POOL], settings, store, settings.data_dir / "uploads", LeaseHolder(app[DSN]), cpu)
    app[UPLOADS] = up
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: up.partial_dir.mkdir(parents=True, exist_ok=True))
    if isinstance(store, FsBlobStore):
        await loop.run_in_executor(None, store.sweep_temp)
    task = asyncio.create_task(_sweeper(up, min(60.0, settings.upload_expiry_seconds / 4), app[METRICS]))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await up.leases.close()
    await store.close()
    cpu.shutdown(wait=False)


GC_START_DELAY_S = 600.0


async def _sweeper(up: engine.Uploads, every: float, metrics: Metrics) -> None:
    """Outermost loop of a background task: log and keep going, a bad sweep must not stop later ones. Photo
    collection rides along: it runs when no process of the deployment ran it within blob_gc_interval_s."""
    # Not at start-up: a restart (or a test server) must not begin with a full listing of the store.
    gc_from = time.monotonic() + min(up.settings.blob_gc_interval_s, GC_START_DELAY_S)
    while True:
        try:
            await upload_sweep.sweep_expired(up)
        except Exception:  # noqa: BLE001 - outermost loop of a background task
            log.exception("upload.sweep_failed")
        try:
            report = (await blob_gc.collect_if_due(up.pool, up.store, up.settings)
                      if time.monotonic() >= gc_from else None)
            if report is not None:
                metrics.retention_runs.labels(job=blob_gc.JOB, outcome="ok").inc()
                for kind in ("unattached", "orphans", "partials", "temp_files"):
                    metrics.retention_removed.labels(kind=f"photo_{kind}").inc(getattr(report, kind))
        except Exception:  # noqa: BLE001 - outermost loop of a background task
            metrics.retention_runs.labels(job=blob_gc.JOB, outcome="failed").inc()
            log.exception("blobs.collect_failed")
        await asyncio.sleep(every)


def setup(app: web.Application) -> None:
    """Register tus, photo and ticket-photo routes and the upload resources."""
    app.cleanup_ctx.append(_uploads_ctx)
    t = ("uploads",)
    route(app, "OPTIONS", "/v1/uploads", options, summary="tus discovery (version, extensions, max size)", roles=(), tags=t,
          status=204)
    route(app, "POST", "/v1/uploads", create, summary="tus creation of a photo upload", roles=("device",), tags=t, status=201)
    route(app, "OPTIONS", "/v1/uploads/{upload_id}", options, summary="tus discovery", roles=(), tags=t, status=204)
    route(app, "HEAD", "/v1/uploads/{upload_id}", head, summary="tus offset of an upload", roles=("device",), tags=t)
    route(app, "PATCH", "/v1/uploads/{upload_id}", patch, summary="tus append bytes at Upload-Offset", roles=("device",),
          tags=t, status=204)
    route(app, "DELETE", "/v1/uploads/{upload_id}", delete, summary="tus termination", roles=("device",), tags=t,
          status=204)
    route(app, "POST", "/v1/uploads/{upload_id}", method_override, roles=("device",), tags=t, status=204,
          summary="tus PATCH, DELETE or HEAD sent as POST with X-HTTP-Method-Override (tus 1.0.0 core)")
    route(app, "GET", "/v1/photos/{sha256}", download, summary="Download a photo (thumb, display, or original for supervisors)",
          roles=("device", "supervisor", "admin"), query=PhotoQuery, tags=("photos",))
    route(app, "GET", "/v1/tickets/{ticket_id}/photos", ticket_photo_list, summary="A ticket's photos",
          roles=("supervisor", "admin"), response=TicketPhotoList, tags=("photos",))

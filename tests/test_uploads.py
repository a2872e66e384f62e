"""tus uploads end to end over real HTTP and PostgreSQL: resume, dedup, checksums, bad images, limits, authz (I8)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import struct
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from PIL import Image

from sync_server.api.uploads import UPLOADS
from sync_server.engine.upload_sweep import sweep_expired
from sync_server.settings import Settings
from tests.conftest import Server, start_server
from tests.factories import World, make_tickets
from tests.test_uploads_support import (
    TUS, auth, create, head_offset, noise_jpeg, partial_files, patch, png_bytes, raw_patch_partial, sha,
    stored_originals, upload,
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _blob_count(pool: asyncpg.Pool, digest: str) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", digest))


async def test_options_is_public_and_advertises_tus(server: Server, http: aiohttp.ClientSession, settings: Settings) -> None:
    async with http.options(server.url + "/v1/uploads") as r:
        assert r.status == 204
        assert r.headers["Tus-Version"] == "1.0.0"
        assert set(r.headers["Tus-Extension"].split(",")) == {"creation", "checksum", "termination", "expiration"}
        assert "sha256" in r.headers["Tus-Checksum-Algorithm"].split(",")
        assert int(r.headers["Tus-Max-Size"]) == settings.max_photo_bytes


async def test_missing_tus_resumable_is_412(server: Server, world: World, http: aiohttp.ClientSession) -> None:
    tok = world.device("san-1").token
    async with http.post(server.url + "/v1/uploads", headers={"Authorization": f"Bearer {tok}", "Upload-Length": "10"}) as r:
        assert r.status == 412
        assert r.headers["Tus-Version"] == "1.0.0"
        assert (await r.json())["error"]["code"] == "unsupported_version"


async def test_interrupted_upload_resumes_from_server_offset(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = world.device("san-1")
    data = noise_jpeg(400, 300, seed=7)
    r = await create(http, server.url, dev.token, data, t.ticket.id)
    assert r.status == 201 and r.headers["Upload-Offset"] == "0"
    assert "Upload-Expires" in r.headers
    location = r.headers["Location"]
    half = len(data) // 2
    # The client declares the whole body, sends half, and hangs up once the server has it: the server keeps it.
    conn = await raw_patch_partial(server.url, location.removeprefix(server.url), dev.token, 0, len(data),
                                   data[:half], close=False)
    assert conn is not None
    for _ in range(500):
        parts = partial_files(settings.data_dir)
        if parts and parts[0].stat().st_size == half:
            break
        await asyncio.sleep(0.01)
    conn[1].close()
    offset = 0
    for _ in range(200):  # the server settles the interrupted request asynchronously
        status, off = await head_offset(http, location, dev.token)
        assert status == 200
        offset = off or 0
        if offset:
            break
        await asyncio.sleep(0.02)
    assert offset == half
    assert await _blob_count(pool, sha(data)) == 0  # nothing visible before the last byte
    r = await patch(http, location, dev.token, offset, data[offset:])
    assert r.status == 204 and int(r.headers["Upload-Offset"]) == len(data)
    assert await _blob_count(pool, sha(data)) == 1
    (stored,) = stored_originals(settings.data_dir)
    assert stored.read_bytes() == data and stored.name == sha(data)
    assert partial_files(settings.data_dir) == []
    status, off = await head_offset(http, location, dev.token)
    assert (status, off) == (200, len(data))


async def test_wrong_offset_is_409_with_server_offset(server: Server, world: World, pool: asyncpg.Pool,
                                                      http: aiohttp.ClientSession) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(seed=3)
    r = await create(http, server.url, tok, data, t.ticket.id)
    loc = r.headers["Location"]
    assert (await patch(http, loc, tok, 0, data[:100])).status == 204
    r = await patch(http, loc, tok, 50, data[50:150])
    assert r.status == 409 and r.headers["Upload-Offset"] == "100"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    async with http.patch(loc, data=data[100:], headers=auth(tok, **{"Upload-Offset": "100", "Content-Type": "text/plain"})) as r2:
        assert r2.status == 415


async def test_same_photo_from_two_devices_is_stored_once(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t1,) = await make_tickets(pool, world, 1, crew="san-1")
    (t2,) = await make_tickets(pool, world, 1, crew="san-2")
    a, b, c = world.device("san-1", 0), world.device("san-2", 0), world.device("san-1", 1)
    data = noise_jpeg(200, 150, seed=11)
    # c opens a session for the photo before a has delivered it.
    rc = await create(http, server.url, c.token, data, t1.ticket.id)
    assert rc.status == 201 and rc.headers["Upload-Offset"] == "0"
    r = await upload(http, server.url, a.token, data, t1.ticket.id, chunk=4096)
    assert r.status == 204
    # c's open session is now reported complete: its crew delivered the bytes.
    assert await head_offset(http, rc.headers["Location"], c.token) == (200, len(data))
    # b (another crew) knows the hash but must prove possession by sending the bytes; they are still stored once.
    rb = await create(http, server.url, b.token, data, t2.ticket.id)
    assert rb.status == 201 and int(rb.headers["Upload-Offset"]) == 0
    done = await patch(http, rb.headers["Location"], b.token, 0, data)
    assert done.status == 204 and int(done.headers["Upload-Offset"]) == len(data)
    assert await _blob_count(pool, sha(data)) == 1
    assert len(stored_originals(settings.data_dir)) == 1
    assert partial_files(settings.data_dir) == []


async def test_chunk_checksum_mismatch_is_460_and_keeps_offset(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(seed=5)
    loc = (await create(http, server.url, tok, data, t.ticket.id)).headers["Location"]
    chunk = data[:500]
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    r = await patch(http, loc, tok, 0, chunk, **{"Upload-Checksum": f"sha256 {wrong}"})
    assert r.status == 460
    assert await head_offset(http, loc, tok) == (200, 0)
    r = await patch(http, loc, tok, 0, chunk, **{"Upload-Checksum": "md5 AAAA"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "checksum_unsupported"  # tus checksum extension
    assert await head_offset(http, loc, tok) == (200, 0)
    r = await patch(http, loc, tok, 0, chunk, **{"Upload-Checksum": "sha256 not-base64!"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "checksum_unsupported"
    assert await head_offset(http, loc, tok) == (200, 0)
    good = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    r = await patch(http, loc, tok, 0, chunk, **{"Upload-Checksum": f"sha256 {good}"})
    assert r.status == 204 and r.headers["Upload-Offset"] == "500"
    rest = data[500:]
    sha1 = base64.b64encode(hashlib.sha1(rest).digest()).decode()
    r = await patch(http, loc, tok, 500, rest, **{"Upload-Checksum": f"sha1 {sha1}"})
    assert r.status == 204 and int(r.headers["Upload-Offset"]) == len(data)
    assert await _blob_count(pool, sha(data)) == 1


async def test_whole_file_hash_mismatch_discards_everything(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(seed=9)
    claimed = sha(b"not these bytes")
    r = await upload(http, server.url, tok, data, t.ticket.id, chunk=1000, digest=claimed)
    assert r.status == 460
    body = json.loads(r._body or b"{}")  # type: ignore[attr-defined]
    assert body["error"]["code"] == "checksum_mismatch"
    assert await _blob_count(pool, claimed) == 0 and await _blob_count(pool, sha(data)) == 0
    assert partial_files(settings.data_dir) == [] and stored_originals(settings.data_dir) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM upload_sessions") == 0


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (CRC fixed, so only the size is wrong)."""
    data = bytearray(png_bytes(1, 1))
    ihdr = 8 + 8  # signature, then length + type of IHDR
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _real_bomb() -> bytes:
    """64 megapixels of zeros in a few kilobytes."""
    out = io.BytesIO()
    Image.new("1", (8000, 8000), 0).save(out, "PNG", optimize=True)
    return out.getvalue()


@pytest.mark.parametrize("make", [
    pytest.param(_real_bomb, id="png-bomb-64MP"),
    pytest.param(lambda: _png_with_size(60000, 60000), id="png-header-bomb"),
    pytest.param(lambda: b"<html><script>alert(1)</script></html>" * 20, id="html"),
    pytest.param(lambda: b"\x89PNG\r\n\x1a\n" + b"PK\x03\x04" + b"<script>alert(1)</script>" * 30, id="png-magic-polyglot"),
    pytest.param(lambda: noise_jpeg(seed=2)[:20] + b"PK\x03\x04 zip payload " * 50, id="jpeg-magic-polyglot"),
    pytest.param(lambda: b"GIF89a" + png_bytes(), id="gif"),
])
async def test_bombs_polyglots_and_non_images_are_rejected(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings, make,  # type: ignore[no-untyped-def]
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = make()
    r = await upload(http, server.url, tok, data, t.ticket.id)
    assert r.status == 415
    assert await _blob_count(pool, sha(data)) == 0
    assert partial_files(settings.data_dir) == [] and stored_originals(settings.data_dir) == []


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_upload_authz(server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession) -> None:
    (mine,) = await make_tickets(pool, world, 1, crew="san-1")
    (theirs,) = await make_tickets(pool, world, 1, crew="san-2")
    (unassigned,) = await make_tickets(pool, world, 1, crew=None)
    dev = world.device("san-1")
    data = noise_jpeg(seed=4)
    assert (await create(http, server.url, dev.token, data, theirs.ticket.id)).status == 404
    assert (await create(http, server.url, dev.token, data, unassigned.ticket.id)).status == 404
    # A ticket the device reported itself is in reach even while no crew holds it.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE tickets SET created_by_device = $1 WHERE id = $2", dev.device_id, unassigned.ticket.id)
    assert (await create(http, server.url, dev.token, data, unassigned.ticket.id)).status == 201
    # Supervisors do not upload.
    r = await create(http, server.url, world.supervisors["sanitation"], data, mine.ticket.id)
    assert r.status == 403
    # Another device cannot see or drive someone else's session.
    loc = (await create(http, server.url, dev.token, data, mine.ticket.id)).headers["Location"]
    other = world.device("san-1", 1)
    assert (await head_offset(http, loc, other.token))[0] == 404
    assert (await patch(http, loc, other.token, 0, data)).status == 404
    # A revoked device is refused outright.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", dev.device_id)
    # (device principals are cached per process and dropped on the revocation's NOTIFY: staleness is bounded, not
    # zero, so the first refusal is awaited within a bound; from then on every request is refused)
    for _ in range(100):
        r = await create(http, server.url, dev.token, data, mine.ticket.id)
        if r.status != 201:
            break
        await asyncio.sleep(0.05)
    assert r.status == 401
    assert (await patch(http, loc, dev.token, 0, data)).status == 401
    assert await _blob_count(pool, sha(data)) == 0


async def test_size_cap_and_overflow_are_413(server: Server, world: World, pool: asyncpg.Pool,
                                             http: aiohttp.ClientSession, settings: Settings) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(seed=6)
    r = await create(http, server.url, tok, data, t.ticket.id, length=settings.max_photo_bytes + 1)
    assert r.status == 413
    loc = (await create(http, server.url, tok, data, t.ticket.id)).headers["Location"]
    r = await patch(http, loc, tok, 0, data + b"extra bytes past the declared length")
    assert r.status == 413
    assert await head_offset(http, loc, tok) == (200, 0)


async def test_concurrent_session_limit_is_429(world: World, pool: asyncpg.Pool, db_dsn: str, settings: Settings,
                                               http: aiohttp.ClientSession) -> None:
    srv = await start_server(settings.model_copy(update={"max_uploads_per_device": 2}), db_dsn)
    try:
        (t,) = await make_tickets(pool, world, 1)
        tok = world.device("san-1").token
        photos = [noise_jpeg(seed=20 + i) for i in range(3)]
        assert (await create(http, srv.url, tok, photos[0], t.ticket.id)).status == 201
        loc = (await create(http, srv.url, tok, photos[1], t.ticket.id)).headers["Location"]
        r = await create(http, srv.url, tok, photos[2], t.ticket.id)
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0
        # Another device of the crew has its own budget; finishing or terminating frees a slot.
        assert (await create(http, srv.url, world.device("san-1", 1).token, photos[2], t.ticket.id)).status == 201
        async with http.delete(loc, headers=auth(tok)) as d:
            assert d.status == 204
        assert (await create(http, srv.url, tok, photos[2], t.ticket.id)).status == 201
    finally:
        await srv.runner.cleanup()


async def test_expired_sessions_answer_410_and_lose_their_bytes(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    locs = []
    for i in range(2):
        data = noise_jpeg(seed=30 + i)
        loc = (await create(http, server.url, tok, data, t.ticket.id)).headers["Location"]
        assert (await patch(http, loc, tok, 0, data[:200])).status == 204
        locs.append(loc)
    assert len(partial_files(settings.data_dir)) == 2
    async with pool.acquire() as conn:
        await conn.execute("UPDATE upload_sessions SET expires_at = now() - interval '1 second'")
    # On access: 410 and the partial file is gone.
    assert (await head_offset(http, locs[0], tok))[0] == 410
    assert (await patch(http, locs[0], tok, 200, b"x")).status == 410
    assert len(partial_files(settings.data_dir)) == 1
    # In the background: the sweeper (run here directly) cleans the rest.
    assert await sweep_expired(server.app[UPLOADS]) == 1
    assert partial_files(settings.data_dir) == []
    assert (await head_offset(http, locs[1], tok))[0] == 410
    # A partial file whose session is gone (crash between the two steps) is swept once it is old.
    orphan = settings.data_dir / "uploads" / "no-such-session.part"
    orphan.write_bytes(b"left behind")
    assert await sweep_expired(server.app[UPLOADS]) == 0  # too young: a request might still be writing it
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    assert await sweep_expired(server.app[UPLOADS]) == 1 and not orphan.exists()


async def test_termination_deletes_partial_bytes(server: Server, world: World, pool: asyncpg.Pool,
                                                 http: aiohttp.ClientSession, settings: Settings) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(seed=40)
    loc = (await create(http, server.url, tok, data, t.ticket.id)).headers["Location"]
    assert (await patch(http, loc, tok, 0, data[:300])).status == 204
    async with http.delete(loc, headers=auth(tok)) as r:
        assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert (await head_offset(http, loc, tok))[0] == 404
    assert partial_files(settings.data_dir) == []


async def test_stalled_client_is_cut_off_and_can_resume(world: World, pool: asyncpg.Pool, db_dsn: str,
                                                        settings: Settings, http: aiohttp.ClientSession) -> None:
    srv = await start_server(settings.model_copy(update={"upload_read_timeout_seconds": 0.3}), db_dsn)
    try:
        (t,) = await make_tickets(pool, world, 1)
        tok = world.device("san-1").token
        data = noise_jpeg(300, 200, seed=41)
        loc = (await create(http, srv.url, tok, data, t.ticket.id)).headers["Location"]
        conn = await raw_patch_partial(srv.url, loc.removeprefix(srv.url), tok, 0, len(data), data[:1000], close=False)
        assert conn is not None
        status_line = await asyncio.wait_for(conn[0].readline(), 30)
        conn[1].close()
        assert b" 503 " in status_line  # the server gave up on the silent body instead of waiting forever
        assert await head_offset(http, loc, tok) == (200, 1000)
        r = await patch(http, loc, tok, 1000, data[1000:])
        assert r.status == 204 and int(r.headers["Upload-Offset"]) == len(data)
    finally:
        await srv.runner.cleanup()


async def test_attach_before_bytes_then_photo_becomes_available(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tid = t.ticket.id
    dev = world.device("san-1")
    data = noise_jpeg(seed=50)
    # What the push engine's attach_photo does: a ticket_photos row that references bytes not yet uploaded.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by) VALUES ($1, $2, 'before', now(), $3)",
            tid, sha(data), dev.device_id,
        )
        from sync_server.storage.tickets import load_tickets
        before = (await load_tickets(conn, [tid]))[tid].ticket
    assert [p.state.value for p in before.photos] == ["pending"]
    r = await upload(http, server.url, dev.token, data, tid, chunk=2048)
    assert r.status == 204
    async with pool.acquire() as conn:
        last = await conn.fetchrow("SELECT doc_json AS doc, version, holder_crew_id FROM changes WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1", tid)
        audit = await conn.fetchrow("SELECT actor_kind, action FROM audit_log WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1", tid)
    doc = json.loads(last["doc"])
    assert [p["state"] for p in doc["photos"]] == ["available"]
    assert last["version"] == before.version + 1 == doc["version"]
    assert last["holder_crew_id"] == world.crews["san-1"]
    assert (audit["actor_kind"], audit["action"]) == ("system", "photo_available")
    assert TUS  # the helper module's header constant stays in use


def _encoded(fmt: str) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.new("RGBA" if fmt == "PNG" else "RGB", (96, 64), (200, 30, 30, 255) if fmt == "PNG" else (200, 30, 30)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "media"), [("PNG", "image/png"), ("WEBP", "image/webp"), ("HEIF", "image/heic"),
                                            ("JPEG", "image/jpeg")])
async def test_supported_formats_are_accepted_by_their_bytes(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, fmt: str, media: str,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = world.device("san-1")
    data = _encoded(fmt)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                           " VALUES ($1, $2, 'after', now(), 'x')", t.ticket.id, sha(data))
    assert (await upload(http, server.url, dev.token, data, t.ticket.id)).status == 204
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT media_type, width, height FROM blobs WHERE sha256 = $1", sha(data))
    assert (row["media_type"], row["width"], row["height"]) == (media, 96, 64)
    async with http.get(f"{server.url}/v1/photos/{sha(data)}?variant=thumb", headers={"Authorization": f"Bearer {dev.token}"}) as r:
        assert r.status == 200 and Image.open(io.BytesIO(await r.read())).size == (96, 64)


async def test_empty_upload_is_refused(server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession) -> None:
    (t,) = await make_tickets(pool, world, 1)
    r = await create(http, server.url, world.device("san-1").token, b"", t.ticket.id)
    assert r.status == 415


async def test_lost_partial_bytes_restart_from_what_is_on_disk(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tok = world.device("san-1").token
    data = noise_jpeg(seed=60)
    loc = (await create(http, server.url, tok, data, t.ticket.id)).headers["Location"]
    assert (await patch(http, loc, tok, 0, data[:300])).status == 204
    (part,) = partial_files(settings.data_dir)
    part.unlink()  # e.g. the PATCH landed on a host that does not share the upload directory
    r = await patch(http, loc, tok, 300, data[300:])
    assert r.status == 409 and r.headers["Upload-Offset"] == "0"
    assert await head_offset(http, loc, tok) == (200, 0)
    r = await patch(http, loc, tok, 0, data)
    assert r.status == 204 and int(r.headers["Upload-Offset"]) == len(data)
    assert await _blob_count(pool, sha(data)) == 1


async def test_racing_uploads_of_one_photo_publish_it_once(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    data = noise_jpeg(300, 200, seed=70)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                           " VALUES ($1, $2, 'before', now(), 'x')", t.ticket.id, sha(data))
    devs = [world.device("san-1", 0), world.device("san-1", 1)]
    locs = [(await create(http, server.url, d.token, data, t.ticket.id)).headers["Location"] for d in devs]
    results = await asyncio.gather(*(patch(http, loc, d.token, 0, data) for loc, d in zip(locs, devs)))
    assert [r.status for r in results] == [204, 204]
    assert await _blob_count(pool, sha(data)) == 1 and len(stored_originals(settings.data_dir)) == 1
    async with pool.acquire() as conn:
        flips = await conn.fetchval("SELECT count(*) FROM audit_log WHERE ticket_id = $1 AND action = 'photo_available'",
                                    t.ticket.id)
    assert flips == 1

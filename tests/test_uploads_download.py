"""Photo downloads: scope authorisation, derivatives without EXIF GPS, ETag/304, Range, the supervisor photo list."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from PIL import Image

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_uploads_support import noise_jpeg, sha, upload

GPS_IFD = 0x8825


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _attach(pool: asyncpg.Pool, ticket_id: object, digest: str, by: str, kind: str = "before") -> None:
    """Stand-in for the push engine's attach_photo (not part of this feature)."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by) VALUES ($1, $2, $3, now(), $4)",
            ticket_id, digest, kind, by,
        )


async def _get(http: aiohttp.ClientSession, url: str, token: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    async with http.get(url, headers={"Authorization": f"Bearer {token}", **headers}) as r:
        return r.status, await r.read(), r.headers.copy()  # type: ignore[return-value]


@pytest.fixture
async def photo(server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession) -> tuple[object, bytes]:
    """A 2600x1200 phone-like JPEG with GPS EXIF, uploaded by san-1 and attached to its ticket."""
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    data = noise_jpeg(2600, 1200, seed=99, gps=True, quality=60)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD)  # the original really carries GPS
    dev = world.device("san-1")
    await _attach(pool, t.ticket.id, sha(data), dev.device_id)
    assert (await upload(http, server.url, dev.token, data, t.ticket.id)).status == 204
    return t.ticket.id, data


async def test_derivatives_are_small_and_have_no_gps(server: Server, world: World, http: aiohttp.ClientSession,
                                                     photo: tuple[object, bytes]) -> None:
    _, data = photo
    tok = world.device("san-1").token
    for variant, limit in (("thumb", 320), ("display", 2048)):
        status, body, headers = await _get(http, f"{server.url}/v1/photos/{sha(data)}?variant={variant}", tok)
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        img = Image.open(io.BytesIO(body))
        assert max(img.size) <= limit and max(img.size) >= limit * 0.9
        exif = img.getexif()
        assert not exif.get_ifd(GPS_IFD) and GPS_IFD not in exif
        assert b"Exif" not in body[:4096]
    # The original is evidence: kept byte for byte, GPS included, and only for supervisors.
    status, body, _ = await _get(http, f"{server.url}/v1/photos/{sha(data)}?variant=original", world.supervisors["sanitation"])
    assert status == 200 and body == data
    status, _, _ = await _get(http, f"{server.url}/v1/photos/{sha(data)}?variant=original", tok)
    assert status == 403


async def test_download_scope(server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession,
                              photo: tuple[object, bytes]) -> None:
    _, data = photo
    url = f"{server.url}/v1/photos/{sha(data)}?variant=thumb"
    assert (await _get(http, url, world.device("san-1", 1).token))[0] == 200  # same crew, other device
    assert (await _get(http, url, world.device("san-2").token))[0] == 404  # other crew of the department
    assert (await _get(http, url, world.device("ss-1").token))[0] == 404  # other department
    assert (await _get(http, url, world.supervisors["street_services"]))[0] == 404
    assert (await _get(http, url, world.supervisors["sanitation"]))[0] == 200
    assert (await _get(http, url, world.admin))[0] == 200
    assert (await _get(http, f"{server.url}/v1/photos/{'0' * 64}", world.admin))[0] == 404
    assert (await _get(http, f"{server.url}/v1/photos/{sha(data)}?variant=huge", world.admin))[0] == 422
    async with http.get(url) as r:
        assert r.status == 401
    async with pool.acquire() as conn:
        await conn.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", world.device("san-1").device_id)
    assert (await _get(http, url, world.device("san-1").token))[0] == 401


async def test_etag_and_range(server: Server, world: World, http: aiohttp.ClientSession, photo: tuple[object, bytes]) -> None:
    _, data = photo
    sup = world.supervisors["sanitation"]
    for variant in ("original", "display"):
        url = f"{server.url}/v1/photos/{sha(data)}?variant={variant}"
        status, full, headers = await _get(http, url, sup)
        etag = headers["ETag"]
        assert status == 200 and sha(data) in etag
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, body, _ = await _get(http, url, sup, **{"If-None-Match": etag})
        assert status == 304 and body == b""
        status, body, headers = await _get(http, url, sup, Range="bytes=100-199")
        assert status == 206 and body == full[100:200]
        assert headers["Content-Range"] == f"bytes 100-199/{len(full)}"
        assert headers["ETag"] == etag


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_supervisor_lists_ticket_photos(server: Server, world: World, pool: asyncpg.Pool,
                                              http: aiohttp.ClientSession, photo: tuple[object, bytes]) -> None:
    ticket_id, data = photo
    pending = sha(b"bytes not uploaded yet")
    await _attach(pool, ticket_id, pending, world.device("san-1").device_id, kind="after")
    status, body, _ = await _get(http, f"{server.url}/v1/tickets/{ticket_id}/photos", world.supervisors["sanitation"])
    assert status == 200
    import json

    photos = {p["sha256"]: p for p in json.loads(body)["photos"]}
    assert photos[sha(data)]["state"] == "available" and photos[sha(data)]["size"] == len(data)
    assert photos[sha(data)]["width"] == 2600
    assert photos[pending]["state"] == "pending" and photos[pending]["size"] is None
    assert (await _get(http, f"{server.url}/v1/tickets/{ticket_id}/photos", world.supervisors["street_services"]))[0] == 404
    assert (await _get(http, f"{server.url}/v1/tickets/{ticket_id}/photos", world.device("san-1").token))[0] == 403
    assert (await _get(http, f"{server.url}/v1/tickets/{ticket_id}/photos", world.admin))[0] == 200

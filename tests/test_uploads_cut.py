"""A PATCH cut after its last byte: the photo must become available, never sit "complete" by offset yet pending.

Found by the fleet simulator under load: a client that timed out (or lost signal) after sending the last chunk but
before the server read the end of the request left a session at offset == length that was never verified. HEAD
answered "every byte is here", so the client stopped, and the ticket showed the photo pending forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from sync_server.settings import Settings
from sync_server.storage.tickets import load_tickets
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_uploads_support import create, head_offset, noise_jpeg, partial_files, sha


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _send_chunked_without_end(url: str, path: str, token: str, offset: int, body: bytes) -> asyncio.StreamWriter:
    """A streaming client (chunked body) whose connection drops after the last data chunk, before the final 0-chunk."""
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n")
    await writer.drain()
    return writer


async def test_patch_cut_after_last_byte_makes_the_photo_available(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings,
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tid = t.ticket.id
    dev = world.device("san-1")
    data = noise_jpeg(200, 150, seed=81)
    async with pool.acquire() as conn:  # the attach_photo the device pushed first (pending until the bytes arrive)
        await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                           " VALUES ($1, $2, 'before', now(), $3)", tid, sha(data), dev.device_id)
    location = (await create(http, server.url, dev.token, data, tid)).headers["Location"]
    writer = await _send_chunked_without_end(server.url, location.removeprefix(server.url), dev.token, 0, data)
    for _ in range(500):  # the server has every byte on disk and is waiting for the end of the body
        parts = partial_files(settings.data_dir)
        if parts and parts[0].stat().st_size == len(data):
            break
        await asyncio.sleep(0.01)
    writer.close()  # signal lost
    offset = 0
    for _ in range(300):  # the server settles the cut request asynchronously
        status, off = await head_offset(http, location, dev.token)
        assert status == 200
        offset = off or 0
        if offset:
            break
        await asyncio.sleep(0.02)
    # A tus client stops once HEAD reports the whole length: from then on the photo must be available.
    assert offset == len(data)
    async with pool.acquire() as conn:
        ticket = (await load_tickets(conn, [tid]))[tid].ticket
        state = await conn.fetchval("SELECT state FROM upload_sessions WHERE id = $1", location.rsplit("/", 1)[1])
        blobs = await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", sha(data))
    assert [(p.sha256, p.state.value) for p in ticket.photos] == [(sha(data), "available")]
    assert (state, blobs) == ("complete", 1)
    async with http.get(f"{server.url}/v1/photos/{sha(data)}?variant=thumb",  # the crew sees it (originals: staff)
                        headers={"Authorization": f"Bearer {dev.token}"}) as r:
        assert r.status == 200 and r.content_type == "image/jpeg"

"""Interoperability: the real tuspy client from PyPI uploads a photo to FieldSync unmodified (its blocking
uploader runs in a thread against the real server)."""

from __future__ import annotations

import asyncio
import io

import asyncpg
from tusclient import client as tus_client

from sync_server.storage.tickets import load_tickets
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_uploads_support import noise_jpeg, photo_meta, sha


def _tuspy_upload(url: str, token: str, data: bytes, meta: dict[str, str], chunk: int) -> str:
    c = tus_client.TusClient(url + "/v1/uploads", headers={"Authorization": f"Bearer {token}"})
    up = c.uploader(file_stream=io.BytesIO(data), chunk_size=chunk, metadata=meta, upload_checksum=True)
    up.upload()
    assert up.offset == len(data)
    return str(up.url)


async def test_tuspy_uploads_a_photo(server: Server, world: World, pool: asyncpg.Pool) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = world.device("san-1")
    data = noise_jpeg(500, 400, seed=123)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                           " VALUES ($1, $2, 'before', now(), $3)", t.ticket.id, sha(data), dev.device_id)
    meta = photo_meta(data, t.ticket.id)
    url = await asyncio.get_running_loop().run_in_executor(
        None, _tuspy_upload, server.url, dev.token, data, meta, 16 * 1024)
    assert url.startswith(server.url + "/v1/uploads/")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT size FROM blobs WHERE sha256 = $1", sha(data)) == len(data)
        ticket = (await load_tickets(conn, [t.ticket.id]))[t.ticket.id].ticket
    assert [p.state.value for p in ticket.photos] == ["available"]
    # The same photo again: tuspy's creation is answered complete at once, and it sends no bytes.
    url2 = await asyncio.get_running_loop().run_in_executor(
        None, _tuspy_upload, server.url, world.device("san-1", 1).token, data, meta, 16 * 1024)
    assert url2 != url
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blobs") == 1
        assert await conn.fetchval("SELECT state FROM upload_sessions WHERE id = $1", url2.rsplit("/", 1)[1]) == "complete"

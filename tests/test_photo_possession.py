"""Knowing a photo's SHA-256 is not possession: another crew must send the bytes before it sees the photo (I3, I8).

Crew A (san-1) uploads a photo. Crew B (san-2, same department) learns the hash and tries the shortcuts: a tus
creation for the hash (must start at offset 0, not complete), an attach by hash alone (must stay pending, and
B's devices get 404 for the photo). Crew A's own second ticket still deduplicates. Once B sends the bytes, B's
ticket shows the photo too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient
from tests.test_uploads_support import create, head_offset, noise_jpeg, patch, sha, upload


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _attach(dev: DeviceClient, ticket_id: Any, data: bytes) -> dict[str, Any]:
    return dev.mutation("attach_photo", ticket_id, {"sha256": sha(data), "kind": "after",
                                                    "taken_at": datetime.now(timezone.utc).isoformat()})


def _state(ticket: Any, data: bytes) -> str:
    (photo,) = [p for p in ticket.photos if p.sha256 == sha(data)]
    return photo.state.value


async def _thumb(http: aiohttp.ClientSession, url: str, token: str, data: bytes) -> int:
    async with http.get(f"{url}/v1/photos/{sha(data)}?variant=thumb", headers={"Authorization": f"Bearer {token}"}) as r:
        await r.read()
        return r.status


async def test_hash_alone_is_not_possession(server: Server, pool: asyncpg.Pool, world: World,
                                            http: aiohttp.ClientSession) -> None:
    a1, a2 = await make_tickets(pool, world, 2, crew="san-1")
    (b1,) = await make_tickets(pool, world, 1, crew="san-2")
    dev_a = DeviceClient(http, server.url, world.device("san-1").token)
    dev_b = DeviceClient(http, server.url, world.device("san-2").token)
    await dev_a.pull()
    await dev_b.pull()
    data = noise_jpeg(200, 150, seed=1414)

    # Crew A uploads and attaches its photo: available to A.
    assert (await upload(http, server.url, dev_a.token, data, a1.ticket.id)).status == 204
    (ra,) = (await dev_a.push([_attach(dev_a, a1.ticket.id, data)])).results
    assert _state(ra.ticket, data) == "available"

    # Crew B creates an upload for A's hash: it must send the bytes, from offset 0.
    created = await create(http, server.url, dev_b.token, data, b1.ticket.id)
    assert created.status == 201 and created.headers["Upload-Offset"] == "0"
    location = created.headers["Location"]
    assert await head_offset(http, location, dev_b.token) == (200, 0)  # and HEAD does not complete it either

    # Attaching by hash alone is accepted (sync never waits for bytes) but stays pending, and shows B nothing.
    (rb,) = (await dev_b.push([_attach(dev_b, b1.ticket.id, data)])).results
    assert rb.status.value == "applied" and _state(rb.ticket, data) == "pending"
    assert await _thumb(http, server.url, dev_b.token, data) == 404
    async with http.get(f"{server.url}/v1/tickets/{b1.ticket.id}/photos",
                        headers={"Authorization": f"Bearer {world.supervisors['sanitation']}"}) as r:
        listed = (await r.json())["photos"]
    assert [(p["sha256"], p["state"], p["size"]) for p in listed] == [(sha(data), "pending", None)]

    # Crew A's second ticket: the crew already has these bytes, so creation completes at once and the attach shows.
    again = await create(http, server.url, dev_a.token, data, a2.ticket.id)
    assert again.status == 201 and again.headers["Upload-Offset"] == str(len(data))
    (ra2,) = (await dev_a.push([_attach(dev_a, a2.ticket.id, data)])).results
    assert _state(ra2.ticket, data) == "available"

    # Crew B sends the bytes: now it has proved possession, and its ticket shows the photo on the next pull.
    done = await patch(http, location, dev_b.token, 0, data)
    assert done.status == 204 and done.headers["Upload-Offset"] == str(len(data))
    await dev_b.pull()
    assert _state(dev_b.replica.tickets[b1.ticket.id], data) == "available"
    assert await _thumb(http, server.url, dev_b.token, data) == 200
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", sha(data)) == 1  # stored once

"""A photo attached as a late field report still arrives (I5): the crew that lost the ticket may upload the bytes it
attached, and the photo becomes available to the supervisor; a crew that never attached it still gets 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient
from tests.test_uploads_support import create, noise_jpeg, sha, upload


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_photo_of_a_late_report_is_uploaded_and_becomes_available(server: Server, pool: asyncpg.Pool, world: World,
                                                                        http: aiohttp.ClientSession) -> None:
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    tid = t.ticket.id
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    sup = {"Authorization": f"Bearer {world.supervisors['sanitation']}"}
    # The office moves the ticket to san-2 while san-1's phone is offline with a photo of the finished job.
    async with http.post(f"{server.url}/v1/tickets/{tid}/assign", json={"crew": "san-2"}, headers=sup) as r:
        assert r.status == 200, await r.text()
    data = noise_jpeg(160, 120, seed=4242)
    attach = dev.mutation("attach_photo", tid, {"sha256": sha(data), "kind": "after",
                                                "taken_at": datetime.now(timezone.utc).isoformat()})
    (res,) = (await dev.push([attach])).results
    assert (res.status.value, res.reason.value if res.reason else None) == ("merged", "late_field_report")

    # A crew that never attached this photo to the ticket cannot upload to it (the ticket does not exist for it).
    other = world.device("ss-1").token
    refused = await create(http, server.url, other, data, tid)
    assert refused.status == 404

    # The phone that attached it uploads the bytes (on the old code: 404, and the photo stayed pending forever).
    assert (await upload(http, server.url, dev.token, data, tid)).status == 204
    async with http.get(f"{server.url}/v1/tickets/{tid}/photos", headers=sup) as r:
        listed = (await r.json())["photos"]
    assert [(p["sha256"], p["state"]) for p in listed] == [(sha(data), "available")]
    assert await pool.fetchval("SELECT verified FROM ticket_photos WHERE ticket_id = $1", tid) is True

"""Possession through a held ticket is judged with the holders the whole push leaves: a crew that holds a ticket
showing a photo possesses it, and one that hands that ticket back in the same push does not, whatever the order of
the two mutations (the push decides an attached photo's state once its fold is done, under the photo's lock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient
from tests.test_uploads_support import noise_jpeg, sha, upload


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _attach(dev: DeviceClient, ticket_id: Any, data: bytes) -> dict[str, Any]:
    return dev.mutation("attach_photo", ticket_id, {"sha256": sha(data), "kind": "before",
                                                    "taken_at": datetime.now(timezone.utc).isoformat()})


async def _states(pool: asyncpg.Pool, data: bytes) -> dict[Any, bool]:
    async with pool.acquire() as conn:
        return {r["ticket_id"]: r["verified"] for r in await conn.fetch(
            "SELECT ticket_id, verified FROM ticket_photos WHERE sha256 = $1", sha(data))}


async def test_possession_through_a_held_ticket_ends_with_the_push_that_hands_it_back(
        server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession) -> None:
    (shown,) = await make_tickets(pool, world, 1, crew="san-1")
    b1, b2 = await make_tickets(pool, world, 2, crew="san-2")
    dev_a = DeviceClient(http, server.url, world.device("san-1").token)
    dev_b = DeviceClient(http, server.url, world.device("san-2").token)
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await dev_a.pull()
    data = noise_jpeg(120, 90, seed=2024)

    # Crew A delivers the bytes and shows the photo on its ticket; the office then gives that ticket to crew B.
    assert (await upload(http, server.url, dev_a.token, data, shown.ticket.id)).status == 204
    (ra,) = (await dev_a.push([_attach(dev_a, shown.ticket.id, data)])).results
    assert ra.status.value == "applied"
    await sup.assign(shown.ticket.id, "san-2")
    await dev_b.pull()

    # B never sent the bytes, but holds a ticket showing them. Attach first, hand the showing ticket back second:
    # after this push B holds nothing showing the photo, so its attach stays pending.
    attach, decline = (await dev_b.push([_attach(dev_b, b2.ticket.id, data),
                                         dev_b.mutation("decline", shown.ticket.id, {"reason_code": "wrong_area"})])).results
    assert (attach.status.value, decline.status.value) == ("applied", "applied")
    assert [p.state.value for p in attach.ticket.photos] == ["pending"]
    assert decline.removed is not None and decline.removed.value == "declined"

    # Given the showing ticket again, B's next attach shows the photo at once (possession through a held ticket).
    await sup.assign(shown.ticket.id, "san-2")
    (rb1,) = (await dev_b.push([_attach(dev_b, b1.ticket.id, data)])).results
    assert rb1.status.value == "applied"
    assert [p.state.value for p in rb1.ticket.photos] == ["available"]
    assert await _states(pool, data) == {shown.ticket.id: True, b1.ticket.id: True, b2.ticket.id: False}

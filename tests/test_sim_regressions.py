"""Server bugs the simulator found, each reduced to its smallest reproduction (xfail until fixed, strictly)."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from tests.conftest import Server
from tests.factories import World
from tests.syncclient import DeviceClient


@pytest.mark.xfail(strict=True, reason="push._fold: records[m.ticket_id] KeyError for a ticket self-reported earlier "
                                       "in the same batch -> 500 on every retry, the outbox is blocked for good (I6)")
async def test_photo_on_a_ticket_self_reported_in_the_same_batch(server: Server, world: World) -> None:
    # A crew paints over graffiti offline, reports it and photographs it: both taps reach the server in one push.
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        tid = uuid.uuid4()
        report = dev.mutation("self_report", tid, {
            "service_type": "Graffiti Removal", "address": "700 S Main St, Los Angeles", "lat": 34.042, "lon": -118.253,
            "resolution_code": "painted_over"})
        photo = dev.mutation("attach_photo", tid, {"sha256": "ab" * 32, "kind": "after",
                                                   "taken_at": "2020-01-02T17:05:00Z"})
        status, resp = await dev.push_raw([report, photo])
        assert status == 200, resp
        assert [r.status for r in resp.results] == ["applied", "applied"]

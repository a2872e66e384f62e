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


@pytest.mark.xfail(strict=True, reason="a note id already used on another ticket is answered `applied` but the INSERT ... "
                                       "ON CONFLICT (id) DO NOTHING drops it: an applied mutation with no effect (I5)")
async def test_note_id_reused_on_another_ticket_is_never_silently_dropped(server: Server, world: World, pool) -> None:
    from tests.factories import make_tickets

    first, second = await make_tickets(pool, world, 2)
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        note_id = str(uuid.uuid4())
        await dev.push([dev.mutation("add_note", first.ticket.id, {"note_id": note_id, "text": "first"})])
        resp = await dev.push([dev.mutation("add_note", second.ticket.id, {"note_id": note_id, "text": "second"})])
        (result,) = resp.results
        if result.status == "applied":  # then the note must really be there
            assert result.ticket is not None and note_id in {str(n.id) for n in result.ticket.notes}
        else:  # or the device is told, with a typed reason (SPEC §5: rejected + already_exists)
            assert result.status == "rejected" and result.reason == "already_exists"

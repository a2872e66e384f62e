"""Server bugs the simulator found, each reduced to its smallest reproduction: regression tests once fixed, strict xfail until then."""

from __future__ import annotations

import uuid

import aiohttp

from tests.conftest import Server
from tests.factories import World
from tests.syncclient import DeviceClient


async def test_photo_on_a_ticket_self_reported_in_the_same_batch(server: Server, world: World) -> None:
    # Found by the simulator (fixed in ced297f): push._fold raised KeyError for a ticket self-reported earlier in the
    # same batch, so every retry got a 500 and the outbox was blocked for good (I6).
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


async def test_note_id_reused_on_another_ticket_is_never_silently_dropped(server: Server, world: World, pool) -> None:
    from tests.factories import make_tickets

    # Found by the simulator: the reused id was answered `applied` while ON CONFLICT (id) DO NOTHING dropped the
    # note (I5). Fixed: the push refuses it with `already_exists`.
    first, second = await make_tickets(pool, world, 2)
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        note_id = str(uuid.uuid4())
        await dev.push([dev.mutation("add_note", first.ticket.id, {"note_id": note_id, "text": "first"})])
        resp = await dev.push([dev.mutation("add_note", second.ticket.id, {"note_id": note_id, "text": "second"})])
        (result,) = resp.results
        assert (result.status, result.reason) == ("rejected", "already_exists")  # told, with a typed reason
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT text FROM ticket_notes WHERE id = $1", uuid.UUID(note_id)) == "first"


async def test_lost_creation_answers_do_not_lock_a_device_out_of_uploads(server: Server, world: World, pool) -> None:
    import base64
    import hashlib

    from clients.sim.photos import png_bytes
    from tests.factories import make_tickets

    (rec,) = await make_tickets(pool, world, 1)
    data = png_bytes(1)
    meta = {"sha256": hashlib.sha256(data).hexdigest(), "ticket_id": str(rec.ticket.id), "kind": "after",
            "taken_at": "2020-01-02T17:05:00Z"}
    headers = {"Authorization": f"Bearer {world.device('san-1').token}", "FieldSync-Protocol": "1",
               "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
               "Upload-Metadata": ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())}
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(6):  # the phone never saw the Location of the earlier tries: it can only create again
            async with http.post(server.url + "/v1/uploads", headers=headers) as r:
                statuses.append(r.status)
    assert statuses == [201] * 6
    async with pool.acquire() as conn:  # fixed: a blind retry gets the open session back, not a new one
        assert await conn.fetchval("SELECT count(*) FROM upload_sessions") == 1

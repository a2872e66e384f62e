"""Field scenarios from the conflict rules (docs/architecture.md), end to end over HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_supervisor_cancel_vs_crew_complete(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    done = dev.mutation("complete", t.ticket.id, {"resolution_code": "collected"})
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.cancel(t.ticket.id)
    await dev.pull()
    assert t.ticket.id not in dev.replica.tickets  # removal reached the phone...
    (r,) = (await dev.push([done])).results  # ...but the pickup had already happened
    assert (r.status, r.reason) == ("merged", "late_field_report")
    assert r.ticket is not None and r.ticket.status == "completed"  # a completed pickup stays completed
    (c,) = await sup.conflicts()
    assert c["kind"] == "late_field_report" and c["discarded"] == "cancelled"
    await dev.pull()
    assert dev.replica.tickets[t.ticket.id].status == "completed" and dev.replica.converged()


async def test_duplicate_vs_crew_complete_keeps_duplicate(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    a, b = await make_tickets(pool, world, 2)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.duplicate(a.ticket.id, b.ticket.id)
    (r,) = (await dev.push([dev.mutation("complete", a.ticket.id, {"resolution_code": "collected"})])).results
    assert (r.status, r.reason, r.removed) == ("merged", "late_field_report", "duplicate")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM tickets WHERE id = $1", a.ticket.id) == "duplicate"
    (c,) = await sup.conflicts()
    assert c["discarded"]["op"] == "complete"  # what the crew reported is kept for review


async def test_two_devices_edit_same_field_offline(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    a = DeviceClient(http, server.url, world.device("san-1", 0).token)
    b = DeviceClient(http, server.url, world.device("san-1", 1).token)
    await a.pull(), await b.pull()
    now = datetime.now(timezone.utc)
    ma = a.mutation("set_items", t.ticket.id, {"items": [{"item_type": "mattress", "count": 2}]})
    mb = b.mutation("set_items", t.ticket.id, {"items": [{"item_type": "mattress", "count": 3}]})
    ma["device_time"] = (now + timedelta(minutes=1)).isoformat()  # A edited later in wall time, but syncs first
    mb["device_time"] = now.isoformat()
    ra = (await a.push([ma])).results[0]
    rb = (await b.push([mb])).results[0]
    assert ra.status == "applied" and rb.status == "merged" and rb.reason == "conflict_resolved"
    assert (rb.conflicts[0].kept, rb.conflicts[0].discarded) == (2, 3)
    assert rb.ticket is not None and rb.ticket.items[0].count == 2
    await a.pull(), await b.pull()
    assert a.replica.tickets == b.replica.tickets and a.replica.converged()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM conflicts WHERE kind = 'field_conflict'") == 1


async def test_self_report_retry_never_duplicates(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    tid = uuid.uuid4()
    args = {"service_type": "Graffiti Removal", "address": "200 N SPRING ST, 90012", "lat": 34.05, "lon": -118.24,
            "resolution_code": "painted_over", "note": "tagging on utility box"}
    first = (await dev.push([dev.mutation("self_report", tid, args)])).results[0]
    assert first.status == "applied" and first.ticket is not None and first.ticket.status == "completed"
    # the app lost its outbox position and re-queued the create under a new seq
    again = (await dev.push([dev.mutation("self_report", tid, args)])).results[0]
    assert again.status == "duplicate"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tickets WHERE id = $1", tid) == 1
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = $1", tid) == 1
    await dev.pull()
    assert dev.replica.tickets[tid].created_by_device == world.device("san-1").device_id and dev.replica.converged()


async def test_self_report_outside_department_is_rejected(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    args = {"service_type": "Pothole Repair", "address": "1 MAIN ST", "lat": 34.0, "lon": -118.0, "resolution_code": "filled"}
    (r,) = (await dev.push([dev.mutation("self_report", uuid.uuid4(), args)])).results
    assert (r.status, r.reason) == ("rejected", "invalid_args")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tickets") == 0


async def test_revoked_device_cannot_push_or_pull(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
    await sup.call("POST", f"/v1/devices/{world.device('san-1').device_id}/revoke", {})
    status, err = await dev.push_raw([dev.mutation("start", t.ticket.id)])
    assert status == 401 and err["error"]["code"] == "token_revoked"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM tickets WHERE id = $1", t.ticket.id) == "assigned"


async def test_stale_transition_from_second_device(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    (t,) = await make_tickets(pool, world, 1)
    a = DeviceClient(http, server.url, world.device("san-1", 0).token)
    b = DeviceClient(http, server.url, world.device("san-1", 1).token)
    await a.pull(), await b.pull()
    await a.push([a.mutation("start", t.ticket.id)])
    (r,) = (await b.push([b.mutation("acknowledge", t.ticket.id)])).results
    assert (r.status, r.reason) == ("merged", "stale_transition") and r.ticket.status == "in_progress"


async def test_self_report_then_more_work_in_the_same_batch(server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    """A phone that self-reports and then adds a note and a photo before syncing sends it all in one push."""
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    tid = uuid.uuid4()
    args = {"service_type": "Graffiti Removal", "address": "5 N MAIN ST", "lat": 34.05, "lon": -118.24,
            "resolution_code": "painted_over"}
    res = await dev.push([dev.mutation("self_report", tid, args),
                          dev.mutation("add_note", tid, {"note_id": str(uuid.uuid4()), "text": "second coat"}),
                          dev.mutation("set_items", tid, {"items": [{"item_type": "sq_ft", "count": 40}]})])
    assert [r.status for r in res.results] == ["applied"] * 3
    await dev.pull()
    t = dev.replica.tickets[tid]
    assert [n.text for n in t.notes] == ["second coat"] and t.items[0].count == 40 and dev.replica.converged()

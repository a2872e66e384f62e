"""Migration 0017 dropped three foreign keys the push paid for row by row (results -> devices, notes and item lines ->
tickets): what they guaranteed must still hold. Parents cannot be deleted or renumbered from under their children
(triggers, same error code), and `fieldsync check` finds a child without its parent (every test database is also
checked for them at teardown, tests/conftest.py)."""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import pytest

from sync_server.storage import integrity
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_device_with_results_and_a_ticket_with_notes_or_items_cannot_be_deleted_or_renumbered(
        server: Server, pool: asyncpg.Pool, world: World, http) -> None:
    noted, itemised = (r.ticket.id for r in await make_tickets(pool, world, 2))
    device = world.device("san-1")
    dev = DeviceClient(http, server.url, device.token)
    await dev.pull()
    resp = await dev.push([
        dev.mutation("add_note", noted, {"note_id": str(uuid.uuid4()), "text": "gate code 1234"}),
        dev.mutation("set_items", itemised, {"items": [{"item_type": "mattress", "count": 2}]}),
    ])
    assert [r.status for r in resp.results] == ["applied", "applied"]
    async with pool.acquire() as conn:
        for sql, args, message in [
            ("DELETE FROM devices WHERE id = $1", (device.device_id,), "still has stored push results"),
            ("UPDATE devices SET id = 'dev-renamed' WHERE id = $1", (device.device_id,), "still has stored push results"),
            ("DELETE FROM tickets WHERE id = $1", (noted,), "still has notes or item lines"),
            ("DELETE FROM tickets WHERE id = $1", (itemised,), "still has notes or item lines"),
            ("UPDATE tickets SET id = $2 WHERE id = $1", (itemised, uuid.uuid4()), "still has notes or item lines"),
        ]:
            with pytest.raises(asyncpg.ForeignKeyViolationError, match=message):
                await conn.execute(sql, *args)
        assert await conn.fetchval("SELECT count(*) FROM mutation_results WHERE device_id = $1", device.device_id) == 2
        assert await conn.fetchval("SELECT count(*) FROM tickets WHERE id = ANY($1::uuid[])", [noted, itemised]) == 2
        # a device that never pushed has nothing to orphan: deleting it is the database's business, as before
        other = world.device("san-1", 1)
        assert await conn.execute("DELETE FROM devices WHERE id = $1", other.device_id) == "DELETE 1"


async def test_check_reports_results_notes_and_item_lines_without_their_parent(pool: asyncpg.Pool, world: World) -> None:
    (ticket,) = (r.ticket.id for r in await make_tickets(pool, world, 1))
    gone = uuid.uuid4()
    async with pool.acquire() as conn:
        assert await integrity.orphan_children(conn, 10) == []
        tx = conn.transaction()
        await tx.start()
        try:  # rows written around the push, as only hand-made SQL could: rolled back before the teardown check
            await conn.execute("INSERT INTO mutation_results (device_id, seq, op, status, result, server_version)"
                               " VALUES ('dev-gone', 1, 'start', 'applied', '{}', 1)")
            await conn.execute("INSERT INTO ticket_notes (id, ticket_id, text, author) VALUES ($1, $2, 'x', 'd')",
                               uuid.uuid4(), gone)
            await conn.execute("INSERT INTO ticket_items (ticket_id, item_type, count) VALUES ($1, 'sofa', 1), ($2, 'tv', 1)",
                               gone, ticket)
            found = sorted(await integrity.orphan_children(conn, 10))
        finally:
            await tx.rollback()
    assert found == sorted([("result_without_device", "dev-gone"), ("note_without_ticket", str(gone)),
                            ("item_without_ticket", str(gone))])


async def test_a_push_writes_its_crews_holding_row_only_when_it_is_missing(server: Server, pool: asyncpg.Pool,
                                                                          world: World, http) -> None:
    # the push skips the (ticket, crew) holding rows it read under the tickets' locks (I5 history is never deleted),
    # so a row lost to hand-made SQL must come back with the crew's next push, not stay missing
    kept, lost = (r.ticket.id for r in await make_tickets(pool, world, 2))
    crew = world.crews["san-1"]
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT first_held_at FROM ticket_holders WHERE ticket_id = $1 AND crew_id = $2",
                                     kept, crew)
        await conn.execute("DELETE FROM ticket_holders WHERE ticket_id = $1", lost)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    resp = await dev.push([dev.mutation("set_items", t, {"items": [{"item_type": "sofa", "count": 1}]}) for t in (kept, lost)])
    assert [r.status for r in resp.results] == ["applied", "applied"]
    async with pool.acquire() as conn:
        rows = {r["ticket_id"]: r["first_held_at"] for r in await conn.fetch(
            "SELECT ticket_id, first_held_at FROM ticket_holders WHERE crew_id = $1 AND ticket_id = ANY($2::uuid[])",
            crew, [kept, lost])}
    assert set(rows) == {kept, lost}
    assert rows[kept] == before and rows[lost] > before


@pytest.mark.rows_edited_by_hand  # the update is refused; nothing is left edited
async def test_a_held_ticket_cannot_name_a_crew_that_does_not_exist(pool: asyncpg.Pool, world: World) -> None:
    # holder_crew_id (generated: crew_id or NULL) lost its own foreign key in 0020; crew_id's covers it
    (ticket,) = (r.ticket.id for r in await make_tickets(pool, world, 1))
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="tickets_crew_id_fkey"):
            await conn.execute("UPDATE tickets SET crew_id = 999999, status = 'assigned' WHERE id = $1", ticket)
        assert await conn.fetchval("SELECT holder_crew_id FROM tickets WHERE id = $1", ticket) == world.crews["san-1"]

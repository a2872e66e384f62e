"""The holder rule (I3) exists once, as the generated column tickets.holder_crew_id: pinned here, status by status, to
the domain function and protocol's status set against one hand-written table, so neither side can drift."""

from __future__ import annotations

import json

import asyncpg
import pytest

from protocol import HELD_STATUSES, TicketStatus
from sync_server.domain.states import holder
from sync_server.engine.intake import NewTicket, insert_ticket_rows
from sync_server.storage import push_sql as store
from sync_server.storage.tickets import ChangeColumns, update_tickets
from tests.factories import World

# Does the assigned crew's devices hold a ticket in this status? Written by hand from SPEC §2 (finished field work is
# kept until a supervisor closes it), not read from the code under test.
HELD_BY_HAND: dict[str, bool] = {
    "unassigned": False,
    "assigned": True,
    "acknowledged": True,
    "in_progress": True,
    "paused": True,
    "reopened": True,
    "completed": True,
    "unable_to_complete": True,
    "closed": False,
    "cancelled": False,
    "duplicate": False,
}


def test_the_table_covers_every_status() -> None:
    assert set(HELD_BY_HAND) == {s.value for s in TicketStatus}


@pytest.mark.parametrize("status", sorted(HELD_BY_HAND))
def test_domain_holder_matches_the_table(status: str) -> None:
    held = HELD_BY_HAND[status]
    assert holder(TicketStatus(status), 7) == (7 if held else None)
    assert holder(TicketStatus(status), 0) == (0 if held else None)  # crew id 0 is a crew, not "nobody"
    assert holder(TicketStatus(status), None) is None
    assert (status in HELD_STATUSES) is held  # protocol's set, which the simulator and clients read


async def _holder(conn: asyncpg.Connection, ticket_id: object) -> object:
    return await conn.fetchval("SELECT holder_crew_id FROM tickets WHERE id = $1", ticket_id)


async def _push_writes(conn: asyncpg.Connection, ticket_id: object, status: str, crew: int) -> None:
    """The push's one write statement (storage.push_sql.apply_push) setting one ticket's status and crew, no device."""
    dept = await conn.fetchval("SELECT department_id FROM tickets WHERE id = $1", ticket_id)
    log_holder = holder(TicketStatus(status), crew)
    write = store.TicketWrite(ticket_id, status, crew, None, None, json.dumps({}), 9, log_holder)  # type: ignore[arg-type]
    log = ChangeColumns([ticket_id], [dept], [log_holder], [None], [None], [9], ["{}"], [bytes(32)], [b"\x80"], [""])  # type: ignore[list-item]
    await store.apply_push(conn, "no-such-device", 0, [write], log, [], [], [], [], [])


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_postgresql_computes_the_same_holder_for_every_status(pool: asyncpg.Pool, world: World) -> None:
    """Insert, supervisor-style update and the push's write statement: each write path gets the table's holder."""
    crew, other = world.crews["san-1"], world.crews["san-2"]
    async with pool.acquire() as conn, conn.transaction():
        for status, held in HELD_BY_HAND.items():
            new = NewTicket(service_type="Bulky Items", address="1 S MAIN ST, 90012", crew_id=crew,
                            status=TicketStatus(status))
            await insert_ticket_rows(conn, [new])
            assert await _holder(conn, new.id) == (crew if held else None), f"insert {status}"

            # supervisor path: start from a held status with the other crew, move to `status` and crew together
            await update_tickets(conn, [new.id], {"status": "assigned", "crew_id": other})
            assert await _holder(conn, new.id) == other
            await update_tickets(conn, [new.id], {"status": status, "crew_id": crew})
            assert await _holder(conn, new.id) == (crew if held else None), f"update {status}"
            await update_tickets(conn, [new.id], {"crew_id": None})  # no crew: nobody holds it, whatever the status
            assert await _holder(conn, new.id) is None, f"no crew {status}"

            # push path: the push's one write statement sets status and crew
            await update_tickets(conn, [new.id], {"status": "unassigned"})
            await _push_writes(conn, new.id, status, other)
            assert await _holder(conn, new.id) == (other if held else None), f"push statement {status}"


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_holder_can_no_longer_be_written(pool: asyncpg.Pool, world: World) -> None:
    """A writer that still sets the column is refused by PostgreSQL instead of silently disagreeing with the rule."""
    new = NewTicket(service_type="Bulky Items", address="1 S MAIN ST, 90012", status=TicketStatus.CLOSED,
                    crew_id=world.crews["san-1"])
    async with pool.acquire() as conn:
        async with conn.transaction():
            await insert_ticket_rows(conn, [new])
        with pytest.raises(asyncpg.GeneratedAlwaysError):
            await conn.execute("UPDATE tickets SET holder_crew_id = $2 WHERE id = $1", new.id, world.crews["san-1"])
        assert await _holder(conn, new.id) is None

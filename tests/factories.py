"""Builders for test data through the same code paths production uses (auth, intake), never raw fixtures of wire state."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from sync_server.auth import Role, create_user, enroll_device
from sync_server.engine.changes import commit_changes
from sync_server.engine.intake import NewTicket, insert_tickets
from sync_server.storage.tickets import TicketRecord, load_tickets, lock_tickets, update_tickets

DEPARTMENTS = [("sanitation", "Sanitation", "BOS"), ("street_services", "Street Services", "BSS")]
SERVICE_TYPES = [
    ("Bulky Items", "bulky_items", "sanitation"),
    ("Illegal Dumping Pickup", "illegal_dumping", "sanitation"),
    ("Graffiti Removal", "graffiti_removal", "sanitation"),
    ("Pothole Repair", "pothole_repair", "street_services"),
]
CREWS = [("san-1", "sanitation"), ("san-2", "sanitation"), ("ss-1", "street_services")]


@dataclass
class Device:
    """An enrolled test device and its token."""

    device_id: str
    crew: str
    crew_id: int
    department: str
    token: str


@dataclass
class World:
    """A small city: ids and tokens for every actor."""

    departments: dict[str, int] = field(default_factory=dict)
    crews: dict[str, int] = field(default_factory=dict)
    devices: dict[str, list[Device]] = field(default_factory=dict)
    supervisors: dict[str, str] = field(default_factory=dict)
    admin: str = ""

    def device(self, crew: str, n: int = 0) -> Device:
        """The n-th device of a crew."""
        return self.devices[crew][n]


async def build_world(pool: asyncpg.Pool, devices_per_crew: int = 2) -> World:
    """Departments, service types, crews, devices, a supervisor per department and an admin."""
    w = World()
    async with pool.acquire() as conn, conn.transaction():
        for code, name, agency in DEPARTMENTS:
            w.departments[code] = await conn.fetchval(
                "INSERT INTO departments (code, name, agency_code) VALUES ($1, $2, $3) RETURNING id", code, name, agency
            )
        for name, code, dept in SERVICE_TYPES:
            await conn.execute(
                "INSERT INTO service_types (name, code, department_id) VALUES ($1, $2, $3)", name, code, w.departments[dept]
            )
        for crew, dept in CREWS:
            w.crews[crew] = await conn.fetchval(
                "INSERT INTO crews (name, department_id) VALUES ($1, $2) RETURNING id", crew, w.departments[dept]
            )
            w.devices[crew] = []
            for i in range(devices_per_crew):
                did, tok = await enroll_device(conn, w.crews[crew], f"{crew} phone {i}", "test")
                w.devices[crew].append(Device(did, crew, w.crews[crew], dept, tok))
        for code, _, _ in DEPARTMENTS:
            w.supervisors[code] = await create_user(conn, f"sup-{code}", Role.SUPERVISOR, w.departments[code])
        w.admin = await create_user(conn, "admin", Role.ADMIN, None)
    return w


async def make_tickets(
    pool: asyncpg.Pool, world: World, n: int, *, crew: str | None = "san-1", service_type: str = "Bulky Items"
) -> list[TicketRecord]:
    """n tickets assigned to `crew` (or unassigned), created through intake so the change log has them."""
    new = [
        NewTicket(service_type=service_type, address=f"{100 + i} S MAIN ST, 90012", zip="90012", lat=34.05, lon=-118.25,
                  crew_id=world.crews[crew] if crew else None, description=f"test ticket {i}")
        for i in range(n)
    ]
    async with pool.acquire() as conn, conn.transaction():
        recs = await insert_tickets(conn, new, actor_kind="system", actor="test")
    return [recs[t.id] for t in new]


async def set_priority(conn: asyncpg.Connection, ticket_id: UUID, priority: str) -> None:
    """A system change of one ticket through the one change path (lock, update, log), in the caller's transaction."""
    before = await load_tickets(conn, [ticket_id])
    await lock_tickets(conn, [ticket_id])
    await update_tickets(conn, [ticket_id], {"priority": priority})
    await commit_changes(conn, before, actor_kind="system", actor="test", action="update")

"""Creating tickets (supervisor API, 311 intake, demo data), always through the change log so devices see them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from uuid import UUID

import asyncpg

from protocol import ErrorCode, Priority, ProtocolError, TicketStatus
from sync_server.engine.changes import commit_changes
from sync_server.domain.ticket import TicketRecord


@dataclass(frozen=True)
class NewTicket:
    """Everything a new ticket needs; the server fills status, holder and version."""

    service_type: str
    address: str
    requested_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    id: UUID = field(default_factory=uuid.uuid4)
    sr_number: str | None = None
    priority: Priority = Priority.NORMAL
    zip: str | None = None
    lat: float | None = None
    lon: float | None = None
    council_district: int | None = None
    description: str = ""
    source: str | None = None
    service_date: date | None = None
    due_at: datetime | None = None
    crew_id: int | None = None
    status: TicketStatus | None = None
    created_by_device: str | None = None


async def service_type_department(conn: asyncpg.Connection, service_type: str) -> tuple[int, int]:
    """(service_type_id, department_id) for a service type name or code, or a typed 422."""
    row = await conn.fetchrow(
        "SELECT id, department_id FROM service_types WHERE name = $1 OR code = $1", service_type
    )
    if row is None:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"unknown service type {service_type!r}", {"field": "service_type"})
    return row["id"], row["department_id"]


async def insert_ticket_rows(conn: asyncpg.Connection, new: list[NewTicket]) -> None:
    """Insert ticket rows in one statement; the caller records the change (alone or with other work in one commit)."""
    rows = []
    for n in new:
        st_id, dept_id = await service_type_department(conn, n.service_type)
        status = n.status or (TicketStatus.ASSIGNED if n.crew_id is not None else TicketStatus.UNASSIGNED)
        rows.append((
            n.id, n.sr_number, st_id, dept_id, status.value, n.priority.value, n.address, n.zip, n.lat, n.lon,
            n.council_district, n.description, n.source, n.requested_at, n.service_date, n.due_at, n.crew_id,
            n.created_by_device,
        ))
    await conn.executemany(
        "INSERT INTO tickets (id, sr_number, service_type_id, department_id, status, priority, address, zip, lat, lon,"
        " council_district, description, source, requested_at, service_date, due_at, crew_id,"
        " created_by_device) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)",
        rows,
    )


async def insert_tickets(
    conn: asyncpg.Connection, new: list[NewTicket], *, actor_kind: str, actor: str, action: str = "create"
) -> dict[UUID, TicketRecord]:
    """Insert tickets and log them; the caller's transaction makes it all-or-nothing."""
    if not new:
        return {}
    await insert_ticket_rows(conn, new)
    return await commit_changes(conn, {n.id: None for n in new}, actor_kind=actor_kind, actor=actor, action=action)


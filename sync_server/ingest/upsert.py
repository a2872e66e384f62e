"""Upserting parsed MyLA311 rows by SR number in set-based batches, through intake and the change log like every other writer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from protocol import TicketStatus
from sync_server.domain.states import RANK
from sync_server.engine.changes import commit_changes
from sync_server.engine.intake import NewTicket, insert_tickets
from sync_server.domain import dispatch
from sync_server.ingest.mapping import DEPARTMENTS, SERVICE_TYPE_BY_NAME, SERVICE_TYPES, crew_name, resolve_status
from sync_server.open311 import store as open311_store
from sync_server.ingest.parse import ParsedRow
from sync_server.storage.tickets import load_tickets, lock_tickets, update_tickets

# Serialises concurrent imports, so two runs of one file never both insert the same new SR number.
_IMPORT_LOCK = 0x46534950  # 'FSIP'


@dataclass
class BatchResult:
    """What one batch did to the database."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


async def ensure_catalog(conn: asyncpg.Connection) -> None:
    """Departments and service types the importer maps onto; idempotent, so it is safe on a seeded or empty database."""
    await conn.executemany(
        "INSERT INTO departments (code, name, agency_code) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        [(d.code, d.name, d.agency_code) for d in DEPARTMENTS],
    )
    await conn.executemany(
        "INSERT INTO service_types (name, code, department_id) SELECT $1, $2, id FROM departments WHERE code = $3"
        " ON CONFLICT DO NOTHING",
        [(t.name, t.code, t.department) for t in SERVICE_TYPES],
    )


@dataclass(frozen=True)
class Crews:
    """What routing an imported row needs: active crews by name, and the admins' dispatch rules."""

    ids: Mapping[str, int]
    rules: Sequence[dispatch.Rule] = ()
    facts: Mapping[str, dispatch.CrewFacts] = field(default_factory=dict)


async def crew_ids(conn: asyncpg.Connection) -> Crews:
    """Active crews by name and the dispatch rules, so an AssignTo area can be routed to the crew that works it."""
    ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM crews WHERE active")}
    return Crews(ids, await open311_store.rules(conn), await open311_store.crew_facts(conn))


def _crew_for(row: ParsedRow, crews: Crews) -> int | None:
    """The same dispatch rules as Open311 intake decide first (routing_area rules match the AssignTo area); without
    a matching rule, the crew named after the row's department and AssignTo area, when we run one."""
    code = SERVICE_TYPE_BY_NAME[row.service_type.casefold()].code if row.service_type.casefold() in SERVICE_TYPE_BY_NAME \
        else row.service_type
    facts = dispatch.Facts(service_type=code, department=row.department, district=row.council_district, zip=row.zip,
                           lat=row.lat, lon=row.lon, routing_area=row.area or None)
    rule = dispatch.route(crews.rules, facts, crews.facts)
    if rule is not None and rule.crew in crews.ids:
        return crews.ids[rule.crew]
    name = crew_name(row.department, row.area)
    return crews.ids.get(name) if name else None


def _target(row: ParsedRow, crews: Crews) -> tuple[TicketStatus, int | None]:
    """Status and crew the city's row asks for; an unassigned ticket carries no crew."""
    crew = _crew_for(row, crews)
    status = resolve_status(row.status_rule, crew is not None)
    return status, (None if status is TicketStatus.UNASSIGNED else crew)


async def upsert_batch(
    conn: asyncpg.Connection, rows: Sequence[ParsedRow], crews: Crews, actor: str
) -> BatchResult:
    """Insert new SR numbers, update ones whose UpdatedDate is newer, leave the rest untouched (no change-log rows)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _IMPORT_LOCK)
    result = BatchResult()
    by_sr = {r.sr_number: r for r in rows}  # callers never put one SR twice in a batch
    existing = {
        r["sr_number"]: r["id"]
        for r in await conn.fetch("SELECT id, sr_number FROM tickets WHERE sr_number = ANY($1::text[])", list(by_sr))
    }
    new_rows = [r for r in rows if r.sr_number not in existing]
    if new_rows:
        await _insert(conn, new_rows, crews, actor)
        result.inserted = len(new_rows)
    if existing:
        result.updated = await _update(conn, existing, by_sr, crews, actor)
        result.unchanged = len(existing) - result.updated
    return result


async def _insert(conn: asyncpg.Connection, rows: Sequence[ParsedRow], crews: Crews, actor: str) -> None:
    """New SR numbers become tickets through intake, so devices of the crew see them (I3)."""
    new = []
    for r in rows:
        status, crew = _target(r, crews)
        new.append(NewTicket(
            service_type=r.service_type, address=r.address, requested_at=r.requested_at, sr_number=r.sr_number,
            zip=r.zip, lat=r.lat, lon=r.lon, council_district=r.council_district, source=r.source,
            service_date=r.service_date, crew_id=crew, status=status,
        ))
    inserted = await insert_tickets(conn, new, actor_kind="import", actor=actor, action="import")
    await conn.executemany(
        "UPDATE tickets SET source_updated_at = $2 WHERE id = $1",
        [(n.id, r.source_updated_at) for n, r in zip(new, rows)],
    )
    # Intake has no reason code (it creates open work); the few referred-out rows get it as a logged change.
    by_reason: dict[str, list[UUID]] = defaultdict(list)
    for n, r in zip(new, rows):
        if r.status_rule.reason_code is not None:
            by_reason[r.status_rule.reason_code].append(n.id)
    if by_reason:
        ids = sorted(tid for group in by_reason.values() for tid in group)
        await lock_tickets(conn, ids)
        for reason, group in by_reason.items():
            await update_tickets(conn, group, {"reason_code": reason})
        await commit_changes(conn, {tid: inserted[tid] for tid in ids}, actor_kind="import", actor=actor,
                             action="import", reason="MyLA311 status carries a reason")


async def _update(
    conn: asyncpg.Connection, existing: Mapping[str, UUID], by_sr: Mapping[str, ParsedRow],
    crews: Crews, actor: str,
) -> int:
    """Apply newer city rows; a status never moves backwards, so field progress made here is not undone."""
    locked = await lock_tickets(conn, list(existing.values()))
    current = {
        r["id"]: r for r in await conn.fetch(
            "SELECT id, status, crew_id, service_date, reason_code, source_updated_at FROM tickets"
            " WHERE id = ANY($1::uuid[])", list(locked),
        )
    }
    groups: dict[tuple[tuple[str, Any], ...], list[UUID]] = defaultdict(list)
    stamps: list[tuple[UUID, Any]] = []
    for sr, tid in existing.items():
        row, cur = by_sr[sr], current[tid]
        if cur["source_updated_at"] is not None and row.source_updated_at <= cur["source_updated_at"]:
            continue
        stamps.append((tid, row.source_updated_at))
        status, crew = _target(row, crews)
        values: dict[str, Any] = {}
        if RANK[status] >= RANK[TicketStatus(cur["status"])] and status.value != cur["status"]:
            values["status"] = status.value
            if crew is not None and crew != cur["crew_id"]:
                values["crew_id"] = crew
        if row.service_date is not None and row.service_date != cur["service_date"]:
            values["service_date"] = row.service_date
        reason = row.status_rule.reason_code
        if reason is not None and reason != cur["reason_code"]:
            values["reason_code"] = reason
        if values:
            groups[tuple(sorted(values.items()))].append(tid)
    changed = sorted(tid for ids in groups.values() for tid in ids)
    if changed:
        before = await load_tickets(conn, changed)
        for key, ids in groups.items():
            await update_tickets(conn, ids, dict(key))
        await commit_changes(
            conn, {tid: before[tid] for tid in changed}, actor_kind="import", actor=actor, action="import_update",
            reason="newer MyLA311 UpdatedDate",
        )
    # The stamp is import bookkeeping, not ticket content: a newer row that changes nothing still moves it on.
    await conn.executemany("UPDATE tickets SET source_updated_at = $2 WHERE id = $1", stamps)
    return len(changed)

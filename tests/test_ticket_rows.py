"""Tickets read as typed rows: the document storage.tickets.load_tickets builds from rows written by hand equals a
document written by hand, field by field (the one renderer every writer but the push uses, domain.document)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import asyncpg
import pytest

from sync_server.domain.document import render
from sync_server.storage.tickets import load_tickets
from tests.factories import World


@pytest.mark.rows_edited_by_hand  # rows inserted by SQL here, without a stored document
async def test_typed_rows_give_the_hand_written_document(pool: asyncpg.Pool, world: World) -> None:
    tid, note_a, note_b = uuid.UUID(int=0xA1), uuid.UUID(int=0xB2), uuid.UUID(int=0xB1)
    t0 = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=-8)))  # 13:06:07.890123 UTC
    async with pool.acquire() as conn, conn.transaction():
        st = await conn.fetchval("SELECT id FROM service_types WHERE code = 'bulky_items'")
        await conn.execute(
            "INSERT INTO tickets (id, sr_number, service_type_id, department_id, status, priority, address, zip, lat, lon,"
            " council_district, description, source, requested_at, service_date, due_at, crew_id, resolution_code,"
            " field_meta, created_at, updated_at, version)"
            " VALUES ($1, '1-42', $2, $3, 'completed', 'high', '1 S MAIN ST', '90012', 34, -118.25, 14, 'señal «ok»',"
            " 'phone', $4, '2026-03-05', NULL, $5, 'collected', '{}', $4, $4, 7)",
            tid, st, world.departments["sanitation"], t0, world.crews["san-1"])
        await conn.executemany(
            "INSERT INTO ticket_notes (id, ticket_id, text, author, device_time, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            [(note_a, tid, "first", "dev-a", None, t0), (note_b, tid, "second", "dev-b", t0, t0 + timedelta(seconds=1))])
        await conn.executemany(
            "INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, lat, lon, added_by, verified)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'dev-a', $7)",
            [(tid, "b" * 64, "before", t0, None, None, True), (tid, "a" * 64, "after", t0, 34.0, -118.5, False)])
        await conn.executemany("INSERT INTO ticket_items (ticket_id, item_type, count) VALUES ($1, $2, $3)",
                               [(tid, "mattress", 2), (tid, "couch", 0)])
        doc = (await load_tickets(conn, [tid]))[tid].doc
    assert doc == {
        "id": "00000000-0000-0000-0000-0000000000a1", "sr_number": "1-42", "service_type": "Bulky Items",
        "department": "sanitation", "status": "completed", "priority": "high", "address": "1 S MAIN ST", "zip": "90012",
        "lat": 34.0, "lon": -118.25, "council_district": 14, "description": "señal «ok»", "source": "phone",
        "requested_at": "2026-03-04T13:06:07.890123Z", "service_date": "2026-03-05", "due_at": None, "crew": "san-1",
        "resolution_code": "collected", "reason_code": None, "created_by_device": None,
        "updated_at": "2026-03-04T13:06:07.890123Z", "version": 7,
        "notes": [
            {"id": "00000000-0000-0000-0000-0000000000b2", "text": "first", "author": "dev-a", "device_time": None,
             "created_at": "2026-03-04T13:06:07.890123Z"},
            {"id": "00000000-0000-0000-0000-0000000000b1", "text": "second", "author": "dev-b",
             "device_time": "2026-03-04T13:06:07.890123Z", "created_at": "2026-03-04T13:06:08.890123Z"},
        ],
        "photos": [
            {"sha256": "a" * 64, "kind": "after", "taken_at": "2026-03-04T13:06:07.890123Z", "lat": 34.0, "lon": -118.5,
             "state": "pending"},
            {"sha256": "b" * 64, "kind": "before", "taken_at": "2026-03-04T13:06:07.890123Z", "lat": None, "lon": None,
             "state": "available"},
        ],
        "items": [{"item_type": "couch", "count": 0}, {"item_type": "mattress", "count": 2}],
    }
    assert isinstance(doc["lat"], float)  # an integral coordinate stays a float on the wire
    assert '"lat":34.0,' in render(doc).json and '"service_date":"2026-03-05"' in render(doc).json
    assert date.fromisoformat(doc["service_date"]) == date(2026, 3, 5)

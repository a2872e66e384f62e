"""SQL for Open311: service definitions, request listings, API keys and their shared rate counters, dispatch rules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from protocol import TicketStatus
from sync_server.domain.dispatch import CrewFacts, Rule
from sync_server.domain.states import open311_status
from sync_server.storage.credentials import hit

_SERVICE_SQL = """
SELECT st.id, st.code, st.name, st.open311_description, st.open311_group, st.open311_keywords,
       st.open311_attributes::text AS attributes, st.default_priority, st.department_id, d.code AS department,
       d.name AS agency
FROM service_types st JOIN departments d ON d.id = st.department_id
"""


async def services(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every service type, in code order (GET services is public and city-wide)."""
    return await conn.fetch(_SERVICE_SQL + " ORDER BY st.code")


async def service(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    """One service type by its Open311 service_code."""
    return await conn.fetchrow(_SERVICE_SQL + " WHERE st.code = $1", code)


def stored_attributes(row: asyncpg.Record) -> list[dict[str, Any]]:
    """The service's attribute definitions as stored (JSON array)."""
    value: list[dict[str, Any]] = json.loads(row["attributes"])
    return value


def db_statuses(open311: Sequence[str]) -> list[str]:
    """Our ticket statuses behind the Open311 statuses asked for (the mapping is domain/states.open311_status)."""
    return [s.value for s in TicketStatus if open311_status(s) in open311]


_REQUESTS_SQL = """
SELECT t.id, coalesce(t.sr_number, t.id::text) AS service_request_id, t.status, t.resolution_code, t.reason_code,
       st.name AS service_name, st.code AS service_code, st.status_notes::text AS notes, t.description,
       d.name AS agency, t.requested_at, t.updated_at, t.due_at, t.address, t.zip, t.lat, t.lon, o.media_url
FROM tickets t
JOIN service_types st ON st.id = t.service_type_id
JOIN departments d ON d.id = t.department_id
LEFT JOIN open311_requests o ON o.ticket_id = t.id
WHERE ($1::text[] IS NULL OR t.sr_number = ANY($1::text[]) OR t.id::text = ANY($1::text[]))
  AND ($2::text[] IS NULL OR st.code = ANY($2::text[]))
  AND ($3::timestamptz IS NULL OR t.requested_at >= $3)
  AND ($4::timestamptz IS NULL OR t.requested_at <= $4)
  AND ($5::text[] IS NULL OR t.status = ANY($5::text[]))
  AND ($6::timestamptz IS NULL OR t.updated_at >= $6)
  AND ($7::timestamptz IS NULL OR t.updated_at < $7)
"""
# Two fixed orders (never formatted from input): residents read newest first; mirrors read oldest update first.
_BY_REQUESTED = _REQUESTS_SQL + " ORDER BY t.requested_at DESC, t.id LIMIT $8 OFFSET $9"
_BY_UPDATED = _REQUESTS_SQL + " ORDER BY t.updated_at, t.id LIMIT $8 OFFSET $9"


async def requests(
    conn: asyncpg.Connection, *, ids: list[str] | None, codes: list[str] | None, start: datetime | None,
    end: datetime | None, statuses: list[str] | None, updated_after: datetime | None,
    updated_before: datetime | None, by_updated: bool, limit: int, offset: int,
) -> list[asyncpg.Record]:
    """One page of requests; requested-time bounds are inclusive, updated_before exclusive."""
    sql = _BY_UPDATED if by_updated else _BY_REQUESTED
    return await conn.fetch(sql, ids, codes, start, end, statuses, updated_after, updated_before, limit, offset)


async def after_photos(conn: asyncpg.Connection, ticket_ids: list[UUID]) -> dict[UUID, list[str]]:
    """Hashes of the verified after-photos of these tickets (before-photos and originals are never published)."""
    rows = await conn.fetch(
        "SELECT p.ticket_id, p.sha256 FROM ticket_photos p JOIN blobs b ON b.sha256 = p.sha256"
        " WHERE p.ticket_id = ANY($1::uuid[]) AND p.kind = 'after' AND p.verified ORDER BY p.taken_at, p.sha256", ticket_ids)
    out: dict[UUID, list[str]] = {}
    for r in rows:
        out.setdefault(r["ticket_id"], []).append(r["sha256"])
    return out


async def public_photo_media(conn: asyncpg.Connection, sha256: str) -> str | None:
    """The media type of a verified photo that is some ticket's after-photo; None for anything else."""
    return await conn.fetchval(
        "SELECT b.media_type FROM blobs b WHERE b.sha256 = $1"
        " AND EXISTS (SELECT 1 FROM ticket_photos p WHERE p.sha256 = $1 AND p.kind = 'after' AND p.verified)", sha256)


async def token_request(conn: asyncpg.Connection, token: str) -> str | None:
    """The service_request_id a POST token stands for."""
    return await conn.fetchval(
        "SELECT coalesce(t.sr_number, t.id::text) FROM open311_requests o JOIN tickets t ON t.id = o.ticket_id"
        " WHERE o.token = $1", token)


async def intake_details(conn: asyncpg.Connection, ticket_id: UUID) -> asyncpg.Record | None:
    """The private Open311 row of a ticket (staff only; empty for tickets from other channels), with its department."""
    return await conn.fetchrow(
        "SELECT coalesce(t.sr_number, t.id::text) AS service_request_id, t.department_id, k.name AS api_key,"
        " coalesce(o.reporter, '{}')::text AS reporter, o.media_url, coalesce(o.attributes, '{}')::text AS attributes,"
        " o.created_at FROM tickets t LEFT JOIN open311_requests o ON o.ticket_id = t.id"
        " LEFT JOIN api_keys k ON k.id = o.api_key_id WHERE t.id = $1", ticket_id)


# ---- API keys -------------------------------------------------------------------------------------------------


async def insert_api_key(conn: asyncpg.Connection, name: str, key_hash: bytes, rate: int, by: str) -> asyncpg.Record:
    """A new key row (the caller shows the key once)."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO api_keys (name, key_hash, rate_per_minute, created_by) VALUES ($1, $2, $3, $4)"
        " RETURNING id, name, rate_per_minute, created_at, created_by, revoked_at, 0::bigint AS created_requests",
        name, key_hash, rate, by)
    return row


_KEYS_SQL = """
SELECT k.id, k.name, k.rate_per_minute, k.created_at, k.created_by, k.revoked_at,
       (SELECT count(*) FROM open311_requests o WHERE o.api_key_id = k.id) AS created_requests
FROM api_keys k
"""


async def api_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every key with how many requests it created (never the hash)."""
    return await conn.fetch(_KEYS_SQL + " ORDER BY k.name")


async def revoke_api_key(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """Revoke a key once (a second revoke keeps the first time)."""
    await conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1", name)
    return await conn.fetchrow(_KEYS_SQL + " WHERE k.name = $1", name)


async def key_by_hash(conn: asyncpg.Connection, key_hash: bytes) -> asyncpg.Record | None:
    """The key row for a presented key."""
    return await conn.fetchrow("SELECT id, name, rate_per_minute, revoked_at FROM api_keys WHERE key_hash = $1", key_hash)


async def count_hit(conn: asyncpg.Connection, key_id: int) -> tuple[int, float]:
    """Count one use in the key's current minute with the server's shared limiter (one atomic statement on the
    `rate_limits` table, so every process and host shares the count); (hits, seconds left)."""
    return await hit(conn, f"api_key:{key_id}", 60)


# ---- dispatch rules -------------------------------------------------------------------------------------------

_RULES_SQL = """
SELECT r.id, r.position, st.code AS service_type, r.council_district, r.zip, r.polygon::text AS polygon,
       r.routing_area, c.name AS crew, r.created_at, r.created_by
FROM dispatch_rules r JOIN crews c ON c.id = r.crew_id LEFT JOIN service_types st ON st.id = r.service_type_id
"""


async def rule_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every rule in evaluation order."""
    return await conn.fetch(_RULES_SQL + " ORDER BY r.position, r.id")


def to_rule(r: asyncpg.Record) -> Rule:
    """A stored rule as the pure domain value."""
    poly = json.loads(r["polygon"]) if r["polygon"] is not None else None
    return Rule(id=r["id"], position=r["position"], crew=r["crew"], service_type=r["service_type"],
                district=r["council_district"], zip=r["zip"],
                polygon=tuple((float(p[0]), float(p[1])) for p in poly) if poly is not None else None,
                routing_area=r["routing_area"])


async def rules(conn: asyncpg.Connection) -> list[Rule]:
    """Every rule as domain values."""
    return [to_rule(r) for r in await rule_rows(conn)]


async def crew_facts(conn: asyncpg.Connection) -> dict[str, CrewFacts]:
    """Every crew's department and whether it can take work."""
    rows = await conn.fetch(
        "SELECT c.name, d.code, c.active AND c.retired_at IS NULL AS active FROM crews c"
        " JOIN departments d ON d.id = c.department_id")
    return {r["name"]: CrewFacts(r["code"], r["active"]) for r in rows}


async def insert_rule(conn: asyncpg.Connection, position: int, service_type_id: int | None, district: int | None,
                      zip_code: str | None, polygon: list[list[float]] | None, routing_area: str | None,
                      crew_id: int, by: str) -> int:
    """Store a rule; returns its id."""
    rid: int = await conn.fetchval(
        "INSERT INTO dispatch_rules (position, service_type_id, council_district, zip, polygon, routing_area, crew_id,"
        " created_by) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id",
        position, service_type_id, district, zip_code, json.dumps(polygon) if polygon is not None else None,
        routing_area, crew_id, by)
    return rid


async def delete_rule(conn: asyncpg.Connection, rule_id: int) -> asyncpg.Record | None:
    """Remove a rule; returns what it was."""
    row = await conn.fetchrow(_RULES_SQL + " WHERE r.id = $1", rule_id)
    if row is not None:
        await conn.execute("DELETE FROM dispatch_rules WHERE id = $1", rule_id)
    return row

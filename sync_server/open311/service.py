"""Open311 use cases: read services and requests in one snapshot each, and take a POSTed request in through the one
write path (engine/intake), routed by the dispatch rules, in one transaction with its private Open311 data."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import asyncpg

from protocol import Priority, TicketStatus
from sync_server.auth import hash_token
from sync_server.domain import dispatch
from sync_server.domain.states import open311_status
from sync_server.engine.intake import NewTicket, insert_tickets
from sync_server.engine.tx import run_in_tx
from sync_server.open311 import store
from sync_server.open311.params import PostedRequest, RequestQuery, attributes_of, check_attributes
from sync_server.open311.render import Open311Error

API_KEY_PREFIX = "fsk_"
_ZIP = re.compile(r"\b(\d{5})(?:-\d{4})?\s*$")
# Public text for states a crew's codes do not explain.
_STATE_NOTES = {TicketStatus.CANCELLED: "Request cancelled.", TicketStatus.DUPLICATE: "Duplicate of another request."}


def service_record(row: asyncpg.Record) -> dict[str, Any]:
    """One entry of GET services, fields in the spec's order."""
    return {
        "service_code": row["code"], "service_name": row["name"],
        "description": row["open311_description"] or row["name"],
        "metadata": bool(store.stored_attributes(row)), "type": "realtime",
        "keywords": ",".join(row["open311_keywords"]), "group": row["open311_group"] or row["agency"],
    }


def definition_record(row: asyncpg.Record) -> dict[str, Any]:
    """GET services/{code}: the service definition with its attributes."""
    attrs = []
    for a in attributes_of(store.stored_attributes(row)):
        rec: dict[str, Any] = {"variable": a.variable, "code": a.code, "datatype": a.datatype, "required": a.required,
                               "datatype_description": a.datatype_description, "order": a.order,
                               "description": a.description}
        if a.values:
            rec["values"] = [{"key": k, "name": n} for k, n in a.values]
        attrs.append(rec)
    return {"service_code": row["code"], "attributes": attrs}


def status_note(row: Mapping[str, Any]) -> str | None:
    """The public note for a request: the service type's text for the crew's resolution or reason code (never the
    crew's own notes), or a fixed text for cancellations and duplicates."""
    status = TicketStatus(row["status"])
    notes: dict[str, str] = json.loads(row["notes"])
    for code in (row["resolution_code"], row["reason_code"]):
        if code is not None and open311_status(status) == "closed":
            return notes.get(code)
    return _STATE_NOTES.get(status)


def request_record(row: asyncpg.Record, photos: list[str] | None, base_url: str) -> dict[str, Any]:
    """One entry of GET requests: public fields only (the reporter's contact data is never read here)."""
    rec: dict[str, Any] = {
        "service_request_id": row["service_request_id"], "status": open311_status(TicketStatus(row["status"])),
        "status_notes": status_note(row), "service_name": row["service_name"], "service_code": row["service_code"],
        "description": row["description"], "agency_responsible": row["agency"], "service_notice": None,
        "requested_datetime": row["requested_at"], "updated_datetime": row["updated_at"],
        "expected_datetime": row["due_at"], "address": row["address"], "address_id": None, "zipcode": row["zip"],
        "lat": row["lat"], "long": row["lon"], "media_url": row["media_url"],
    }
    if photos is not None:
        rec["extended_attributes"] = {"photos": [f"{base_url}/open311/v2/media/{sha}.jpg" for sha in photos]}
    return rec


async def list_services(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """GET services."""
    async with pool.acquire() as conn:
        return [service_record(r) for r in await store.services(conn)]


async def service_definition(pool: asyncpg.Pool, code: str) -> dict[str, Any]:
    """GET services/{code}; unknown codes are the spec's 404."""
    async with pool.acquire() as conn:
        row = await store.service(conn, code)
    if row is None:
        raise Open311Error(404, f"service_code {code} not found")
    return definition_record(row)


async def list_requests(pool: asyncpg.Pool, q: RequestQuery, base_url: str) -> list[dict[str, Any]]:
    """GET requests: one page read in one snapshot (photos and rows agree)."""

    async def body(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        rows = await store.requests(
            conn, ids=q.ids, codes=q.service_codes, start=q.start, end=q.end,
            statuses=store.db_statuses(q.statuses) if q.statuses is not None else None,
            updated_after=q.updated_after, updated_before=q.updated_before, by_updated=q.by_updated,
            limit=q.page_size, offset=(q.page - 1) * q.page_size)
        photos = await store.after_photos(conn, [r["id"] for r in rows]) if q.extensions else {}
        return [request_record(r, photos.get(r["id"], []) if q.extensions else None, base_url) for r in rows]

    return await run_in_tx(pool, body, isolation="repeatable_read", readonly=True)


async def token_lookup(pool: asyncpg.Pool, token: str) -> list[dict[str, Any]]:
    """GET tokens/{token}: the request a token became (created synchronously, so always known)."""
    async with pool.acquire() as conn:
        sr = await store.token_request(conn, token)
    if sr is None:
        raise Open311Error(404, "token not found")
    return [{"service_request_id": sr, "token": token}]


# ---- API keys -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """A caller of POST requests."""

    id: int
    name: str


async def check_api_key(pool: asyncpg.Pool, key: str | None) -> ApiKey:
    """403 for a missing, unknown or revoked key; 429 + Retry-After past its per-minute rate (shared by processes)."""
    if not key or len(key) > 200:
        raise Open311Error(403, "a valid api_key is required to create requests")
    async with pool.acquire() as conn:
        row = await store.key_by_hash(conn, hash_token(key))
        if row is None or row["revoked_at"] is not None:
            raise Open311Error(403, "api_key is invalid or revoked")
        hits, left = await store.count_hit(conn, row["id"])
    if hits > row["rate_per_minute"]:
        raise Open311Error(429, f"rate limit of {row['rate_per_minute']} requests per minute reached",
                           retry_after=max(1, int(left + 0.999)))
    return ApiKey(row["id"], row["name"])


# ---- intake ---------------------------------------------------------------------------------------------------


def format_sr_number(fmt: str, seq: int, now: datetime) -> str:
    """The city's service request number format, e.g. '{year}-{seq:07d}' -> '2026-0000042'."""
    return fmt.format(seq=seq, year=now.year)


@dataclass(frozen=True)
class Created:
    """What POST requests answers."""

    ticket_id: UUID
    service_request_id: str
    token: str
    crew: str | None


AfterInsert = Callable[[asyncpg.Connection, Created], Awaitable[None]]


async def submit(pool: asyncpg.Pool, key: ApiKey | None, post: PostedRequest, sr_format: str, *,
                 actor_kind: str = "api_key", actor: str | None = None, requested_at: datetime | None = None,
                 check_attrs: bool = True, after_insert: AfterInsert | None = None) -> Created:
    """Validate against the service definition, route by the dispatch rules, create the ticket (change log, live
    feed, audit under the key's name) and its private Open311 row, all in one transaction: refused means nothing.

    A mirror passes check_attrs=False (GET requests never carries attribute answers) and records its own mapping in
    `after_insert`, inside the same transaction, so a request is mirrored exactly once."""
    actor = actor or (key.name if key is not None else "open311")

    async def body(conn: asyncpg.Connection) -> Created:
        st = await store.service(conn, post.service_code)
        if st is None:
            raise Open311Error(400, f"service_code {post.service_code} not found")
        answers = check_attributes(attributes_of(store.stored_attributes(st)), post.attributes) if check_attrs else {}
        zip_code = None
        if post.address is not None and (m := _ZIP.search(post.address)):
            zip_code = m.group(1)
        facts = dispatch.Facts(service_type=st["code"], department=st["department"], zip=zip_code,
                               lat=post.lat, lon=post.lon)
        rule = dispatch.route(await store.rules(conn), facts, await store.crew_facts(conn))
        crew_id = await conn.fetchval("SELECT id FROM crews WHERE name = $1", rule.crew) if rule else None
        now = datetime.now(timezone.utc)
        seq = await conn.fetchval("SELECT nextval('open311_sr_seq')")
        sr = format_sr_number(sr_format, seq, now)
        address = post.address or (f"{post.lat:.6f}, {post.lon:.6f}" if post.lat is not None else f"address_id {post.address_id}")
        new = NewTicket(service_type=st["name"], address=address, requested_at=requested_at or now, sr_number=sr,
                        priority=Priority(st["default_priority"]), zip=zip_code, lat=post.lat, lon=post.lon,
                        description=post.description, source="open311", crew_id=crew_id)
        await insert_tickets(conn, [new], actor_kind=actor_kind, actor=actor, action="open311_create")
        token = secrets.token_urlsafe(16)
        reporter = dict(post.reporter)
        if post.address_id is not None:
            reporter["address_id"] = post.address_id
        await conn.execute(
            "INSERT INTO open311_requests (ticket_id, token, api_key_id, reporter, media_url, attributes)"
            " VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb)",
            new.id, token, key.id if key is not None else None, json.dumps(reporter), post.media_url,
            json.dumps(answers))
        done = Created(new.id, sr, token, rule.crew if rule else None)
        if after_insert is not None:
            await after_insert(conn, done)
        return done

    return await run_in_tx(pool, body)

"""Mirror an upstream Open311 server: pull new and updated requests by updated_datetime windows into tickets through
the same intake as POST requests (dispatch rules included).

Reads `requests.json?updated_after=A&updated_before=B` (A inclusive, B exclusive; the extension this server also
serves) oldest update first, and moves A to the last update seen after every page: a keyset walk, so a request
updated while we page never shifts an offset and makes us skip another. A is stored after every page, so a crashed
or bounded run resumes where it stopped; re-reading the requests updated at exactly A is harmless because a
request becomes a ticket at most once (primary key on endpoint + service_request_id, same transaction).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import asyncpg
import structlog

from protocol import ProtocolError, TicketStatus
from sync_server.auth import Principal, Role
from sync_server.domain.states import OPEN, Action
from sync_server.engine import supervise
from sync_server.open311 import service
from sync_server.open311.params import MAX_SPAN, PostedRequest, parse_datetime, posted_request
from sync_server.open311.render import Open311Error, w3c

log = structlog.get_logger(__name__)
LAG = timedelta(seconds=2)  # writers stamp updated_at before they commit; stay this far behind the upstream clock


class MirrorError(Exception):
    """The upstream answered something we cannot mirror from (HTTP error, not a GeoReport list)."""


@dataclass
class MirrorStats:
    """What one run did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    closed: int = 0  # open local tickets cancelled because the upstream closed them
    skipped: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    position: datetime | None = None

    def skip(self, why: str) -> None:
        """Count a request we did not take, by reason (logged, never silent)."""
        self.skipped[why] = self.skipped.get(why, 0) + 1


async def _fetch(http: aiohttp.ClientSession, endpoint: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """One page of GET requests.json."""
    async with http.get(endpoint.rstrip("/") + "/requests.json", params=params) as r:
        body = await r.read()
        if r.status != 200:
            raise MirrorError(f"upstream answered {r.status}: {body[:200]!r}")
    try:
        data = json.loads(body)
    except ValueError:
        raise MirrorError("upstream answer is not JSON") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise MirrorError("upstream answer is not a list of requests")
    return data


async def _state(pool: asyncpg.Pool, endpoint: str) -> datetime | None:
    """Where the last run stopped (None: never ran)."""
    return await pool.fetchval("SELECT updated_after FROM open311_mirror_state WHERE endpoint = $1", endpoint)


async def _save(pool: asyncpg.Pool, endpoint: str, position: datetime) -> None:
    """Store the position (only ever forwards)."""
    await pool.execute(
        "INSERT INTO open311_mirror_state (endpoint, updated_after, runs, last_run_at) VALUES ($1, $2, 1, now())"
        " ON CONFLICT (endpoint) DO UPDATE SET updated_after = greatest(open311_mirror_state.updated_after, $2),"
        " last_run_at = now()", endpoint, position)


def _posted(rec: dict[str, Any]) -> PostedRequest:
    """An upstream request as intake input; anything that would not pass POST validation is refused alike."""
    lat, lon = rec.get("lat"), rec.get("long")
    fields: dict[str, list[str]] = {"service_code": [str(rec.get("service_code") or "")]}
    if lat is not None and lon is not None:
        fields["lat"], fields["long"] = [str(lat)], [str(lon)]
    for ours, theirs in (("address_string", "address"), ("description", "description"), ("media_url", "media_url")):
        if rec.get(theirs):
            fields[ours] = [str(rec[theirs])]
    return posted_request(fields)


async def _take(pool: asyncpg.Pool, endpoint: str, rec: dict[str, Any], sr_format: str, stats: MirrorStats) -> None:
    """Create the ticket for a new upstream request, or note the upstream's newer status of a known one."""
    srid = str(rec.get("service_request_id") or "")
    status = str(rec.get("status") or "open")
    updated = parse_datetime("updated_datetime", rec["updated_datetime"]) if rec.get("updated_datetime") else None
    if not srid:
        stats.skip("no_service_request_id")
        return
    row = await pool.fetchrow("SELECT ticket_id, upstream_status, upstream_updated FROM open311_mirror_items"
                              " WHERE endpoint = $1 AND service_request_id = $2", endpoint, srid)
    if row is not None:
        if (row["upstream_status"], row["upstream_updated"]) == (status, updated):
            stats.unchanged += 1
            return
        await pool.execute("UPDATE open311_mirror_items SET upstream_status = $3, upstream_updated = $4"
                           " WHERE endpoint = $1 AND service_request_id = $2", endpoint, srid, status, updated)
        stats.updated += 1
        if status == "closed" and row["upstream_status"] != "closed":
            await _close_locally(pool, endpoint, row["ticket_id"], srid, stats)
        return
    if status == "closed":
        stats.skip("closed_upstream")  # finished elsewhere: no work for our crews
        return
    try:
        post = _posted(rec)
    except Open311Error as err:
        stats.skip("invalid")
        log.info("open311.mirror_skip", service_request_id=srid, reason=err.description)
        return
    requested = parse_datetime("requested_datetime", rec["requested_datetime"]) if rec.get("requested_datetime") else None

    async def remember(conn: asyncpg.Connection, created: service.Created) -> None:
        await conn.execute(
            "INSERT INTO open311_mirror_items (endpoint, service_request_id, ticket_id, upstream_status, upstream_updated)"
            " VALUES ($1, $2, $3, $4, $5)", endpoint, srid, created.ticket_id, status, updated)

    try:
        await service.submit(pool, None, post, sr_format, actor_kind="mirror", actor=f"mirror:{endpoint}"[:200],
                             requested_at=requested, check_attrs=False, after_insert=remember)
    except Open311Error as err:  # e.g. a service code this city does not have
        stats.skip("refused")
        log.info("open311.mirror_skip", service_request_id=srid, reason=err.description)
        return
    except asyncpg.UniqueViolationError:  # another mirror process took it first: exactly once either way
        stats.unchanged += 1
        return
    stats.created += 1


async def _close_locally(pool: asyncpg.Pool, endpoint: str, ticket_id: Any, srid: str, stats: MirrorStats) -> None:
    """The upstream closed a request we mirrored: cancel our open ticket through the supervisor path (audited; a
    crew that worked it offline still reports late, I5). A ticket our crews already finished is left as it is."""
    current = await pool.fetchval("SELECT status FROM tickets WHERE id = $1", ticket_id)
    if TicketStatus(current) not in OPEN:
        return
    who = Principal(Role.ADMIN, f"mirror:{endpoint}"[:200])
    try:
        await supervise.change_status(pool, who, ticket_id, Action.CANCEL, reason=f"closed upstream ({srid})")
    except ProtocolError as err:  # changed under us (e.g. completed meanwhile): the next update will tell
        log.info("open311.mirror_close_skipped", service_request_id=srid, reason=err.message)
        return
    stats.closed += 1


async def mirror_once(pool: asyncpg.Pool, http: aiohttp.ClientSession, endpoint: str, *, sr_format: str,
                      jurisdiction: str | None = None, api_key: str | None = None, page_size: int = 100,
                      max_pages: int | None = None, now: datetime | None = None, lag: timedelta = LAG) -> MirrorStats:
    """Mirror everything updated since the stored position up to now - LAG, in 90-day windows (the spec's largest
    span); `max_pages` bounds one run (the next run resumes)."""
    stats = MirrorStats()
    until = (now or datetime.now(timezone.utc)) - lag
    position = await _state(pool, endpoint) or until - MAX_SPAN
    base: dict[str, str] = {"page_size": str(page_size)}
    if jurisdiction:
        base["jurisdiction_id"] = jurisdiction
    if api_key:
        base["api_key"] = api_key
    page = 1
    while position < until:
        end = min(position + MAX_SPAN, until)
        if max_pages is not None and stats.pages >= max_pages:
            break
        recs = await _fetch(http, endpoint, {**base, "updated_after": _iso(position), "updated_before": _iso(end),
                                             "page": str(page)})
        stats.pages += 1
        for rec in recs:
            await _take(pool, endpoint, rec, sr_format, stats)
        if len(recs) < page_size:
            position, page = end, 1  # the window is done
        else:
            last = max(parse_datetime("updated_datetime", r["updated_datetime"]) for r in recs)
            if last > position:
                position, page = last, 1  # keyset: restart at the last update seen (inclusive)
            else:
                page += 1  # a whole page updated within one second: step past it
        await _save(pool, endpoint, position)
    stats.position = position
    log.info("open311.mirror_run", endpoint=endpoint, created=stats.created, updated=stats.updated, closed=stats.closed,
             unchanged=stats.unchanged, skipped=stats.skipped, pages=stats.pages, position=w3c(position))
    return stats


def _iso(ts: datetime) -> str:
    """Full precision (the upstream parses ISO 8601); w3c() would round the window to seconds."""
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


async def run(pool: asyncpg.Pool, endpoint: str, *, sr_format: str, jurisdiction: str | None, api_key: str | None,
              interval: float, once: bool) -> MirrorStats:
    """The CLI loop: a run every `interval` seconds; an upstream failure is logged and retried next time."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while True:
            try:
                stats = await mirror_once(pool, http, endpoint, sr_format=sr_format, jurisdiction=jurisdiction,
                                          api_key=api_key)
            except (MirrorError, aiohttp.ClientError, TimeoutError) as exc:
                if once:
                    raise MirrorError(f"{endpoint}: {exc}") from exc
                log.warning("open311.mirror_failed", endpoint=endpoint, error=str(exc)[:300])
                stats = MirrorStats()
            if once:
                return stats
            await asyncio.sleep(interval)

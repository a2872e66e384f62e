"""End-to-end smoke: migrated database, real HTTP server, auth and the change log written by intake."""

from __future__ import annotations

import aiohttp
import asyncpg

from tests.conftest import Server
from tests.factories import World, make_tickets


async def test_health_and_ready(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as r:
            assert r.status == 200
        async with http.get(server.url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ready"


async def test_intake_writes_change_log(pool: asyncpg.Pool, world: World) -> None:
    recs = await make_tickets(pool, world, 3)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT ticket_id, holder_crew_id, doc_hash FROM changes ORDER BY id")
        hashes = await conn.fetch("SELECT id, doc_hash FROM tickets")
    assert [r["ticket_id"] for r in rows] == [r.ticket.id for r in recs]
    assert all(r["holder_crew_id"] == world.crews["san-1"] for r in rows)
    assert {h["id"]: h["doc_hash"] for h in hashes} == {r["ticket_id"]: r["doc_hash"] for r in rows}

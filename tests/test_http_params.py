"""Query and path parameters are typed like bodies: hostile values are a typed 4xx, never a 500 (issue 10.12)."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import asyncpg
import pytest

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from sync_server.api.registry import ROUTES
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.rawhttp import RawResponse, send

HUGE = str(2**64)
# 2**31 and 2**63-1: past an int4 column, and the largest bigint (an int4 id bounded as a bigint was a 500)
HOSTILE = ("%00", "a%00b", HUGE, "99999999999999999999", "%C2%B2", "-1", "%ED%A0%80", str(2**31), str(2**63 - 1))


def staff(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.admin}", "Accept": "application/json"}


def device(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.device('san-1').token}", VERSION_HEADER: str(PROTOCOL_VERSION),
            "Accept": "application/json"}


def assert_typed(r: RawResponse, *statuses: int) -> None:
    assert r.status in statuses, (r.status, r.body[:300])
    if r.body and r.headers.get("content-type", "").startswith("application/json"):
        assert r.json()["error"]["code"]


async def test_listed_cases_answer_typed_4xx(server: Server, world: World) -> None:
    url = server.url
    assert_typed(await send(url, "GET", "/v1/tickets?crew=%00", staff(world)), 422)
    assert_typed(await send(url, "POST", "/v1/devices/%00/revoke", staff(world)), 404)
    assert_typed(await send(url, "GET", "/v1/conflicts?before=99999999999999999999", staff(world)), 422)
    assert_typed(await send(url, "POST", "/v1/conflicts/99999999999999999999/resolve",
                            {**staff(world), "Content-Type": "application/json"}, b'{"resolution":"x"}'), 404)
    assert_typed(await send(url, "GET", "/v1/conflicts?limit=%C2%B2", staff(world)), 422)
    assert_typed(await send(url, "GET", "/v1/tickets/%00", staff(world)), 404)


async def test_live_with_a_superscript_after_is_refused_before_the_upgrade(server: Server, world: World) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.url + "/v1/live?encoding=json&after=%C2%B2",
                                  headers={"Authorization": f"Bearer {world.supervisors['sanitation']}"})
    assert info.value.status == 422


async def test_nul_in_tus_filename_metadata_is_422_and_creates_nothing(server: Server, pool: asyncpg.Pool,
                                                                       world: World) -> None:
    (rec,) = await make_tickets(pool, world, 1, crew="san-1")

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    meta = ",".join([f"sha256 {b64(hashlib.sha256(b'photo').hexdigest())}", f"ticket_id {b64(str(rec.ticket.id))}",
                     f"kind {b64('before')}", f"taken_at {b64('2024-05-01T10:00:00Z')}", "filename " + b64("a\x00b.jpg")])
    headers = {**device(world), "Tus-Resumable": "1.0.0", "Upload-Length": "100000", "Upload-Metadata": meta}
    r = await send(server.url, "POST", "/v1/uploads", headers)
    assert_typed(r, 422)
    assert r.json()["error"]["code"] == "validation_failed"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM upload_sessions") == 0


def fill(path: str, value: str, target: str | None) -> str:
    """The route's path with `target` set to `value` and other parameters set to something plausible."""
    def one(seg: str) -> str:
        if not (seg.startswith("{") and seg.endswith("}")):
            return seg
        return value if seg[1:-1].split(":")[0] == target else "00000000-0000-4000-8000-000000000000"
    return "/".join(one(seg) for seg in path.split("/"))


async def test_every_route_types_every_parameter(server: Server, world: World) -> None:
    """Sweep: NUL, 2**64 and friends in each path and query parameter of each route → never a 5xx."""
    checked = 0
    for d in server.app[ROUTES]:
        who = device(world) if d.roles == ("device",) else staff(world)
        headers = {**who, "Tus-Resumable": "1.0.0", "Content-Type": "application/json"}
        body = b"{}" if d.method in ("POST", "PATCH") else b""
        names = [seg[1:-1].split(":")[0] for seg in d.path.split("/") if seg.startswith("{")]
        query_names = list(d.query.model_fields) if d.query is not None else []
        for value in HOSTILE:
            for name in names:
                r = await send(server.url, d.method, fill(d.path, value, name), headers, body)
                assert r.status < 500, (d.method, d.path, name, value, r.status, r.body[:200])
                if "%00" in value:
                    assert 400 <= r.status < 500, (d.method, d.path, name, value, r.status)
                checked += 1
            for name in query_names:
                r = await send(server.url, d.method, f"{fill(d.path, 'x', None)}?{name}={value}", headers, body)
                assert r.status < 500, (d.method, d.path, name, value, r.status, r.body[:200])
                if "%00" in value:
                    assert 400 <= r.status < 500, (d.method, d.path, name, value, r.status)
                checked += 1
    assert checked > 100

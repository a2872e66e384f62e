"""Request bodies whatever their TCP segmenting (issue 10.1), negotiation before effects (10.11), UTF-8 only (10.16)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import asyncpg

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.rawhttp import send


def device_headers(token: str, ctype: str = "application/json", accept: str = "application/json") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION), "Content-Type": ctype,
            "Accept": accept}


def padded_pull(size: int) -> bytes:
    """A valid pull body padded in the middle with JSON whitespace to exactly `size` bytes (so a cut body is invalid)."""
    head, tail = b'{"cursor":null,', b'"limit":10}'
    return head + b" " * (size - len(head) - len(tail)) + tail


def note(seq: int, ticket: uuid.UUID, text: str) -> dict[str, object]:
    return {"seq": seq, "op": "add_note", "ticket_id": str(ticket), "args": {"note_id": str(uuid.uuid4()), "text": text},
            "base_version": None, "device_time": datetime.now(timezone.utc).isoformat()}


async def test_pull_body_in_twenty_small_writes_is_read_whole(server: Server, pool: asyncpg.Pool, world: World) -> None:
    await make_tickets(pool, world, 2, crew="san-1")
    body = padded_pull(2048)
    r = await send(server.url, "POST", "/v1/sync/pull", device_headers(world.device("san-1").token), body,
                   parts=20, pause=0.02)
    assert r.status == 200, r.body[:300]
    assert len(r.json()["changes"]) == 2


async def test_pull_body_in_two_parts_100ms_apart(server: Server, pool: asyncpg.Pool, world: World) -> None:
    await make_tickets(pool, world, 1, crew="san-1")
    r = await send(server.url, "POST", "/v1/sync/pull", device_headers(world.device("san-1").token), padded_pull(2048),
                   parts=2, pause=0.1)
    assert r.status == 200, r.body[:300]
    assert len(r.json()["changes"]) == 1


async def test_push_near_the_1mib_limit_is_applied(server: Server, pool: asyncpg.Pool, world: World) -> None:
    (rec,) = await make_tickets(pool, world, 1, crew="san-1")
    muts = [note(i, rec.ticket.id, f"{i:04d} " + "x" * 1995) for i in range(1, 451)]
    body = json.dumps({"mutations": muts}).encode()
    assert 880 << 10 < len(body) < 1 << 20
    r = await send(server.url, "POST", "/v1/sync/push", device_headers(world.device("san-1").token), body,
                   parts=40, pause=0.005)
    assert r.status == 200, r.body[:300]
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["applied"] * 450
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = $1", rec.ticket.id) == 450


async def test_body_over_the_limit_without_content_length_is_413(server: Server, world: World) -> None:
    """Chunked (no Content-Length) bodies are cut at the limit too, never buffered past it."""
    import asyncio

    from urllib.parse import urlsplit

    u = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    hdrs = device_headers(world.device("san-1").token)
    lines = ["POST /v1/sync/pull HTTP/1.1", "Host: t", "Connection: close", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    chunk = b" " * 65536
    try:
        for _ in range(6):  # 384 KiB > the 256 KiB body limit
            writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass  # the server may answer and close before the rest arrives
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
    assert b"body_too_large" in raw


async def test_push_with_unproducible_accept_is_406_and_commits_nothing(server: Server, pool: asyncpg.Pool,
                                                                        world: World) -> None:
    (rec,) = await make_tickets(pool, world, 1, crew="san-1")
    dev = world.device("san-1")
    body = json.dumps({"mutations": [note(1, rec.ticket.id, "must not land")]}).encode()
    r = await send(server.url, "POST", "/v1/sync/push", device_headers(dev.token, accept="text/html"), body)
    assert r.status == 406
    assert r.json()["error"]["code"] == "not_acceptable"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT last_seq FROM devices WHERE id = $1", dev.device_id) == 0
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = $1", rec.ticket.id) == 0
        assert await conn.fetchval("SELECT version FROM tickets WHERE id = $1", rec.ticket.id) == rec.ticket.version
    # the same push with a producible Accept then applies seq 1 (nothing was consumed by the refused one)
    r = await send(server.url, "POST", "/v1/sync/push", device_headers(dev.token), body)
    assert r.status == 200 and r.json()["results"][0]["status"] == "applied"


async def test_staff_write_with_unproducible_accept_is_406_before_effect(server: Server, pool: asyncpg.Pool,
                                                                         world: World) -> None:
    hdrs = {"Authorization": f"Bearer {world.supervisors['sanitation']}", "Content-Type": "application/json",
            "Accept": "image/png"}
    body = json.dumps({"service_type": "Bulky Items", "address": "1 MAIN ST"}).encode()
    r = await send(server.url, "POST", "/v1/tickets", hdrs, body)
    assert r.status == 406
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tickets") == 0


async def test_json_with_a_non_utf8_charset_is_415(server: Server, world: World) -> None:
    token = world.device("san-1").token
    for charset in ("latin-1", "iso-8859-1", '"utf-16"'):
        r = await send(server.url, "POST", "/v1/sync/pull",
                       device_headers(token, ctype=f"application/json; charset={charset}"), padded_pull(64))
        assert r.status == 415, charset
        assert r.json()["error"]["code"] == "unsupported_media_type"
    for ok in ("application/json; charset=utf-8", "application/json; charset=UTF-8", "application/json"):
        r = await send(server.url, "POST", "/v1/sync/pull", device_headers(token, ctype=ok), padded_pull(64))
        assert r.status == 200, ok

"""A database connection lost inside a transaction is a typed, retryable 503, and nothing commits (issue 10.7)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

import aiohttp
import asyncpg

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from sync_server.storage.errors import DatabaseUnreachable, database_unavailable_cause
from tests.conftest import Server
from tests.factories import World, make_tickets


async def wait_for_lock_waiter(conn: asyncpg.Connection) -> int:
    """The pid of the backend blocked on our row lock (bounded: 200 polls × 25 ms)."""
    for _ in range(200):
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid()")
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.025)
    raise AssertionError("the push never waited on the ticket lock")


async def test_backend_killed_inside_a_push_transaction_is_503_and_nothing_commits(
        server: Server, pool: asyncpg.Pool, world: World) -> None:
    (rec,) = await make_tickets(pool, world, 1, crew="san-1")
    dev = world.device("san-1")
    mutation = {"seq": 1, "op": "add_note", "ticket_id": str(rec.ticket.id),
                "args": {"note_id": str(uuid.uuid4()), "text": "during the outage"}, "base_version": None,
                "device_time": datetime.now(timezone.utc).isoformat()}
    headers = {"Authorization": f"Bearer {dev.token}", VERSION_HEADER: str(PROTOCOL_VERSION),
               "Content-Type": "application/json", "Accept": "application/json"}
    async with pool.acquire() as locker, aiohttp.ClientSession() as http:
        tx = locker.transaction()
        await tx.start()
        # hold the ticket's row lock: the push takes its device lock, then blocks here, inside its transaction
        await locker.execute("SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", rec.ticket.id)
        push = asyncio.create_task(http.post(server.url + "/v1/sync/push", data=json.dumps({"mutations": [mutation]}),
                                             headers=headers))
        pid = await wait_for_lock_waiter(locker)
        assert await locker.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        resp = await asyncio.wait_for(push, 30)
        body = await resp.json()
        await tx.rollback()
    assert resp.status == 503
    assert body["error"]["code"] == "service_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT last_seq FROM devices WHERE id = $1", dev.device_id) == 0
        assert await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = $1", rec.ticket.id) == 0
        assert await conn.fetchval("SELECT count(*) FROM mutation_results") == 0


def test_cause_chain_finds_the_connection_error_under_a_rollback_error() -> None:
    """What Transaction.__aexit__ does: InterfaceError raised while handling the real connection loss."""
    try:
        try:
            raise asyncpg.AdminShutdownError("terminating connection due to administrator command")
        except asyncpg.AdminShutdownError:
            raise asyncpg.InterfaceError("cannot perform operation: connection is closed")
    except asyncpg.InterfaceError as exc:
        assert isinstance(database_unavailable_cause(exc), asyncpg.AdminShutdownError)
    assert database_unavailable_cause(asyncpg.InterfaceError("misuse")) is None
    assert database_unavailable_cause(ConnectionResetError("client went away")) is None
    assert isinstance(database_unavailable_cause(RuntimeError("x").with_traceback(None)), type(None))
    wrapped = DatabaseUnreachable("refused")
    assert database_unavailable_cause(wrapped) is wrapped


async def test_client_reset_mid_body_is_not_logged_as_database_unavailable(server: Server, world: World,
                                                                           capsys) -> None:
    """A client that closes its socket mid-body is a client event, never `database_unavailable`."""
    from urllib.parse import urlsplit

    u = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    head = ("POST /v1/sync/pull HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n"
            f"Authorization: Bearer {world.device('san-1').token}\r\n{VERSION_HEADER}: {PROTOCOL_VERSION}\r\n\r\n")
    writer.write(head.encode() + b'{"cursor":null,' + b" " * 100)
    await writer.drain()
    await asyncio.sleep(0.2)  # let the handler start reading the body
    writer.transport.abort()  # RST, not FIN
    for _ in range(100):  # bounded: wait for the access line of that request
        await asyncio.sleep(0.02)
        out = capsys.readouterr().out
        if "client_disconnected" in out or "http.request" in out:
            break
    assert "database_unavailable" not in out
    assert "http.unhandled" not in out

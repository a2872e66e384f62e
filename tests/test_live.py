"""Live feed over real WebSockets and real PostgreSQL: fan-out across two apps (two LISTEN connections), resume
without gaps or duplicates against the change log, slow consumers, revocation, and a database restart."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from protocol import JSON, MSGPACK
from protocol.codec import decode_live, encode
from protocol.live import LiveEvent, LiveHello, LivePoke, LiveRefetch
from sync_server.api.live import LIVE
from sync_server.embedded_pg import EmbeddedPostgres
from sync_server.engine.changes import commit_changes
from sync_server.engine.live import CLOSE_BAD_REQUEST, CLOSE_REVOKED, CLOSE_SLOW, CLOSE_UNAUTHORIZED, decode_position
from sync_server.keys import POOL
from sync_server.settings import Settings
from sync_server.storage.tickets import load_tickets, lock_tickets, update_tickets
from tests.conftest import Server, start_server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient

WAIT = 30.0  # upper bound for any single expected frame (a loaded machine can stall seconds); never a timing assertion


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def server_b(settings: Settings, db_dsn: str, server: Server) -> AsyncIterator[Server]:
    """A second app on the same database: its own pool, its own LISTEN connection, its own sockets."""
    srv = await start_server(settings, db_dsn)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


class Live:
    """A live-feed client: decodes frames into protocol models and records the close code."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, media: str) -> None:
        self.ws, self.media = ws, media
        self.position: int | None = None

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str, token: str | None, *, media: str = JSON,
                      after: int | None = None, query: str = "", hello: bool = False) -> Live:
        """Header auth by default; `hello=True` authenticates like a browser, with the first frame."""
        enc = "msgpack" if media == MSGPACK else "json"
        qs = f"?encoding={enc}" + (f"&after={after}" if after is not None and not hello else "") + query
        headers = {"Authorization": f"Bearer {token}"} if token and not hello else {}
        ws = await http.ws_connect(url.replace("http", "ws") + "/v1/live" + qs, headers=headers, autoping=True)
        live = cls(ws, media)
        if hello:
            body = encode(LiveHello(type="hello", token=token or "x", encoding=enc, after=after), media)
            await (ws.send_bytes(body) if media == MSGPACK else ws.send_str(body.decode()))
        return live

    async def recv(self, timeout: float = WAIT) -> Any:
        """Next message, or the close code as an int."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data)  # the server's code (close_code may turn 1006 if our reply finds the socket gone)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return self.ws.close_code
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        assert (msg.type is aiohttp.WSMsgType.BINARY) == (self.media == MSGPACK)
        out = decode_live(msg.data, self.media)
        if isinstance(out, LiveEvent):
            self.position = out.position
        return out

    async def until(self, pred: Any, limit: int = 2000) -> list[Any]:
        """Messages up to and including the first one matching `pred` (bounded)."""
        seen = []
        for _ in range(limit):
            m = await self.recv()
            seen.append(m)
            if pred(m):
                return seen
        raise AssertionError(f"no matching message among {limit}")

    async def ready(self) -> LivePoke:
        """Supervisors get a poke once caught up: its watermark is a resume position. Changes committed shortly before
        the connect may come first, as events: a supervisor without `after` starts at the hub's head, which trails the
        log by up to one read (live_poll_s while nobody watches the department), and if a read is in flight when it
        joins, it is caught up from that head before its poke (otherwise the same events follow the poke)."""
        for _ in range(1000):  # bounded: a catch-up is a few events here
            first = await self.recv()
            if isinstance(first, LivePoke):
                if self.position is None:
                    self.position = first.watermark
                return first
            assert isinstance(first, LiveEvent), first  # never a refetch or a close before the poke
        raise AssertionError("no poke after 1000 events")

    async def close(self) -> None:
        await self.ws.close()


def events(msgs: list[Any]) -> list[LiveEvent]:
    return [m for m in msgs if isinstance(m, LiveEvent)]


async def log_since(pool: asyncpg.Pool, department: int, position: int) -> list[tuple[uuid.UUID, int]]:
    """The department's change log from a position on, in feed order: the truth a resumed stream must equal."""
    x, r = decode_position(position)
    rows = await pool.fetch(
        "SELECT ticket_id, version, xid::text::bigint AS x,"
        " row_number() OVER (PARTITION BY xid ORDER BY id) AS rank FROM changes"
        " WHERE department_id = $1 AND xid >= $2::text::xid8 ORDER BY xid, id", department, str(x))
    return [(row["ticket_id"], row["version"]) for row in rows if (row["x"], row["rank"]) > (x, r)]


async def test_push_through_a_reaches_supervisor_on_b_and_only_the_crews_devices(
    server: Server, server_b: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    (t,) = await make_tickets(pool, world, 1, crew="san-1")
    sup = await Live.connect(http, server_b.url, world.supervisors["sanitation"])
    await sup.ready()
    other_sup = await Live.connect(http, server_b.url, world.supervisors["street_services"], media=MSGPACK)
    await other_sup.ready()
    own = await Live.connect(http, server_b.url, world.device("san-1", 1).token, media=MSGPACK)
    foreign = await Live.connect(http, server_b.url, world.device("ss-1").token, hello=True)  # browser-style auth
    assert isinstance(await own.recv(), LivePoke) and isinstance(await foreign.recv(), LivePoke)  # connect pokes

    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    resp = await dev.push([dev.mutation("acknowledge", t.ticket.id)])
    assert resp.results[0].status == "applied"

    ev = (await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket is not None and m.ticket.version == 2))[-1]
    assert ev.event == "ticket_changed" and ev.ticket_id == t.ticket.id
    assert ev.ticket is not None and ev.ticket.status == "acknowledged" and "status" in ev.changed
    poke = await own.recv()
    assert isinstance(poke, LivePoke) and poke.watermark == resp.server_version + 1

    # A later change for ss-1 commits after the san-1 one, and NOTIFYs arrive in commit order: had the ss-1 phone
    # been poked for san-1's change, that poke would come first.
    (u,) = await make_tickets(pool, world, 1, crew="ss-1", service_type="Pothole Repair")
    poke = await foreign.recv()
    assert isinstance(poke, LivePoke) and poke.watermark > resp.server_version + 1
    seen = events(await other_sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket_id == u.ticket.id))
    assert all(e.ticket is not None and e.ticket.department == "street_services" for e in seen)
    for c in (sup, other_sup, own, foreign):
        await c.close()


async def _held_writer(pool: asyncpg.Pool, ticket_id: uuid.UUID) -> tuple[asyncpg.Connection, Any]:
    """A transaction that takes its xid and writes a change row, then stays open (I2's late committer)."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await lock_tickets(conn, [ticket_id])
    before = await load_tickets(conn, [ticket_id])
    await update_tickets(conn, [ticket_id], {"priority": "high"})
    await commit_changes(conn, before, actor_kind="system", actor="test", action="slow")
    return conn, tx


async def test_resume_after_reconnect_has_no_gap_and_no_duplicate(
    server: Server, server_b: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    dept = world.departments["sanitation"]
    slow, *_ = await make_tickets(pool, world, 1)
    sup = await Live.connect(http, server.url, world.supervisors["sanitation"])
    start = (await sup.ready()).watermark
    conn, tx = await _held_writer(pool, slow.ticket.id)  # began first, commits last
    try:
        await make_tickets(pool, world, 3)
        await make_tickets(pool, world, 2, crew="san-2")
    finally:
        await tx.commit()
        await pool.release(conn)
    got = events(await sup.until(lambda m: isinstance(m, LiveEvent)))
    assert got and got[0].ticket_id == slow.ticket.id  # the late committer is delivered first, not skipped
    await sup.close()  # disconnect mid-stream: the rest may or may not have been received
    mark = sup.position
    assert mark is not None
    await make_tickets(pool, world, 4)  # committed while disconnected
    # resume on the other process, from the last position received
    again = await Live.connect(http, server_b.url, world.supervisors["sanitation"], after=mark, hello=True)
    truth = await log_since(pool, dept, start)
    want = len(truth) - len(got)
    rest: list[LiveEvent] = []
    for _ in range(200):
        if len(rest) >= want:
            break
        m = await again.recv()
        assert not isinstance(m, (int, LiveRefetch)), m
        if isinstance(m, LiveEvent):
            rest.append(m)
    stream = [(e.ticket_id, e.ticket.version) for e in got + rest if e.ticket is not None]
    assert stream == truth and len(truth) >= 10
    # the held writer took its xid first, so its change precedes the ones that committed before it
    assert stream.index((slow.ticket.id, 2)) < len(stream) - 9
    positions = [e.position for e in got + rest]
    assert positions == sorted(set(positions))  # strictly increasing: one total order
    await again.close()


async def test_position_older_than_retention_gets_refetch(
    server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    sup = await Live.connect(http, server.url, world.supervisors["sanitation"])
    start = (await sup.ready()).watermark
    await make_tickets(pool, world, 1)
    await sup.until(lambda m: isinstance(m, LiveEvent))
    await sup.close()
    await pool.execute("UPDATE changes SET created_at = now() - interval '30 days'")  # as if the window had passed
    again = await Live.connect(http, server.url, world.supervisors["sanitation"], after=start)
    assert isinstance(await again.recv(), LiveRefetch)
    assert isinstance(await again.recv(), LivePoke)  # then live from the head
    (t,) = await make_tickets(pool, world, 1)
    (ev,) = events(await again.until(lambda m: isinstance(m, LiveEvent)))
    assert ev.ticket_id == t.ticket.id
    await again.close()


async def raw_live_socket(url: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A consumer that truly stops reading: a raw socket with a tiny receive buffer that reads the handshake and the
    first frame (the catch-up poke, for its position) and then nothing (aiohttp's client keeps buffering instead)."""
    import base64
    import os

    host, port = url.removeprefix("http://").split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=raw, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1/live?encoding=json HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101"), head
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), WAIT)
    assert b0 == 0x81 and b1 < 126  # one unmasked text frame: the poke
    poke = json.loads(await reader.readexactly(b1))
    assert poke["type"] == "poke"
    return reader, writer, int(poke["watermark"])


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), WAIT)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(n), WAIT)


async def test_slow_consumer_is_dropped_while_others_keep_receiving(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(settings.model_copy(update={"live_queue_size": 8, "live_lag_timeout_s": 1.0}), db_dsn)
    try:
        slow_reader, slow_writer, start = await raw_live_socket(srv.url, world.supervisors["sanitation"])
        hub = srv.app[LIVE]
        (sub,) = [s for s in hub.all if s.role == "supervisor"]
        sub.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        fast = await Live.connect(http, srv.url, world.supervisors["sanitation"], media=MSGPACK)
        await fast.ready()

        async def consume() -> list[uuid.UUID]:
            out: list[uuid.UUID] = []
            for _ in range(5000):
                m = await fast.recv()
                if isinstance(m, LiveEvent):
                    if m.ticket is not None and m.ticket.crew == "san-2":  # the end marker
                        return out
                    out.append(m.ticket_id)  # type: ignore[arg-type]
            raise AssertionError("end marker never arrived")

        reader = asyncio.create_task(consume())  # a remote peer reads all the time; so does this one
        created: list[uuid.UUID] = []
        for _ in range(150):  # until the slow one is dropped: kernel buffers on loopback absorb a few hundred KiB
            created += [r.ticket.id for r in await make_tickets(pool, world, 20)]
            await asyncio.sleep(0.01)  # separate transactions, separate reads, like steady field traffic
            if sub.closing:  # queue full for live_lag_timeout_s: closed
                break
        await make_tickets(pool, world, 1, crew="san-2")
        got = await asyncio.wait_for(reader, WAIT)
        assert got == created  # the fast consumer got everything, in order
        assert sub.closing and sub not in hub.all
        # now the slow client reads what was buffered for it: events in order, then the close frame with 4008
        seen: list[uuid.UUID] = []
        position, code = start, None
        for _ in range(len(created) + 10):
            op, payload = await read_frame(slow_reader)
            if op == 0x8:
                code = int.from_bytes(payload[:2], "big")
                break
            ev = json.loads(payload)
            if ev["type"] == "event":
                seen.append(uuid.UUID(ev["ticket_id"]))
                position = ev["position"]
        assert code == CLOSE_SLOW
        slow_writer.close()
        assert seen == created[: len(seen)]
        # it resumes from its last position and gets exactly the rest
        again = await Live.connect(http, srv.url, world.supervisors["sanitation"], after=position)
        for _ in range(5000):
            if len(seen) >= len(created):
                break
            m = await again.recv()
            if isinstance(m, LiveEvent):
                seen.append(m.ticket_id)  # type: ignore[arg-type]
        assert seen == created
        await again.close()
        await fast.close()
    finally:
        await srv.runner.cleanup()


async def test_revoked_device_is_disconnected_by_the_revocation_sweep(
    server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    dev = await Live.connect(http, server.url, world.device("san-1").token)
    assert isinstance(await dev.recv(), LivePoke)
    other = await Live.connect(http, server.url, world.device("san-1", 1).token)
    assert isinstance(await other.recv(), LivePoke)
    await pool.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", world.device("san-1").device_id)
    assert await dev.recv(timeout=3 * WAIT) == CLOSE_REVOKED  # the sweep runs every live_revoke_check_s (2 s)
    (t,) = await make_tickets(pool, world, 1)  # the crew's other phone is still connected and poked
    assert isinstance(await other.recv(), LivePoke)
    await other.close()
    # a revoked token cannot open a socket either way
    late = await Live.connect(http, server.url, world.device("san-1").token, hello=True)
    assert await late.recv() == CLOSE_REVOKED
    async with http.get(server.url + "/v1/live", headers={"Authorization": f"Bearer {world.device('san-1').token}"}) as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "token_revoked"


async def test_auth_rules(settings: Settings, db_dsn: str, world: World, http: aiohttp.ClientSession) -> None:
    srv = await start_server(settings.model_copy(update={"live_auth_timeout_s": 0.3}), db_dsn)
    try:
        silent = await Live.connect(http, srv.url, None)
        assert await silent.recv() == CLOSE_UNAUTHORIZED  # no hello in time
        bad = await Live.connect(http, srv.url, "fsd_" + "A" * 43, hello=True)
        assert await bad.recv() == CLOSE_UNAUTHORIZED
        async with http.get(srv.url + "/v1/live") as r:  # not an upgrade, no token
            assert r.status == 401
        admin = await Live.connect(http, srv.url, world.admin)
        assert await admin.recv() == CLOSE_BAD_REQUEST  # an admin must name the department
        admin = await Live.connect(http, srv.url, world.admin, query="&department=street_services")
        assert isinstance(await admin.recv(), LivePoke)
        await admin.close()
        garbage = await http.ws_connect(srv.url.replace("http", "ws") + "/v1/live")
        await garbage.send_str('{"type":"poke","watermark":1}')
        msg = await garbage.receive(timeout=WAIT)
        assert msg.type is aiohttp.WSMsgType.CLOSE and garbage.close_code == CLOSE_BAD_REQUEST
    finally:
        await srv.runner.cleanup()


async def test_database_restart_during_a_live_session(
    server: Server, pg_cluster: EmbeddedPostgres, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    sup = await Live.connect(http, server.url, world.supervisors["sanitation"])
    await sup.ready()
    dev = await Live.connect(http, server.url, world.device("san-1").token)
    assert isinstance(await dev.recv(), LivePoke)
    (before,) = await make_tickets(pool, world, 1)  # committed just before the crash: its NOTIFY may be lost
    pg_cluster.stop(force=True)
    pg_cluster.start()
    after = None
    for _ in range(100):  # the pool reconnects on demand; the cluster accepts connections shortly after start
        try:
            (after,) = await make_tickets(pool, world, 1)
            break
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.1)
    assert after is not None
    got = events(await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket_id == after.ticket.id))
    assert [e.ticket_id for e in got] == [before.ticket.id, after.ticket.id]  # both, once each, in order
    hub = server.app[LIVE]
    for _ in range(100):  # the LISTEN connection came back by itself
        if hub.listening:
            break
        await asyncio.sleep(0.1)
    assert hub.listening
    (third,) = await make_tickets(pool, world, 1)
    await dev.until(lambda m: isinstance(m, LivePoke) and m.watermark > decode_position(got[-1].position)[0] + 1)
    got = events(await sup.until(lambda m: isinstance(m, LiveEvent)))
    assert [e.ticket_id for e in got] == [third.ticket.id]
    await sup.close()
    await dev.close()


async def test_late_field_report_reaches_supervisor_as_its_own_event(
    server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    (t,) = await make_tickets(pool, world, 1)
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    done = dev.mutation("complete", t.ticket.id, {"resolution_code": "collected"})
    async with http.post(f"{server.url}/v1/tickets/{t.ticket.id}/cancel", json={"reason": "resident cancelled"},
                         headers={"Authorization": f"Bearer {world.supervisors['sanitation']}"}) as r:
        assert r.status == 200
    sup = await Live.connect(http, server.url, world.supervisors["sanitation"], media=MSGPACK)
    await sup.ready()
    (res,) = (await dev.push([done])).results
    assert res.reason == "late_field_report"
    got = events(await sup.until(lambda m: isinstance(m, LiveEvent) and m.event == "late_report"))
    late = got[-1]
    assert late.ticket_id == t.ticket.id and late.detail["kind"] == "late_field_report"
    assert late.detail["device_id"] == world.device("san-1").device_id and late.ticket is None
    # the change row of the same transaction comes first in the stream (rank order: changes, then conflicts)
    same_tx = [e for e in got if decode_position(e.position)[0] == decode_position(late.position)[0]]
    assert [e.event for e in same_tx] == ["ticket_changed", "late_report"]
    await sup.close()


async def test_burst_bigger_than_the_queue_is_caught_up_not_dropped(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    srv = await start_server(settings.model_copy(update={"live_queue_size": 8}), db_dsn)
    try:
        sup = await Live.connect(http, srv.url, world.supervisors["sanitation"])
        await sup.ready()
        hub = srv.app[LIVE]
        (sub,) = [s for s in hub.all if s.role == "supervisor"]
        sub.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        burst = [r.ticket.id for r in await make_tickets(pool, world, 300)]  # one transaction, ~230 KiB of events
        got: list[uuid.UUID] = []
        for _ in range(1000):
            if len(got) >= len(burst):
                break
            m = await sup.recv()
            assert not isinstance(m, int), f"closed with {m}"
            if isinstance(m, LiveEvent):
                got.append(m.ticket_id)  # type: ignore[arg-type]
        assert got == burst and not sub.closing and hub.fell_behind >= 1
        (t,) = await make_tickets(pool, world, 1)  # and it is back in the live fan-out
        assert (await sup.until(lambda m: isinstance(m, LiveEvent)))[-1].ticket_id == t.ticket.id
        await sup.close()
    finally:
        await srv.runner.cleanup()


async def test_shutdown_survives_a_background_loop_that_died(server: Server) -> None:
    """A loop that ended with an error (seen: asyncpg InternalClientError after a PostgreSQL restart) must not turn
    the hub's shutdown into a crash that skips closing the pool and sockets."""
    hub = server.app[LIVE]

    async def crashed() -> None:
        raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")

    task = asyncio.create_task(crashed(), name="live.crashed")
    await asyncio.sleep(0)
    hub._tasks.append(task)
    await hub.stop()  # before the fix: re-raised InternalClientError out of on_shutdown
    assert task.done() and isinstance(task.exception(), asyncpg.InternalClientError)
    assert all(t.done() for t in hub._tasks)


async def test_supervisor_events_flow_while_every_pooled_connection_is_taken(
    server: Server, pool: asyncpg.Pool, world: World, http: aiohttp.ClientSession
) -> None:
    """At the fleet's knee every pooled connection is checked out; the feed reads the log on its own connection, so a
    supervisor still gets the event instead of waiting for the pool (seen: push -> supervisor p99 of seconds)."""
    sup = await Live.connect(http, server.url, world.supervisors["sanitation"])
    await sup.ready()
    app_pool = server.app[POOL]
    held = [await app_pool.acquire() for _ in range(app_pool.get_max_size())]
    try:
        (t,) = await make_tickets(pool, world, 1)  # committed (with its NOTIFY) by another client of the database
        got = await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket_id == t.ticket.id)
        assert got[-1].ticket is not None and got[-1].ticket.id == t.ticket.id
    finally:
        for conn in held:
            await app_pool.release(conn)
    await sup.close()


def test_ticket_event_frame_is_written_around_the_stored_document() -> None:
    # The stored canonical text goes into the JSON frame as is (non-ASCII raw, 34.0 stays a float); msgpack subscribers
    # get the same event. Expected values written by hand.
    from sync_server.engine.live_frames import event_frame

    doc = '{"description":"Sofá – nº 12 ☕","id":"00000000-0000-4000-8000-00000000000a","lat":34.0,"version":3}'
    row = {"x": 5, "rank": 2, "src": 0, "ticket_id": uuid.UUID("00000000-0000-4000-8000-00000000000a"), "doc": doc,
           "changed": ["status", "notes"], "id": 9}
    frame = event_frame(row)  # type: ignore[arg-type]
    expected = {"type": "event", "position": (5 << 20) | 2, "event": "ticket_changed",
                "ticket_id": "00000000-0000-4000-8000-00000000000a",
                "ticket": {"description": "Sofá – nº 12 ☕", "id": "00000000-0000-4000-8000-00000000000a", "lat": 34.0,
                           "version": 3},
                "changed": ["status", "notes"], "detail": {}}
    text = frame.data(JSON)
    assert "Sofá – nº 12 ☕".encode() in text
    assert json.loads(text) == expected and isinstance(json.loads(text)["ticket"]["lat"], float)
    assert list(json.loads(text)) == ["type", "position", "event", "ticket_id", "ticket", "changed", "detail"]
    import msgpack

    assert msgpack.unpackb(frame.data(MSGPACK), raw=False) == expected
    assert frame.data(JSON) is text  # encoded once per encoding, however many sockets get it

"""Live feed hub, one per process: a dedicated LISTEN connection wakes one change-log reader, which fans out to this
process's sockets. NOTIFY is only a wake-up; events come from the log between watermarks, so nothing is lost.

Positions: a supervisor event's position packs (xid, rank) as `xid << 20 | rank`, where rank numbers the events of
one transaction in one department (1..). Events are delivered only once their xid is below the database watermark
(`pg_snapshot_xmin`), i.e. once every earlier transaction has finished, so the stream is totally ordered by
position and a resume from any position is gap- and duplicate-free (I2). `xid << 20 | 0` means "everything below
xid delivered" and is what the catch-up poke carries.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import WSMsgType

from protocol import MSGPACK
from protocol.live import LivePoke, LiveRefetch
from sync_server.auth import AUTH_CHANNEL, AuthCache
from sync_server.settings import Settings
from sync_server.storage import feed

log = structlog.get_logger(__name__)

from sync_server.engine.live_frames import (  # noqa: F401  # re-exported: the API module and tests use them here
    CHANNEL,
    CLOSE_BAD_REQUEST,
    CLOSE_GOING_AWAY,
    CLOSE_REVOKED,
    CLOSE_SLOW,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    Frame,
    PENDING_POLL,
    Subscriber,
    WRITE_LIMIT,
    _frame_or_none,
    decode_position,
    encode_position,
    parse_notice,
    wait_event,
)

# InternalClientError: asyncpg's protocol state machine refusing a pool connection that a server restart left
# mid-operation; like the others it is transient for a background loop (the pool replaces the connection).
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncio.TimeoutError)


class LiveHub:
    """Subscribers of this process, the LISTEN connection, the log reader, the writer and the revocation sweep."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, settings: Settings, auth: AuthCache | None = None) -> None:
        self.pool, self.dsn, self.settings = pool, dsn, settings
        self.auth = auth  # its invalidations ride on our LISTEN connection rather than a connection of their own
        self.devices: dict[int, set[Subscriber]] = {}
        self.supervisors: dict[int, set[Subscriber]] = {}
        self.all: set[Subscriber] = set()
        self.head = 0  # watermark: every event of a watched department below it has been fanned out
        self.listening = False
        self._notified = 0  # highest xid announced by NOTIFY
        self._wake = asyncio.Event()
        self._flush_wake = asyncio.Event()
        self._dirty: set[Subscriber] = set()
        self._reading: set[int] | None = None  # departments of the read in flight
        self._read_done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.fell_behind = 0  # supervisors moved from the fan-out to a catch-up (bursts bigger than the queue)
        self._closers: set[asyncio.Task[Any]] = set()
        self._retention = timedelta(days=settings.retention_days * 0.95)
        # The log reader's own connection: at the pool's knee every pooled connection is taken and a read queued
        # behind pushes would add the pool wait to every supervisor event. Only _feed_loop uses it (one at a time).
        self._reader: asyncpg.Connection | None = None
        self.reads = 0  # log reads that found something to fan out (stats(): reads per wake-up shows coalescing)
        self.wakes = 0

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Start from the current watermark: earlier history is for resuming clients to ask for."""
        async with self.pool.acquire() as conn:
            self.head = await feed.watermark(conn)
        for body in (self._listen_loop, self._feed_loop, self._flush_loop, self._revoke_loop):
            self._tasks.append(asyncio.create_task(body(), name=f"live.{body.__name__}"))

    async def stop(self) -> None:
        """Tell clients to go elsewhere, then stop the background loops (idempotent: shutdown and cleanup both call it)."""
        if self._stopped:
            return
        self._stopped = True
        for sub in list(self.all):
            self.close(sub, CLOSE_GOING_AWAY, "server shutting down")
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - a loop that died of a bug must not turn shutdown into a crash
                log.exception("live.loop_failed", loop=t.get_name())
        if self._reader is not None:
            self._reader.terminate()
            self._reader = None
        if self._closers:
            await asyncio.wait(self._closers, timeout=2)

    # ------------------------------------------------------------------ subscribers

    def add_device(self, sub: Subscriber) -> None:
        """Devices get pokes only; a first poke makes a reconnecting phone pull what it missed."""
        assert sub.crew_id is not None
        self.all.add(sub)
        self.devices.setdefault(sub.crew_id, set()).add(sub)
        self.enqueue(sub, Frame(LivePoke(type="poke", watermark=self.head)), poke=True)

    async def follow(self, sub: Subscriber, after: int | None) -> None:
        """Catch a supervisor up from `after` (or start at the head), then hand it to the live fan-out."""
        assert sub.department_id is not None
        self.all.add(sub)
        sub.pos = (self.head, 0)
        if after is not None:
            key = decode_position(after)
            async with self.pool.acquire() as conn:
                ok = (0 < key[0] <= await feed.watermark(conn)
                      and await feed.position_is_fresh(conn, key[0], self._retention))
            if ok:
                sub.pos = key
            else:
                self.enqueue(sub, Frame(LiveRefetch(type="refetch")))
                sub.pos = (self.head, 0)
        await self._catch_up(sub)

    async def _catch_up(self, sub: Subscriber) -> None:
        """Feed a supervisor from the log at the pace it reads, until it reaches the head and rejoins the fan-out."""
        assert sub.department_id is not None
        page = max(1, self.settings.live_queue_size // 2)  # with the drain wait below, the queue never overflows
        while not sub.closing:
            if not await self._until_drained(sub):  # first, so that rejoining never starts with a full queue
                self.close(sub, CLOSE_SLOW, "consumer too slow; reconnect and resume")
                return
            head = self.head
            if sub.pos >= (head, 0):
                if self._reading is None or sub.department_id in self._reading:
                    sub.behind = False
                    self.supervisors.setdefault(sub.department_id, set()).add(sub)
                    self.enqueue(sub, Frame(LivePoke(type="poke", watermark=encode_position(max(sub.pos, (head, 0))))))
                    return
                await self._read_done.wait()  # the read in flight does not cover this department: catch up after it
                continue
            async with self.pool.acquire() as conn:
                rows = await feed.events(conn, [sub.department_id], sub.pos[0], head, sub.pos, page)
            for row in rows:
                frame = _frame_or_none(row)
                if frame is not None and not self.enqueue(sub, frame):
                    return  # closed meanwhile
                sub.pos = (row["x"], row["rank"])
            if len(rows) < page:
                sub.pos = max(sub.pos, (head, 0))

    def _fall_behind(self, sub: Subscriber) -> None:
        """A burst bigger than the queue: leave the fan-out and catch up from the log (positions make it exact)."""
        assert sub.department_id is not None
        sub.behind = True
        self.fell_behind += 1
        group = self.supervisors.get(sub.department_id)
        if group is not None:
            group.discard(sub)
            if not group:
                del self.supervisors[sub.department_id]

        async def recover() -> None:
            try:
                await self._catch_up(sub)
            except _DB_ERRORS as exc:
                log.warning("live.catch_up_failed", error=str(exc))
                self.close(sub, CLOSE_TRY_AGAIN, "database unavailable, reconnect")

        self._spawn(recover())

    def _spawn(self, coro: Any) -> None:
        """Background work that must not be garbage-collected mid-flight."""
        task = asyncio.create_task(coro)
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def remove(self, sub: Subscriber) -> None:
        """Forget a socket (its handler ended)."""
        sub.closing = True
        self.all.discard(sub)
        self._dirty.discard(sub)
        sub.queue = None
        for registry, key in ((self.devices, sub.crew_id), (self.supervisors, sub.department_id)):
            if key is None:
                continue
            group = registry.get(key)
            if group is not None:
                group.discard(sub)
                if not group:
                    del registry[key]
        if sub.drained is not None:
            sub.drained.set()

    def close(self, sub: Subscriber, code: int, reason: str) -> None:
        """Close a socket from outside its handler; its handler's read loop then ends and calls `remove`."""
        if sub.closing:
            return
        log.info("live.close", code=code, reason=reason, device=sub.device_id, user=sub.user_id)
        self.remove(sub)
        self._spawn(sub.ws.close(code=code, message=reason.encode(), drain=False))

    # ------------------------------------------------------------------ writing

    def enqueue(self, sub: Subscriber, frame: Frame, *, poke: bool = False) -> bool:
        """Write now if the socket keeps up, else queue; False when the frame was not taken (queue full or closed).

        A full queue moves a supervisor to a catch-up from the log (it is closed with 4008 only if it then stays
        behind for `live_lag_timeout_s`); any other socket is closed with 4008 at once."""
        if sub.closing:
            return False
        q = sub.queue
        if not q and self._write(sub, frame):
            return not sub.closing
        if poke and sub.poke_queued:
            return True  # a poke already waiting says the same thing: pull
        if q is None:
            q = sub.queue = deque()
        if len(q) >= self.settings.live_queue_size:
            if sub.department_id is not None and sub in self.supervisors.get(sub.department_id, ()):
                self._fall_behind(sub)
            else:
                self.close(sub, CLOSE_SLOW, "consumer too slow; reconnect and resume")
            return False
        q.append(frame)
        sub.poke_queued = sub.poke_queued or poke
        self._dirty.add(sub)
        self._flush_wake.set()
        return True

    def _write(self, sub: Subscriber, frame: Frame) -> bool:
        """Hand one frame to the transport without waiting; False when the peer is behind (the frame stays queued)."""
        tr = sub.transport
        if tr is None or tr.is_closing():
            self.close(sub, CLOSE_GOING_AWAY, "connection lost")
            return True
        data = frame.data(sub.media)
        if tr.get_write_buffer_size() + len(data) > WRITE_LIMIT:
            return False
        coro = sub.ws.send_frame(data, WSMsgType.BINARY if sub.media == MSGPACK else WSMsgType.TEXT)
        try:
            coro.send(None)
        except StopIteration:
            pass
        except (ConnectionError, RuntimeError) as exc:  # peer gone under us; its handler cleans up
            log.debug("live.write_failed", error=str(exc))
            self.close(sub, CLOSE_GOING_AWAY, "connection lost")
        else:
            # The frame is in the transport; aiohttp wanted to wait for drain. We meter the buffer ourselves instead,
            # so one slow socket never blocks the others.
            coro.close()
        return True

    def _drain(self, sub: Subscriber) -> None:
        q = sub.queue
        while q and not sub.closing:
            if not self._write(sub, q[0]):
                return
            frame = q.popleft()
            if isinstance(frame.model, LivePoke):
                sub.poke_queued = False
        self._dirty.discard(sub)
        if sub.drained is not None:
            sub.drained.set()

    async def _until_drained(self, sub: Subscriber) -> bool:
        """Pace a catch-up to the client's reading speed (bounded memory however far behind it is); False when the
        queue stayed over half full for `live_lag_timeout_s` (the client is not reading)."""
        while sub.queue and len(sub.queue) > self.settings.live_queue_size // 2 and not sub.closing:
            sub.drained = sub.drained or asyncio.Event()
            sub.drained.clear()
            if not await wait_event(sub.drained, self.settings.live_lag_timeout_s):
                return False
        return True

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            while self._dirty:
                for sub in list(self._dirty):
                    self._drain(sub)
                if self._dirty:
                    await asyncio.sleep(0.02)  # peers behind on reading: look again shortly

    # ------------------------------------------------------------------ LISTEN

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notice = parse_notice(payload)
        if notice is None:
            self._wake.set()
            return
        self._notified = max(self._notified, notice.xid)
        crews: Iterable[int] = self.devices.keys() if notice.crews is None else notice.crews
        poke: Frame | None = None
        for crew in list(crews):
            for sub in list(self.devices.get(crew, ())):
                poke = poke or Frame(LivePoke(type="poke", watermark=notice.xid + 1))
                self.enqueue(sub, poke, poke=True)
        if any(d in self.supervisors for d in notice.departments):
            self._wake.set()

    def _on_auth(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        assert self.auth is not None
        self.auth.invalidate(payload)

    async def _listen_loop(self) -> None:
        """One dedicated connection (LISTEN does not survive a pool's reset); reconnect with backoff forever."""
        delay = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=10, server_settings={"application_name": "fieldsync-live"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if self.auth is not None:
                    await conn.add_listener(AUTH_CHANNEL, self._on_auth)
                    self.auth.set_listening(True)
                self.listening = True
                log.info("live.listening")
                self._resync()
                delay = 0.1
                while not lost.is_set():
                    await wait_event(lost, 15)
                    if not lost.is_set():  # a silent half-open TCP connection never reports itself
                        await conn.fetchval("SELECT 1", timeout=5)
            except _DB_ERRORS as exc:
                log.warning("live.listen_lost", error=str(exc), retry_in=delay)
            finally:
                self.listening = False
                if self.auth is not None and self.auth.listening:
                    self.auth.set_listening(False)  # invalidations may be missed from here on: short TTL again
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _resync(self) -> None:
        """Notifications may have been missed while not listening: every device pulls, the reader re-reads."""
        for group in self.devices.values():
            for sub in list(group):
                self.enqueue(sub, Frame(LivePoke(type="poke", watermark=self.head)), poke=True)
        self._wake.set()

    # ------------------------------------------------------------------ the log reader

    async def _feed_loop(self) -> None:
        retry = 0.01
        while True:
            # A NOTIFY for xid >= head means a committed change waits for older transactions to finish: poll the
            # watermark briskly until it passes (a 20 ms statement while pending, nothing while idle).
            pending = self._notified >= self.head and bool(self.supervisors)
            await wait_event(self._wake, PENDING_POLL if pending else self.settings.live_poll_s)
            self._wake.clear()  # every NOTIFY that arrived until now is covered by the one read below (coalesced)
            self.wakes += 1
            try:
                moved = await self._advance()
            except _DB_ERRORS as exc:
                log.warning("live.read_failed", error=str(exc))
                if self._reader is not None:
                    self._reader.terminate()
                    self._reader = None
                await asyncio.sleep(min(retry * 4, 2.0))
                moved = False
            except Exception:  # noqa: BLE001 - outermost loop: a bug must not silence the feed for good
                log.exception("live.read_crashed")
                await asyncio.sleep(1.0)
                moved = False
            retry = 0.01 if moved else min(retry * 2, 2.0)  # back-off after database errors

    async def _advance(self) -> bool:
        """Read [head, watermark) for the watched departments and fan it out; head moves only after a full read."""
        departments = set(self.supervisors)
        self._reading = departments
        self._read_done.clear()
        try:
            conn = await self._reader_conn()
            hi, rows = await feed.advance(conn, sorted(departments), self.head)  # one round trip per cycle
            if hi <= self.head:
                return False
            self.reads += 1
            self.head = hi  # no await from here to the end of the fan-out: joiners see a consistent head
            for row in rows:
                group = self.supervisors.get(row["department_id"])
                if not group:
                    continue
                key = (row["x"], row["rank"])
                frame = _frame_or_none(row)
                if frame is None:
                    continue
                for sub in list(group):
                    if key > sub.pos and self.enqueue(sub, frame):
                        sub.pos = key
            return True
        finally:
            self._reading = None
            self._read_done.set()

    async def _reader_conn(self) -> asyncpg.Connection:
        """The reader's dedicated connection, (re)opened on demand; errors reach _feed_loop, which backs off."""
        if self._reader is None or self._reader.is_closed():
            self._reader = await asyncpg.connect(self.dsn, timeout=10,
                                                 server_settings={"application_name": "fieldsync-live-reader"})
        return self._reader

    # ------------------------------------------------------------------ revocation

    async def _revoke_loop(self) -> None:
        """Close sockets of revoked devices and users within a few seconds: one set query per sweep."""
        while True:
            await asyncio.sleep(self.settings.live_revoke_check_s)
            subs = list(self.all)
            devices = [s.device_id for s in subs if s.device_id is not None]
            users = [s.user_id for s in subs if s.user_id is not None]
            if not devices and not users:
                continue
            try:
                async with self.pool.acquire() as conn:
                    gone_devices, gone_users = await feed.revoked(conn, devices, users)
            except _DB_ERRORS as exc:
                log.warning("live.revoke_check_failed", error=str(exc))
                continue
            except Exception:  # noqa: BLE001 - outermost loop: a bug must not stop revocation for good
                log.exception("live.revoke_check_crashed")
                continue
            for sub in subs:
                if sub.device_id in gone_devices or sub.user_id in gone_users:
                    self.close(sub, CLOSE_REVOKED, "token revoked")

    def stats(self) -> dict[str, Any]:
        """Counts for /readyz-style diagnostics and the benchmark."""
        return {"sockets": len(self.all), "devices": sum(map(len, self.devices.values())),
                "supervisors": sum(map(len, self.supervisors.values())), "head": self.head, "listening": self.listening,
                "fell_behind": self.fell_behind, "wakes": self.wakes, "reads": self.reads}


__all__ = ["LiveHub", "Subscriber", "decode_position", "encode_position", "parse_notice",
           "CLOSE_BAD_REQUEST", "CLOSE_GOING_AWAY", "CLOSE_REVOKED", "CLOSE_SLOW", "CLOSE_TRY_AGAIN",
           "CLOSE_UNAUTHORIZED"]

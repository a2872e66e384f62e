"""Live-feed wake-ups of a process's pushes, coalesced: one NOTIFY at a time on a connection of its own, so a push
returns its pool connection right after COMMIT instead of paying a fifth round trip (and a transaction) for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import asyncpg
import structlog
from aiohttp import web

from sync_server.keys import DSN, WAKEUPS
from sync_server.storage.tickets import NOTIFY_AFTER_SQL, live_payload

log = structlog.get_logger(__name__)

# asyncpg reports a connection killed under a statement as a protocol-state InternalClientError, not only as
# InterfaceError (engine/live.py's reader catches the same set)
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


class LiveWakeups:
    """Pushes that committed since the last NOTIFY, merged into one payload: the newest xid (a listener keeps the
    highest it saw; a device's poke then carries a watermark at least its change's) and the union of departments and
    crews. A NOTIFY is only a wake-up (the feed reads the log, and polls every live_poll_s without one), so a
    wake-up lost to a broken connection costs latency, never an event."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.sent = 0  # NOTIFY statements sent (tests and metrics read it)
        self._xid = -1
        self._departments: set[int] = set()
        self._crews: set[int] = set()
        self._due = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def wake(self, xid: int, departments: Iterable[int], crews: Iterable[int]) -> None:
        """Queue a committed push's wake-up; no I/O here, the sender task notifies as soon as it is free."""
        self._xid = max(self._xid, xid)
        self._departments.update(departments)
        self._crews.update(crews)
        self._due.set()

    def start(self) -> None:
        """Start the sender task (once, on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Send what is queued (best effort), then stop the task and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._xid >= 0:
            try:
                await asyncio.wait_for(self._send(), 2)
            except _DB_ERRORS as exc:
                log.warning("wakeups.final_send_failed", error=type(exc).__name__)
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            await self._due.wait()
            try:
                await self._send()
                delay = 0.1
            except _DB_ERRORS as exc:
                log.warning("wakeups.notify_failed", error=type(exc).__name__, detail=str(exc)[:200], retry_in=delay)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(delay)  # the queued wake-up is dropped: the feed's poll covers it
                delay = min(delay * 2, 5.0)

    async def _send(self) -> None:
        """One NOTIFY for everything queued until now (asynchronous commit: a wake-up needs no WAL flush)."""
        self._due.clear()
        if self._xid < 0:
            return
        payload = f"{self._xid}{live_payload(self._departments, self._crews)}"
        self._xid, self._departments, self._crews = -1, set(), set()
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=10,
                                               server_settings={"application_name": "fieldsync-wakeups"})
        await self._conn.execute(NOTIFY_AFTER_SQL, payload)
        self.sent += 1



async def wakeups_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's wake-up sender for the app's lifetime (its own connection, like the feed's LISTEN: never pooled)."""
    wakeups = LiveWakeups(app[DSN])
    wakeups.start()
    app[WAKEUPS] = wakeups
    yield
    await wakeups.close()

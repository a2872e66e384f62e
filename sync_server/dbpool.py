"""The process's asyncpg pool, timed and admitted: how long a task waits for a connection and how long it keeps one, by
route, and who gets the next free connection when every one is taken.

At the knee of the fleet benchmark every pool connection is checked out while PostgreSQL's backends sit "idle in
transaction": the connections are held while the event loop is busy elsewhere. Pool occupancy alone cannot say
which requests hold them, or for how long; these two timings per route can (Prometheus histograms in metrics.py).

Admission: asyncpg's pool queue is one FIFO for every acquisition, so a request that needs the database several times
(a photo PATCH: look up, claim, acknowledge) queues behind the whole backlog each time, and a backlog of hundreds makes
every client wait until it gives up (30-s timeouts) while the server still does the work. `Admission` hands a freed
connection to a request that was already served once (or to the server's own loops) before one still waiting for its
first, first come first served within each group, and refuses a new request with a typed 503 when the queue is too long
or it has waited too long, so clients back off (Retry-After) instead of timing out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg

from protocol import ErrorCode, ProtocolError


@dataclass(slots=True)
class RequestTag:
    """What the pool knows of the request it serves: its route template, and whether it already had a connection."""

    route: str
    served: bool = False


# The request being served (set by api/metrics_mw); None for tasks started outside a request (live feed, prune).
REQUEST: ContextVar[RequestTag | None] = ContextVar("fieldsync_request", default=None)
SHED_RETRY_AFTER = 5  # seconds a refused client waits: it met a backlog of many seconds, an instant retry would rejoin it

Observer = Callable[[str, str, float], None]  # (what: "wait" | "hold", route, seconds)


class Admission:
    """The pool's slots (one per connection) and who waits for them: requests already served once and the server's own
    loops first, then requests waiting for their first connection; each group first come, first served.

    Only a first wait is ever refused: a request that has begun (a PATCH whose bytes are on disk, a push about to be
    answered) always finishes, and background loops always run.
    """

    def __init__(self, slots: int, max_waiting: int, max_wait_s: float) -> None:
        self.free = slots
        self.max_waiting, self.max_wait_s = max_waiting, max_wait_s
        self._first: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._again: deque[tuple[float, asyncio.Future[None]]] = deque()
        self.on_shed: Callable[[], None] | None = None  # the app's metrics counter

    def waiting(self) -> int:
        """Tasks waiting for a slot."""
        return len(self._first) + len(self._again)

    async def enter(self, first: bool) -> None:
        """Take a slot, waiting in line; a request's first wait raises a 503 ProtocolError instead of queueing behind
        max_waiting others or for longer than max_wait_s."""
        if self.free > 0 and not self._first and not self._again:
            self.free -= 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._first if first else self._again
        if first and len(queue) >= self.max_waiting:
            raise self._refuse()
        entry = (now, loop.create_future())
        queue.append(entry)
        try:
            if first:
                async with asyncio.timeout(self.max_wait_s):
                    await entry[1]
            else:
                await entry[1]
        except BaseException as exc:
            if entry[1].done() and not entry[1].cancelled():
                self.leave()  # handed a slot just as we gave up: pass it on
            else:
                entry[1].cancel()
                try:
                    queue.remove(entry)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise self._refuse() from None
            raise

    def leave(self) -> None:
        """Give a slot back: straight to the next waiter, if any."""
        for queue in (self._again, self._first):
            while queue:
                _, fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)
                    return
        self.free += 1

    def _refuse(self) -> ProtocolError:
        if self.on_shed is not None:
            self.on_shed()
        return ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "server busy, retry after Retry-After",
                             {"retry_after": SHED_RETRY_AFTER})


class MeteredPool(asyncpg.Pool):
    """asyncpg.Pool behind an Admission, with an observer called for every acquisition (time waited) and release (time
    held)."""

    def __init__(self, *args: Any, admission: Admission | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._observer: Observer | None = None
        self._taken: dict[int, tuple[float, str]] = {}
        self.admission = admission

    def set_observer(self, observer: Observer | None) -> None:
        """Where the timings go (the app's Metrics); None stops timing."""
        self._observer = observer

    def waiting(self) -> int:
        """Tasks waiting for a connection (admission line and asyncpg's own queue)."""
        queue = getattr(self, "_queue", None)
        inner = len(getattr(queue, "_getters", ()) or ())
        return inner + (self.admission.waiting() if self.admission is not None else 0)

    async def _acquire(self, timeout: float | None) -> Any:
        # The one path behind `pool.acquire()` (context manager and awaitable alike) in asyncpg 0.29-0.32.
        started = time.perf_counter()
        tag = REQUEST.get()
        gate = self.admission
        if gate is not None:
            await gate.enter(first=tag is not None and not tag.served)
        try:
            conn = await super()._acquire(timeout)  # type: ignore[misc]
        except BaseException:
            if gate is not None:
                gate.leave()
            raise
        now = time.perf_counter()
        route = "background"
        if tag is not None:
            tag.served = True
            route = tag.route
        self._taken[id(conn)] = (now, route)
        if self._observer is not None:
            self._observer("wait", route, now - started)
        return conn

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Return a connection, recording how long it was out, and hand its slot on."""
        taken = self._taken.pop(id(connection), None)
        if taken is not None and self._observer is not None:
            self._observer("hold", taken[1], time.perf_counter() - taken[0])
        try:
            await super().release(connection, timeout=timeout)
        finally:
            if taken is not None and self.admission is not None:
                self.admission.leave()


def pool_kwargs() -> dict[str, Any]:
    """asyncpg.create_pool's defaults for the arguments Pool itself requires (create_pool would build a plain Pool)."""
    return {"max_queries": 50000, "max_inactive_connection_lifetime": 300.0, "loop": None,
            "connection_class": asyncpg.Connection, "record_class": asyncpg.Record}

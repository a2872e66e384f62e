"""The process's asyncpg pool, timed: how long a task waits for a connection and how long it keeps one, by route.

At the knee of the fleet benchmark every pool connection is checked out while PostgreSQL's backends sit "idle in
transaction": the connections are held while the event loop is busy elsewhere. Pool occupancy alone cannot say
which requests hold them, or for how long; these two timings per route can (Prometheus histograms in metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import asyncpg

# The route template of the request being served; tasks started outside a request (live feed, prune) say so.
ROUTE: ContextVar[str] = ContextVar("fieldsync_route", default="background")

Observer = Callable[[str, str, float], None]  # (what: "wait" | "hold", route, seconds)


class MeteredPool(asyncpg.Pool):
    """asyncpg.Pool with an observer called for every acquisition (time waited) and release (time held)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._observer: Observer | None = None
        self._taken: dict[int, tuple[float, str]] = {}

    def set_observer(self, observer: Observer | None) -> None:
        """Where the timings go (the app's Metrics); None stops timing."""
        self._observer = observer

    async def _acquire(self, timeout: float | None) -> Any:
        # The one path behind `pool.acquire()` (context manager and awaitable alike) in asyncpg 0.29-0.32.
        started = time.perf_counter()
        conn = await super()._acquire(timeout)  # type: ignore[misc]
        now = time.perf_counter()
        route = ROUTE.get()
        self._taken[id(conn)] = (now, route)
        if self._observer is not None:
            self._observer("wait", route, now - started)
        return conn

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Return a connection, recording how long it was out."""
        taken = self._taken.pop(id(connection), None)
        if taken is not None and self._observer is not None:
            self._observer("hold", taken[1], time.perf_counter() - taken[0])
        await super().release(connection, timeout=timeout)


def pool_kwargs() -> dict[str, Any]:
    """asyncpg.create_pool's defaults for the arguments Pool itself requires (create_pool would build a plain Pool)."""
    return {"max_queries": 50000, "max_inactive_connection_lifetime": 300.0, "loop": None,
            "connection_class": asyncpg.Connection, "record_class": asyncpg.Record}

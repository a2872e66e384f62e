"""Concurrent delta pulls of one process share a statement: the first page of every delta and empty poll waiting at
the same moment is read by one storage.pull_sql.first_pages call, at one snapshot.

An empty poll is a range scan of a few index entries; what it cost was the statement around it (a pool checkout, a
protocol round trip, an executor start in PostgreSQL, ~0.2 ms of PostgreSQL and ~0.2 ms of server CPU), paid 50 times
when 50 devices poll at once. Each answer is exactly what its own statement would have returned at the batch's snapshot,
which is taken after every request in the batch arrived: a change committed before a pull was sent is in its answer,
whichever process committed it (nothing is cached between batches).

Batching is natural, not timed: a pull that finds fewer than `max_inflight` batches running is sent at once (alone,
when the process is idle); pulls that arrive while they run wait for the next one, at most `max_batch` to a
statement, so PostgreSQL still works on several batches in parallel when their pages are large.
"""

from __future__ import annotations

import asyncio
from collections import deque

import asyncpg

from sync_server.storage import pull_sql as store
from sync_server.storage.pull_sql import DeltaAsk, FirstPage

_Waiting = tuple[DeltaAsk, "asyncio.Future[FirstPage]"]


class FirstPages:
    """The process's delta first-page reader (one per app); pulls wanting msgpack and JSON documents queue apart."""

    def __init__(self, max_batch: int = 16, max_inflight: int = 2) -> None:
        self.max_batch, self.max_inflight = max_batch, max_inflight
        self._queues: dict[bool, deque[_Waiting]] = {True: deque(), False: deque()}
        self._running: set[asyncio.Task[None]] = set()
        self.statements = 0  # how many batches were sent (tests and metrics read it)

    async def read(self, pool: asyncpg.Pool, ask: DeltaAsk, packed: bool) -> FirstPage:
        """The first page of one delta, read alone or with whatever other pulls are waiting."""
        fut: asyncio.Future[FirstPage] = asyncio.get_running_loop().create_future()
        self._queues[packed].append((ask, fut))
        self._pump(pool)
        return await fut

    def _pump(self, pool: asyncpg.Pool) -> None:
        """Send waiting asks while fewer than max_inflight batches run (the longer queue first)."""
        while len(self._running) < self.max_inflight:
            packed = len(self._queues[True]) >= len(self._queues[False])
            queue = self._queues[packed]
            if not queue:
                return
            batch = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            task = asyncio.create_task(self._run(pool, batch, packed))
            self._running.add(task)
            task.add_done_callback(lambda t: self._done(t, pool))

    def _done(self, task: asyncio.Task[None], pool: asyncpg.Pool) -> None:
        self._running.discard(task)
        self._pump(pool)

    async def _run(self, pool: asyncpg.Pool, batch: list[_Waiting], packed: bool) -> None:
        """One statement for the batch; its outcome, page or error, goes to every pull in it."""
        live = [(ask, fut) for ask, fut in batch if not fut.done()]  # a cancelled pull (client gone) is not read
        if not live:
            return
        self.statements += 1
        try:
            async with pool.acquire() as conn:
                pages = await store.first_pages(conn, [ask for ask, _ in live], packed)
        except BaseException as exc:  # noqa: BLE001 - not handled here: handed to each waiting request, whose error
            for _, fut in live:       # boundary (api/middleware.errors) maps it as if its own statement had raised
                if fut.done():
                    continue
                if isinstance(exc, Exception):
                    fut.set_exception(exc)
                else:
                    fut.cancel()
            if not isinstance(exc, Exception):  # cancelled (shutdown) or interrupted: not ours to swallow
                raise
            return
        for (_, fut), page in zip(live, pages, strict=True):
            if not fut.done():
                fut.set_result(page)

"""Concurrent pushes of one process share a transaction: the pushes of different devices waiting at the same moment
are started by one lock-and-read statement and written by one write statement (engine/push.push_many).

A one-mutation push cost PostgreSQL ~1.2-1.4 ms, almost all of it fixed (round trips, executor set-up of each part
of the write statement, relation locks, the commit), and ~0.15 ms per mutation; several pushes in one statement pay
the fixed part once. Batching is natural, not timed, as for pulls (engine/pull_batch): a push that finds fewer than
`max_inflight` transactions running is sent at once (alone, when the process is idle: no added latency); pushes that
arrive while they run wait for the next one, at most `max_batch` to a transaction.

Correctness (I1 per device): members of one batch name distinct devices, tickets, photos and note ids, so none reads
what another writes and each answer is the one its push alone would have got; a push sharing any of those with an
earlier waiting one waits for a later batch (arrival order kept among them), and PostgreSQL's row locks serialise it
behind a running batch. Every lock of a batch is taken in one statement in the global order (devices, photos,
tickets, each sorted). A member refused whole (revoked device, seq_gap, seq_reused) gets its own error while the
others commit; any other failure of the shared transaction (a database error, a bug) runs each member again alone, in
its own transaction, so one device's error never fails another's push.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from protocol import ProtocolError
from sync_server.domain.conflicts import DeviceCtx
from sync_server.engine.push import push_many, push_one
from sync_server.engine.push_parse import Parsed
from sync_server.engine.wakeups import LiveWakeups
from sync_server.storage.org import CodeCache

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class _Member:
    """One waiting push: its device, its parsed mutations, what it must not share with another member, its answer."""

    dev: DeviceCtx
    parsed: list[Parsed]
    codes: CodeCache | None
    wakeups: LiveWakeups | None
    fut: asyncio.Future[dict[str, Any]]
    keys: set[tuple[str, Any]] = field(default_factory=set)


def member_keys(dev: DeviceCtx, parsed: list[Parsed]) -> set[tuple[str, Any]]:
    """What two members of one batch must not share: the device, the tickets (self-reported ones included), the
    attached photos (their locks and possession) and client-made note ids (global, checked under the locks)."""
    keys: set[tuple[str, Any]] = {("device", dev.device_id)}
    for p in parsed:
        m = p.model
        if m is None:
            continue
        keys.add(("ticket", m.ticket_id))
        if m.op == "attach_photo":
            keys.add(("photo", m.args.sha256))
        elif m.op == "add_note":
            keys.add(("note", m.args.note_id))
    return keys


class PushBatcher:
    """The process's push batcher (one per app)."""

    def __init__(self, max_batch: int = 8, max_inflight: int = 2) -> None:
        self.max_batch, self.max_inflight = max_batch, max_inflight
        self._queue: deque[_Member] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self.transactions = 0  # batches sent, alone or shared (tests and metrics read these)
        self.shared = 0  # of them, transactions of two or more pushes
        self.fallbacks = 0  # shared transactions that failed and whose members ran again alone

    @property
    def waiting(self) -> int:
        """Pushes queued for a later transaction (tests and metrics read it)."""
        return len(self._queue)

    async def push(self, pool: asyncpg.Pool, dev: DeviceCtx, parsed: list[Parsed], codes: CodeCache | None = None,
                   wakeups: LiveWakeups | None = None) -> dict[str, Any]:
        """One device's push, applied alone or with whatever other pushes are waiting; its own answer or error."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Member(dev, parsed, codes, wakeups, fut, member_keys(dev, parsed)))
        self._pump(pool)
        return await fut

    def _take(self) -> list[_Member]:
        """The next batch: waiting pushes in arrival order sharing nothing with a taken or a skipped earlier one."""
        taken: list[_Member] = []
        used: set[tuple[str, Any]] = set()
        blocked: set[tuple[str, Any]] = set()
        rest: deque[_Member] = deque()
        while self._queue and len(taken) < self.max_batch:
            m = self._queue.popleft()
            if m.fut.done():  # its request was cancelled (client gone) before it was sent: nothing to apply
                continue
            if m.keys.isdisjoint(used) and m.keys.isdisjoint(blocked):
                taken.append(m)
                used |= m.keys
            else:
                rest.append(m)
                blocked |= m.keys
        rest.extend(self._queue)
        self._queue = rest
        return taken

    def _pump(self, pool: asyncpg.Pool) -> None:
        """Send waiting pushes while fewer than max_inflight transactions run."""
        while len(self._running) < self.max_inflight and self._queue:
            batch = self._take()
            if not batch:
                return
            task = asyncio.create_task(self._run(pool, batch))
            self._running.add(task)
            task.add_done_callback(lambda t: self._done(t, pool))

    def _done(self, task: asyncio.Task[None], pool: asyncpg.Pool) -> None:
        self._running.discard(task)
        self._pump(pool)

    async def _run(self, pool: asyncpg.Pool, batch: list[_Member]) -> None:
        """One transaction for the batch; each member gets its own answer or error."""
        self.transactions += 1
        if len(batch) == 1:
            await self._alone(pool, batch[0])
            return
        self.shared += 1
        try:
            outs = await push_many(pool, [(m.dev, m.parsed) for m in batch], batch[0].codes, batch[0].wakeups)
        except Exception as exc:  # noqa: BLE001 - whose fault is unknown: every member runs again alone, and the
            self.fallbacks += 1   # one at fault gets its error from its own transaction
            log.info("push_batch.fallback", members=len(batch), error=type(exc).__name__, detail=str(exc)[:200])
            await asyncio.gather(*(self._alone(pool, m) for m in batch))
            return
        except BaseException:  # cancelled (shutdown): the requests waiting on it are cancelled too
            for m in batch:
                m.fut.cancel()
            raise
        for m, out in zip(batch, outs, strict=True):
            if m.fut.done():  # the client left while it ran: applied all the same (a retry gets the stored result)
                continue
            if isinstance(out, ProtocolError):
                m.fut.set_exception(out)
            else:
                m.fut.set_result(out)

    async def _alone(self, pool: asyncpg.Pool, m: _Member) -> None:
        """One push in its own transaction (the idle path, and a failed batch's members)."""
        try:
            out = await push_one(pool, m.dev, m.parsed, m.codes, m.wakeups)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request, whose error boundary maps it
            if not m.fut.done():
                m.fut.set_exception(exc)
            return
        except BaseException:
            m.fut.cancel()
            raise
        if not m.fut.done():
            m.fut.set_result(out)

"""Push → supervisor latency under the fleet's load: one supervisor live socket per department, each ticket event
matched to the push that committed it by (ticket, version), as a supervisor's console sees it.

The commit happens between sending a push and reading its answer, so for each matched push the time from commit to
the supervisor's event lies between (event − answer) and (event − send); the report carries both.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from .metrics import Metrics

RECONNECT_S = 0.5


class LiveWatch:
    """Supervisor sockets of one simulator process and the push/event stamps to match."""

    def __init__(self) -> None:
        self.pushed: dict[tuple[str, int], tuple[float, float]] = {}  # (ticket, version) -> (sent, answered)
        self.seen: dict[tuple[str, int], float] = {}  # (ticket, version) -> event arrival
        self.tasks: list[asyncio.Task[None]] = []
        self.position: dict[str, int] = {}  # department -> last feed position, to resume without a gap
        self.session: aiohttp.ClientSession | None = None

    def push_answered(self, ticket_id: str, version: int, sent: float, answered: float) -> None:
        """A fresh (not replayed) push result carried this ticket version: the first answer is the commit's."""
        self.pushed.setdefault((ticket_id, version), (sent, answered))

    def start(self, base: str, tokens: dict[str, str], metrics: Metrics) -> None:
        """One watcher per department this process's devices work in (own session: never queued behind requests)."""
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        for dept, token in sorted(tokens.items()):
            self.tasks.append(asyncio.create_task(self._watch(self.session, base, dept, token, metrics)))

    async def _watch(self, session: aiohttp.ClientSession, base: str, dept: str, token: str, metrics: Metrics) -> None:
        while True:
            after = self.position.get(dept)
            url = base + "/v1/live?encoding=json" + (f"&after={after}" if after is not None else "")
            try:
                async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=0) as ws:
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            break
                        self._frame(dept, json.loads(msg.data))
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                metrics.errors[f"supervisor_live:{type(exc).__name__}"] += 1
            await asyncio.sleep(RECONNECT_S)

    def _frame(self, dept: str, frame: dict[str, Any]) -> None:
        if frame.get("type") != "event":
            return
        if isinstance(frame.get("position"), int):
            self.position[dept] = frame["position"]
        ticket = frame.get("ticket")
        if isinstance(ticket, dict) and frame.get("ticket_id") is not None:
            self.seen.setdefault((str(frame["ticket_id"]), int(ticket.get("version", -1))), time.monotonic())

    async def stop(self, metrics: Metrics) -> None:
        """Close the sockets and turn matched pairs into latency samples (ms); unmatched pushes are counted."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        for key, (sent, answered) in self.pushed.items():
            at = self.seen.get(key)
            if at is None:
                metrics.counters["live_events_unmatched"] += 1
                continue
            metrics.sample("live_event", max(0.0, at - answered) * 1000.0)
            metrics.sample("live_event_sent", (at - sent) * 1000.0)

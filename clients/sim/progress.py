"""A live progress line on stderr (TTY only): shift clock, mutations, outbox backlog, request rate."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fleet import Fleet

WIDTH = 28


class Progress:
    """Redraws one line twice a second; silent when stderr is not a terminal (CI logs stay clean)."""

    def __init__(self, fleet: Fleet, enabled: bool = True) -> None:
        self.fleet = fleet
        self.enabled = enabled and sys.stderr.isatty()
        self.phase = "shift"
        self._done = asyncio.Event()

    def line(self) -> str:
        """The current status as text."""
        f, m = self.fleet, self.fleet.metrics
        elapsed = m.now()
        frac = min(1.0, elapsed / max(f.config.duration_s, 1e-9))
        bar = "#" * int(frac * WIDTH) + "-" * (WIDTH - int(frac * WIDTH))
        backlog = sum(len(d.outbox) for d in f.devices)
        offline = sum(1 for d in f.devices if not d.online.is_set())
        acked = sum(m.acked_per_s.values())
        return (f"[{bar}] {self.phase} {elapsed:5.0f}s  created {m.counters['mutations_created']:>6}"
                f"  acked {acked:>6}  outbox {backlog:>5}  offline {offline:>3}/{len(f.devices)}"
                f"  pushes {len(m.latency.get('push', [])):>6}")

    async def run(self) -> None:
        """Draw until stopped."""
        if not self.enabled:
            await self._done.wait()
            return
        while not self._done.is_set():
            sys.stderr.write("\r" + self.line()[:200])
            sys.stderr.flush()
            try:
                await asyncio.wait_for(self._done.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
        sys.stderr.write("\r" + self.line()[:200] + "\n")
        sys.stderr.flush()

    def stop(self) -> None:
        """End the line."""
        self._done.set()

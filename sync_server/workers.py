"""Pre-fork worker supervision for `fieldsync serve --workers N`: a dead worker is replaced (with capped back-off), so
one crash never leaves the port at reduced capacity, and SIGTERM stops every child before the parent exits."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("sync_server.workers")


@dataclass(frozen=True)
class RespawnPolicy:
    """How fast a dead worker comes back: at once after a long life, exponentially slower (capped) when it keeps dying
    young, so a crash loop (bad config, database down at start) neither spins the CPU nor gives up for good."""

    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_uptime_s: float = 30.0  # a worker that lived this long resets its slot's back-off
    stop_timeout_s: float = 30.0  # after SIGTERM, children still alive this much later are SIGKILLed

    def delay(self, quick_failures: int) -> float:
        """Seconds to wait before respawning a slot that has died young `quick_failures` times in a row (0 = first)."""
        return float(min(self.max_delay_s, self.base_delay_s * (2 ** min(quick_failures, 16))))


@dataclass
class _Slot:
    """One worker position: its current pid and how often it has died young in a row."""

    index: int
    pid: int | None = None
    started: float = 0.0
    quick_failures: int = 0
    respawn_at: float | None = None
    exits: list[int] = field(default_factory=list)


def _describe(status: int) -> dict[str, int]:
    """Exit code or killing signal, for the log line an operator reads after a crash."""
    code = os.waitstatus_to_exitcode(status)
    return {"signal": -code} if code < 0 else {"exit_code": code}


def supervise(
    workers: int,
    target: Callable[[], int],
    *,
    policy: RespawnPolicy = RespawnPolicy(),
    on_worker_exit: Callable[[int], None] | None = None,
) -> int:
    """Fork `workers` children running `target` (its return value is the child's exit code) and keep that many alive
    until SIGTERM/SIGINT, then forward the signal, wait (bounded) and return 0 once every child is gone.

    `on_worker_exit(pid)` runs in the parent for every reaped child (e.g. Prometheus multiprocess clean-up)."""
    requested: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # Only record: forwarding happens in the loop, so a signal that lands mid-fork still reaches the new child.
        requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    slots = [_Slot(i) for i in range(workers)]
    by_pid: dict[int, _Slot] = {}

    def spawn(slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            # Until the child's event loop installs its own handlers, a stop signal simply ends it.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = target()
            except BaseException:  # noqa: BLE001 - outermost boundary of a worker process: say why it died
                log.exception("serve.worker_crashed", worker=slot.index)
            finally:
                os._exit(code)
        slot.pid, slot.started, slot.respawn_at = pid, time.monotonic(), None
        by_pid[pid] = slot
        log.info("serve.worker_started", worker=slot.index, pid=pid, restarts=len(slot.exits))

    forwarded = 0
    stop_deadline: float | None = None
    killed = False
    try:
        for slot in slots:
            spawn(slot)
        while by_pid or (not requested and any(s.respawn_at is not None for s in slots)):
            _reap(by_pid, requested, policy, on_worker_exit)
            now = time.monotonic()
            if requested:
                if forwarded < len(requested):  # forward each new signal (a second Ctrl-C too)
                    for sig in requested[forwarded:]:
                        for pid in list(by_pid):
                            _kill(pid, sig)
                    if stop_deadline is None:
                        log.info("serve.workers_stopping", workers=len(by_pid), signal=requested[0])
                        stop_deadline = now + policy.stop_timeout_s
                    forwarded = len(requested)
                if stop_deadline is not None and now > stop_deadline and by_pid and not killed:
                    log.error("serve.workers_kill", pids=sorted(by_pid), after_s=policy.stop_timeout_s)
                    for pid in list(by_pid):
                        _kill(pid, signal.SIGKILL)
                    killed = True
            else:
                for slot in slots:
                    if slot.respawn_at is not None and now >= slot.respawn_at:
                        spawn(slot)
            time.sleep(0.05)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for pid in list(by_pid):  # only reached with children left if the parent itself is failing
            _kill(pid, signal.SIGKILL)
    log.info("serve.workers_stopped", killed=killed)
    return 1 if killed else 0


def _reap(
    by_pid: dict[int, _Slot],
    requested: list[int],
    policy: RespawnPolicy,
    on_worker_exit: Callable[[int], None] | None,
) -> None:
    """Collect every exited child without blocking; schedule a respawn unless a stop was requested."""
    while by_pid:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            by_pid.clear()
            return
        if pid == 0:
            return
        slot = by_pid.pop(pid, None)
        if slot is None:
            continue
        if on_worker_exit is not None:
            on_worker_exit(pid)
        code = os.waitstatus_to_exitcode(status)
        slot.exits.append(code)
        slot.pid = None
        if requested:
            log.info("serve.worker_stopped", worker=slot.index, pid=pid, **_describe(status))
            continue
        uptime = time.monotonic() - slot.started
        if uptime >= policy.healthy_uptime_s:
            slot.quick_failures = 0
        delay = policy.delay(slot.quick_failures)
        slot.quick_failures += 1
        slot.respawn_at = time.monotonic() + delay
        log.warning("serve.worker_died", worker=slot.index, pid=pid, uptime_s=round(uptime, 1),
                    respawn_in_s=delay, **_describe(status))


def _kill(pid: int, sig: int) -> None:
    """Signal a child that may have exited already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass

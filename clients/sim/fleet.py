"""The fleet: enrol devices, run crews and supervisors for the shift on one event loop, then quiesce and judge.

One process, one event loop, one bounded pool of keep-alive connections (http1.py) for every device's and staff
request, aiohttp only for WebSockets and feature probes; devices are coroutines, not threads, so hundreds of them
cost little CPU and the server stays the thing being measured.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp

from protocol import JSON, MSGPACK, WORKABLE_STATUSES

from . import crews as fleet_crews
from . import http1
from .config import SimConfig
from .crews import CrewSlot
from .device import Credentials, Device, DeviceBroken, Entry
from .livewatch import LiveWatch
from .metrics import Metrics
from .probe import Probe
from .progress import Progress
from .supervisor import StaffApi, SupervisorActor, discover_service_types, gather_bounded
from .transport import SimHttpError, Transport


QUIESCE_ROUNDS = 12  # push + upload rounds per device at the end; each waits for what the server asked us to wait


async def settle(tasks: list[asyncio.Task[Any]], timeout: float, metrics: Metrics) -> None:
    """Let tasks finish within a bound, then cancel the rest: a stuck coroutine must never hang the verdict."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout) if timeout > 0 else (set(), set(tasks))
    for task in pending:
        task.cancel()
    if pending:
        metrics.counters["tasks_cancelled_at_stop"] += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)


class SetupError(Exception):
    """The server or credentials cannot host this run (no admin token, no crews, ...)."""


async def make_crews(admin: StaffApi, config: SimConfig, departments: list[str]) -> list[CrewSlot]:
    """Create the whole fleet's crews (2-4 devices each) over the admin API; names unique to this run."""
    if not departments:
        raise SetupError("the credentials name no supervisor, so no department to create crews in")
    slots = fleet_crews.plan(config.devices, config.seed, config.run_id or secrets.token_hex(3), departments)
    try:
        await fleet_crews.create(admin, slots)
    except SimHttpError as exc:
        raise SetupError(f"could not create the fleet's crews: {exc}") from exc
    return slots


class Fleet:
    """Shared state of one run: transport, ledger of every mutation, devices, supervisors, clocks."""

    def __init__(self, config: SimConfig, session: aiohttp.ClientSession, credentials: dict[str, Any]) -> None:
        self.config, self.session, self.credentials = config, session, credentials
        base = config.server or credentials.get("server") or ""
        if not base:
            raise SetupError("no server URL: pass --server or use a credentials file that names one")
        self.metrics = Metrics()
        # the simulator's own concurrency cap, and aiohttp's total timeout semantics (pool wait included)
        self.http = http1.Client(base, limit=config.connections, timeout=config.request_timeout_s)
        self.transport = Transport(self.http, base, self.metrics, MSGPACK)
        self.staff_transport = Transport(self.http, base, self.metrics, JSON)
        self.rng = random.Random(f"fieldsync-sim/{config.seed}/fleet")
        self.ledger: dict[tuple[str, int], Entry] = {}
        self.violations: list[str] = []
        self.uploaded: dict[tuple[str, str, str], str] = {}
        self.devices: list[Device] = []
        self.supervisors: list[SupervisorActor] = []
        self.service_types: dict[str, list[str]] = {}
        self.stopping = False
        self.finished = False
        self.fault_rate = config.fault_rate
        self.live = False
        self.live_session: aiohttp.ClientSession | None = None
        self.uploads = False
        self._stop = asyncio.Event()
        self.run_seconds = 0.0
        self.shift_cpu_s = 0.0
        self.start_gate: Callable[[], Awaitable[None]] | None = None  # other processes' setup (--processes)
        self.probe: Probe | None = None  # server CPU and pool gauges over the shift (the process that owns it)
        self.quiesce_seconds = 0.0
        self.quiesce_timed_out = False
        self.livewatch = LiveWatch()  # push -> supervisor event latency (supervisor sockets, when the server has live)
        admin = (credentials.get("admin") or {}).get("token")
        if not admin:
            raise SetupError("the credentials need an admin token (to enrol simulated devices and verify)")
        self.admin = StaffApi(self.staff_transport, admin, random.Random(f"{config.seed}/admin"))
        self.staff = {s["department"]: StaffApi(self.staff_transport, s["token"], random.Random(f"{config.seed}/{s['department']}"))
                      for s in credentials.get("supervisors", [])}

    async def close(self) -> None:
        """Close the request pool (the aiohttp session belongs to whoever opened it)."""
        await self.http.close()

    async def sleep(self, seconds: float) -> None:
        """Sleep that ends early when the shift ends, so the quiesce starts promptly."""
        if self.stopping or seconds <= 0:
            return
        try:  # asyncio.timeout, not wait_for: no task per sleep (every tap of every device sleeps)
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    # ------------------------------------------------------------------------------------------ setup

    async def detect_features(self) -> None:
        """Photos and the live feed are optional server features: use them only when offered."""
        if self.config.photos:
            try:
                async with self.session.options(self.transport.base + "/v1/uploads", headers={"Tus-Resumable": "1.0.0"}) as r:
                    self.uploads = r.status in (200, 204)
            except aiohttp.ClientError:
                self.uploads = False

    async def detect_live(self, token: str) -> None:
        """A WebSocket upgrade that succeeds means the server has the live feed.

        Sockets get their own session without a connection limit: a phone's socket is open all shift, and
        sharing the request pool would let N sockets starve every push and pull.
        """
        if not self.config.live:
            return
        try:
            async with self.session.ws_connect(self.transport.base + "/v1/live?encoding=json",
                                               headers=self.transport.headers(token, False),
                                               timeout=aiohttp.ClientWSTimeout(ws_close=2)):
                self.live = True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.live = False
        if self.live:
            self.live_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def setup(self) -> None:
        """Enrol N fresh devices over the admin API, learn service types, make sure every crew has work."""
        await self.detect_features()
        if not self.config.crews and not self.config.existing_crews:
            self.config = replace(self.config, crews=tuple(await make_crews(self.admin, self.config, list(self.staff))))
        cfg = self.config
        if cfg.crews:  # a real fleet: this process's own crews, 2-4 devices each
            plan = [{"name": s.name, "department": s.department} for s in cfg.crews for _ in range(s.devices)]
        else:  # --existing-crews: every device on one of the server's crews, round-robin
            crews = (await self.admin.call("GET", "/v1/crews"))["crews"]
            crews = sorted((c for c in crews if c["active"] and c["department"] in self.staff), key=lambda c: c["name"])
            if not crews:
                raise SetupError("no active crews in a department the credentials have a supervisor for")
            plan = [crews[i % len(crews)] for i in range(cfg.devices)]
        label = f"fieldsync-sim seed {cfg.seed}"
        first = cfg.device_offset

        async def enrol(i: int, crew: dict[str, Any]) -> Credentials:
            out = await self.admin.call("POST", "/v1/devices", {"crew": crew["name"], "label": f"{label} #{i}"})
            return Credentials(out["device_id"], out["token"], out["crew"], crew["department"])

        creds = await gather_bounded([enrol(first + i, c) for i, c in enumerate(plan)], 16)
        self.devices = [Device(first + i, c, self) for i, c in enumerate(creds)]
        departments = sorted({c.department for c in creds})
        for dept in departments:
            api = self.staff[dept]
            sample = await api.call("GET", "/v1/tickets?limit=500")
            self.service_types[dept] = await discover_service_types(api, {t["service_type"] for t in sample["tickets"]})
            self.supervisors.append(SupervisorActor(dept, api, self))
        await self.top_up()
        if self.devices:
            await self.detect_live(self.devices[0].creds.token)

    async def top_up(self) -> None:
        """Give every simulated crew enough open work for its devices (a fresh test server has none)."""
        for sup in self.supervisors:
            await sup.refresh()
            per_crew: dict[str, int] = {}
            for t in sup.open:
                if t.status in WORKABLE_STATUSES and t.crew:
                    per_crew[t.crew] = per_crew.get(t.crew, 0) + 1

            async def fill(crew: str, sup: SupervisorActor = sup) -> None:
                n_dev = sum(1 for d in self.devices if d.creds.crew == crew)
                want = max(self.config.tickets_per_crew, 2 * n_dev)
                short = want - per_crew.get(crew, 0)
                if short > 0:
                    try:
                        await sup.create(crew, short)
                    except SimHttpError as exc:
                        self.metrics.errors[f"top_up:{exc.code}"] += 1

            await gather_bounded([fill(crew) for crew in sup.crews], 8)

    # ------------------------------------------------------------------------------------------ run

    async def run(self) -> None:
        """The shift, then the quiesce: stop crews and supervisors, drain every outbox, pull everyone to the head."""
        cfg = self.config
        if self.start_gate is not None:
            await self.start_gate()  # every process starts its shift together
        probe_task = asyncio.create_task(self.probe.run(cfg.duration_s, self.session)) if self.probe else None
        progress = Progress(self, enabled=cfg.progress)
        progress_task = asyncio.create_task(progress.run())
        crew = [asyncio.create_task(d.crew_loop()) for d in self.devices]
        sync = [asyncio.create_task(d.sync_loop()) for d in self.devices]
        live = [asyncio.create_task(d.live_loop()) for d in self.devices] if self.live else []
        sups = [asyncio.create_task(s.run()) for s in self.supervisors]
        if self.live:
            tokens = {s["department"]: s["token"] for s in self.credentials.get("supervisors", [])
                      if s["department"] in {d.creds.department for d in self.devices}}
            self.livewatch.start(self.transport.base, tokens, self.metrics)
        for d in self.devices:
            d.wake.set()  # morning pull
        cpu0, t0 = time.process_time(), time.monotonic()
        self.metrics.started = t0  # the time series counts from the start of the shift, not of the setup
        try:
            await asyncio.sleep(cfg.duration_s)
        finally:
            self.stopping = True
            self._stop.set()
            if probe_task is not None:
                probe_task.cancel()  # it ends with the shift anyway; its finally records the CPU used so far
                await asyncio.gather(probe_task, return_exceptions=True)
            self.fault_rate = 0.0
            for d in self.devices:
                d.online.set()
            await settle([*crew, *sups], 60.0, self.metrics)
            self.run_seconds = time.monotonic() - t0
            self.shift_cpu_s = time.process_time() - cpu0
            progress.phase = "quiesce"
            q0 = time.monotonic()
            self.finished = True
            for d in self.devices:
                d.wake.set()
            await settle(sync, min(90.0, cfg.quiesce_timeout_s), self.metrics)
            await settle(live, 0.0, self.metrics)
            if self.live_session is not None:
                await self.live_session.close()
            try:
                await asyncio.wait_for(self.quiesce(), timeout=cfg.quiesce_timeout_s)
            except asyncio.TimeoutError:
                self.quiesce_timed_out = True  # judged as unresolved work (outboxes/galleries not drained), not as a duplicate
            self.quiesce_seconds = time.monotonic() - q0
            await self.livewatch.stop(self.metrics)
            self.metrics.counters["run_cpu_ms"] = int((time.process_time() - cpu0) * 1000)
            progress.stop()
            await progress_task

    async def quiesce(self) -> None:
        """Every device online, outbox drained and photos uploaded; then, with the server quiet, pull to the head."""
        healthy = [d for d in self.devices if d.broken is None]

        async def drain(d: Device) -> None:
            loop = asyncio.get_running_loop()
            try:
                for _ in range(QUIESCE_ROUNDS):
                    await d.push_all()
                    if d.photos:
                        await d.upload_photos(budget=30)
                    if not d.outbox and not d.photos:
                        return
                    # A photo the server deferred (409 upload_busy / 429 + Retry-After) is skipped by upload_photos
                    # until its time: wait for it rather than leaving it in the gallery (the bound is the quiesce's).
                    due = min((p.not_before for p in d.photos), default=0.0) - loop.time()
                    await asyncio.sleep(min(max(due, 0.2), 30.0))
            except DeviceBroken as exc:
                d.broken = str(exc)

        async def head(d: Device) -> None:
            try:
                await d.pull()
            except DeviceBroken as exc:
                d.broken = str(exc)

        await gather_bounded([drain(d) for d in healthy], self.config.connections)
        await gather_bounded([head(d) for d in healthy if d.broken is None], self.config.connections)

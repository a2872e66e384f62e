"""One simulated phone: replica, durable outbox, gap-free seqs, a crew working through its tickets, sync with faults.

What a phone keeps on disk (survives an app restart): the outbox and next seq (persisted *before* a
mutation is sent, SPEC §5), the replica and its cursor (applied all or nothing, so the object itself
stands for the on-disk store), and the photo gallery with each upload's URL. Everything else (in-flight
requests, backoff, buffered pull pages) is volatile and lost by `restart`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aiohttp
import msgpack

from protocol import (
    JSON,
    WORKABLE_STATUSES,
    DecodeError,
    ErrorCode,
    LivePoke,
    PullRequest,
    PullResponse,
    PushResponse,
    decode,
    decode_live,
    encode,
)

from .behaviour import (
    IdleIntent,
    OfflineIntent,
    Planner,
    SelfReportIntent,
    WorkIntent,
    bind_self_report,
    bind_work,
    pick,
)
from .photos import PendingPhoto, UploadRefused, advance_photo, png_bytes, sha256_hex
from .replica import Replica
from .transport import RETRYABLE_TRANSPORT, Dropped, Offline, SimHttpError, backoff_delay

if TYPE_CHECKING:
    from .fleet import Fleet

MAX_ATTEMPTS = 30  # per request; with backoff capped at 2 s that is about half a minute of a failing server
FAULT_KINDS = (("drop_request", 0.3), ("drop_response", 0.35), ("duplicate", 0.2), ("restart", 0.15))


@dataclass
class Entry:
    """The simulator's ledger line for one mutation: what was asked and every result the server gave for it."""

    device: str
    seq: int
    op: str
    ticket_id: str
    args: dict[str, Any]
    status: str | None = None
    reason: str | None = None
    removed: str | None = None
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    results: int = 0
    replayed: int = 0
    fresh: int = 0  # results not marked replayed: more than one means the server applied it twice
    must_replay: bool = False  # a response for it was lost after the server committed


@dataclass
class Credentials:
    """An enrolled device as the credentials file or the enrolment API gives it."""

    device_id: str
    token: str
    crew: str
    department: str


class DeviceBroken(Exception):
    """A permanent request-level error that a correct client never sees; the device stops and the verdict fails."""


class Device:
    """A crew's phone: a crew loop that taps, a sync loop that pushes and pulls, optional live socket."""

    def __init__(self, index: int, creds: Credentials, fleet: Fleet) -> None:
        cfg = fleet.config
        self.index, self.creds, self.fleet = index, creds, fleet
        self.id = creds.device_id
        self.planner = Planner(cfg.seed, index, cfg.step_s, cfg.offline_fraction, cfg.photo_rate)
        self.fault_rng = random.Random(f"fieldsync-sim/{cfg.seed}/faults/{index}")
        self.retry_rng = random.Random(f"fieldsync-sim/{cfg.seed}/retry/{index}")
        self.disk: dict[str, Any] = {}
        self.replica = Replica()
        self.outbox: list[dict[str, Any]] = []
        self.next_seq = 1
        self.photos: list[PendingPhoto] = []
        self.online = asyncio.Event()
        self.online.set()
        self.wake = asyncio.Event()
        # Why the sync loop should run: a tap, a reconnect or the morning (`pending`), or a poke announcing a
        # watermark the replica has not pulled yet (`poked`). A poke the last pull already covered is ignored, as
        # the crew app does (clients/js onPoke): every push pokes its own device and its crew mates.
        self.pending = True
        self.poked = 0
        self.live_ws: aiohttp.ClientWebSocketResponse | None = None
        self.closing_ws: asyncio.Task[bool] | None = None
        self.broken: str | None = None
        self.sent_max = 0
        self.intents = 0
        self.mutation_log: list[tuple[str, dict[str, Any]]] = []  # (op, args) in seq order, for determinism checks
        self.persist()

    # ------------------------------------------------------------------------------------------ disk

    def persist(self) -> None:
        """Write the whole durable state; called before anything that must survive a restart is relied upon.

        The outbox is stored one record per seq, as a phone's app database keeps one row per tap: a tap writes its
        own record (enqueue) and an answer deletes the acknowledged ones (process). Re-packing the whole outbox on
        every tap was ~5 % of a 1,000-device simulator's CPU, growing with the outbox while the server lagged."""
        self.disk["outbox"] = {m["seq"]: msgpack.packb(m, use_bin_type=True) for m in self.outbox}
        self.disk["next_seq"] = msgpack.packb(self.next_seq)
        self.persist_photos()

    def persist_photos(self) -> None:
        """Write the gallery (each upload's URL and offset) after it changed."""
        self.disk["photos"] = msgpack.packb([p.to_disk() for p in self.photos], use_bin_type=True)

    def restart(self, reinstall: bool = False) -> None:
        """The app was killed and relaunched: volatile state is gone, the disk is read back."""
        self.outbox = [msgpack.unpackb(rec, raw=False) for _, rec in sorted(self.disk["outbox"].items())]
        self.next_seq = msgpack.unpackb(self.disk["next_seq"])
        self.photos = [PendingPhoto(**d) for d in msgpack.unpackb(self.disk["photos"], raw=False)]
        self.fleet.metrics.faults["restart"] += 1
        if reinstall:  # app data cleared but the outbox was backed up: the next pull is a fresh snapshot
            self.replica = Replica()
            self.fleet.metrics.faults["reinstall"] += 1

    # ------------------------------------------------------------------------------------------ crew

    def enqueue(self, op: str, ticket_id: str, args: dict[str, Any], base_version: int | None,
                gps: dict[str, float] | None = None) -> None:
        """Record a tap as the next seq, on disk before it can be sent (gap-free, SPEC §5)."""
        if op == "attach_photo":
            seed = args.pop("_photo_seed")
            data = png_bytes(seed)
            sha = sha256_hex(data)
            taken = datetime.now(timezone.utc).isoformat()
            args = {"sha256": sha, "kind": args["kind"], "taken_at": taken}
            if self.fleet.uploads:
                self.photos.append(PendingPhoto(sha, ticket_id, args["kind"], taken, seed))
        seq = self.next_seq
        self.next_seq += 1
        m = {"seq": seq, "op": op, "ticket_id": ticket_id, "args": args, "base_version": base_version,
             "device_time": datetime.now(timezone.utc).isoformat(), "gps": gps}
        self.outbox.append(m)
        self.disk["outbox"][seq] = msgpack.packb(m, use_bin_type=True)
        self.disk["next_seq"] = msgpack.packb(self.next_seq)
        if op == "attach_photo" and self.fleet.uploads:
            self.persist_photos()
        self.mutation_log.append((op, args))
        self.fleet.ledger[(self.id, seq)] = Entry(self.id, seq, op, ticket_id, args)
        self.fleet.metrics.counters["mutations_created"] += 1
        self.pending = True
        self.wake.set()

    def _gps(self, ticket: Any) -> dict[str, float] | None:
        if ticket is None or ticket.lat is None or ticket.lon is None:
            return None
        return {"lat": ticket.lat, "lon": ticket.lon, "accuracy_m": 8.0}

    async def crew_loop(self) -> None:
        """Work the shift until the fleet stops: intents from the seeded planner, bound to tickets as they come."""
        fleet = self.fleet
        while not fleet.stopping and self.broken is None:
            intent = self.planner.next()
            self.intents += 1
            if isinstance(intent, OfflineIntent):
                self.online.clear()
                if self.live_ws is not None:  # the dead spot cuts the live socket too (its close is not waited for)
                    self.closing_ws = asyncio.create_task(self.live_ws.close())
                await fleet.sleep(intent.seconds)
                self.online.set()
                self.pending = True
                self.wake.set()
            elif isinstance(intent, IdleIntent):
                await fleet.sleep(intent.seconds)
            elif isinstance(intent, SelfReportIntent):
                bound = bind_self_report(intent, fleet.service_types.get(self.creds.department, []), self.id)
                if bound is not None:
                    tid, args = bound
                    self.enqueue("self_report", tid, args, None, {"lat": args["lat"], "lon": args["lon"], "accuracy_m": 5.0})
                    if intent.photo_seed is not None:
                        self.enqueue("attach_photo", tid, {"_photo_seed": intent.photo_seed, "kind": "after"}, None)
                await fleet.sleep(self.fleet.config.step_s)
            elif isinstance(intent, WorkIntent):
                await self._work(intent)

    async def _work(self, intent: WorkIntent) -> None:
        fleet = self.fleet
        ticket = pick([t for t in self.replica.tickets.values() if t.status in WORKABLE_STATUSES], intent.slot)
        if ticket is None:
            await fleet.sleep(fleet.config.step_s)
            return
        tid = str(ticket.id)
        for op, args, gap in bind_work(intent, ticket, self.id):
            await fleet.sleep(gap)
            if fleet.stopping:
                return
            # The crew keeps working even if the ticket left the replica meanwhile: that is a late field report.
            current = self.replica.tickets.get(ticket.id)
            base = current.version if current is not None else ticket.version
            self.enqueue(op, tid, dict(args), base, self._gps(current or ticket))

    # ------------------------------------------------------------------------------------------ faults

    def fault(self, kinds: tuple[tuple[str, float], ...] = FAULT_KINDS) -> str | None:
        """Maybe inject a fault into this request (never during the final quiesce)."""
        rate = self.fleet.fault_rate
        if rate <= 0 or self.fault_rng.random() >= rate:
            return None
        names, weights = zip(*kinds)
        return self.fault_rng.choices(names, weights)[0]

    async def wait_online(self) -> None:
        """Requests wait for signal; a real phone queues rather than failing."""
        await self.online.wait()

    # ------------------------------------------------------------------------------------------ sync

    async def sync_loop(self) -> None:
        """Push the outbox, pull to the head, upload photos; on a poke, a tap, reconnect, or a poll timer."""
        fleet = self.fleet
        poll = fleet.config.step_s * (8 if fleet.live else 3)
        while not fleet.finished and self.broken is None:
            timer = False
            try:
                async with asyncio.timeout(poll):
                    await self.wake.wait()
            except TimeoutError:
                timer = True
            self.wake.clear()
            if fleet.finished:
                return
            due = any(p.not_before <= asyncio.get_running_loop().time() for p in self.photos)
            if not (timer or self.pending or self.outbox or due or self.poked > self.replica.watermark):
                fleet.metrics.counters["pokes_already_pulled"] += 1
                continue
            await self.online.wait()
            self.pending = False
            try:
                await self.sync_once()
            except DeviceBroken as exc:
                self.broken = str(exc)
                fleet.metrics.errors[f"device_broken:{exc}"] += 1
            except Offline:
                self.pending = True
                continue

    async def sync_once(self) -> None:
        """One round: the order a real client uses (push first so the pull includes our own writes)."""
        await self.push_all()
        await self.pull()
        if self.photos:
            await self.upload_photos()

    async def _post_push(self, batch: list[dict[str, Any]], fault: str | None) -> PushResponse:
        body = msgpack.packb({"mutations": batch}, use_bin_type=True)
        self.sent_max = max(self.sent_max, batch[-1]["seq"])
        sent = time.monotonic()
        _, _, data = await self.fleet.transport.request("POST", "/v1/sync/push", token=self.creds.token, kind="push",
                                                        body=body, fault=fault)
        resp = decode(data, self.fleet.transport.media, PushResponse)
        answered = time.monotonic()
        for r in resp.results:
            if r.ticket is not None and not r.replayed:
                self.fleet.livewatch.push_answered(str(r.ticket.id), r.ticket.version, sent, answered)
        return resp

    async def push_all(self) -> None:
        """Drain the outbox in batches; each batch is retried with the same seqs and bodies until it has results."""
        while self.outbox and self.online.is_set():
            batch = self.outbox[: self.fleet.config.push_batch]
            await self.push_batch(batch)

    async def push_batch(self, batch: list[dict[str, Any]]) -> None:
        """Send one batch until the server answers it; faults and transient errors only delay it."""
        m = self.fleet.metrics
        for attempt in range(MAX_ATTEMPTS):
            await self.wait_online()
            fault = self.fault()
            retry_after: float | None = None
            try:
                if fault == "duplicate":
                    m.faults["duplicate"] += 1
                    answers = await asyncio.gather(self._post_push(batch, None), self._post_push(batch, None),
                                                   return_exceptions=True)
                    good = [a for a in answers if isinstance(a, PushResponse)]
                    if not good:
                        raise answers[0]  # type: ignore[misc]
                    for resp in good:
                        self.process(resp)
                    return
                if fault == "restart":
                    try:
                        await self._post_push(batch, "drop_response")
                    except Dropped as d:
                        self._lost_answer(batch, d)
                    self.restart(reinstall=self.fault_rng.random() < 0.2)
                    return  # the reloaded outbox still holds this batch; push_all sends it again
                resp = await self._post_push(batch, fault)
                self.process(resp)
                return
            except Dropped as d:
                self._lost_answer(batch, d)
            except SimHttpError as exc:
                if exc.code is ErrorCode.SEQ_GAP:
                    self._seq_gap(exc, batch)
                    return
                if exc.code is ErrorCode.RESET_REQUIRED:
                    self.replica = Replica()
                    continue
                if not exc.retryable:
                    m.errors[f"push:{exc.code or exc.status}"] += 1
                    raise DeviceBroken(f"push refused: {exc}") from None
                m.errors[f"push:{exc.code.value if exc.code else exc.status}"] += 1
                retry_after = exc.retry_after
            except RETRYABLE_TRANSPORT as exc:
                m.errors[f"push:{type(exc).__name__}"] += 1
            m.counters["retries"] += 1
            await asyncio.sleep(backoff_delay(attempt, self.retry_rng, cap=2.0, retry_after=retry_after))
        raise DeviceBroken("push: too many attempts")

    def _lost_answer(self, batch: list[dict[str, Any]], d: Dropped) -> None:
        """A response thrown away after the server said 200: those seqs must come back `replayed` (I1)."""
        if d.kind == "drop_response" and d.status == 200:
            for mut in batch:
                e = self.fleet.ledger.get((self.id, mut["seq"]))
                if e is not None and e.status is None:
                    e.must_replay = True

    def _seq_gap(self, exc: SimHttpError, batch: list[dict[str, Any]]) -> None:
        """The server expects an earlier seq than we hold: it lost acknowledged work. Never expected; fail loudly."""
        expected = exc.details.get("expected_seq", exc.details.get("expected"))
        self.fleet.metrics.errors["seq_gap"] += 1
        raise DeviceBroken(f"seq_gap: server expects {expected}, outbox starts at {batch[0]['seq']}")

    def process(self, resp: PushResponse) -> None:
        """Record each seq's result, update the replica from it, and drop acknowledged seqs from the outbox."""
        fleet, m = self.fleet, self.fleet.metrics
        done: set[int] = set()
        for r in resp.results:
            done.add(r.seq)
            e = fleet.ledger.get((self.id, r.seq))
            status = r.status.value
            if e is None:
                m.errors["result_for_unknown_seq"] += 1
                continue
            e.results += 1
            if r.replayed:
                e.replayed += 1
                m.counters["replayed_results"] += 1
            else:
                e.fresh += 1
                if e.fresh > 1 or e.must_replay:
                    fleet.violations.append(f"{self.id} seq {r.seq} {e.op}: applied again (a resend was not replayed)")
            if e.status is None:
                e.status, e.reason = status, (r.reason.value if r.reason else None)
                e.removed = r.removed.value if r.removed else None
                e.conflicts = [c.model_dump(mode="json") for c in r.conflicts]
                m.counters[f"status_{status}"] += 1
                if status == "rejected":
                    m.rejected[e.reason or "?"] += 1
                elif status == "merged":
                    m.merged[e.reason or "?"] += 1
                m.acked(1)
            elif status != e.status or (r.reason.value if r.reason else None) != e.reason:
                fleet.violations.append(f"{self.id} seq {r.seq}: replay says {status}/{r.reason}, first {e.status}/{e.reason}")
            if r.ticket is not None:
                self.replica.put(r.ticket)
            elif r.removed is not None:
                self.replica.drop(UUID(e.ticket_id))
        before = len(self.outbox)
        self.outbox = [x for x in self.outbox if x["seq"] not in done]
        if len(self.outbox) != before:
            records = self.disk["outbox"]
            for seq in done:
                records.pop(seq, None)

    async def pull(self, attempts: int = 3) -> None:
        """Pull a whole page set and apply it atomically; a checksum mismatch re-snapshots (SPEC §3)."""
        for _ in range(attempts):
            pages = await self._page_set()
            self.replica.apply_pages(pages)
            if self.replica.converged():
                return
            self.fleet.metrics.counters["checksum_mismatch"] += 1
            self.replica.cursor = None  # SPEC: pull with cursor null
        self.fleet.metrics.errors["checksum_mismatch_persistent"] += 1

    async def _page_set(self) -> list[PullResponse]:
        """Buffer pages until has_more is false; any failure discards them and restarts from the stored cursor."""
        m = self.fleet.metrics
        for attempt in range(MAX_ATTEMPTS):
            await self.wait_online()
            pages: list[PullResponse] = []
            cursor = self.replica.cursor
            retry_after = None
            try:
                while True:
                    fault = self.fault((("drop_request", 0.5), ("drop_response", 0.5)))
                    body = encode(PullRequest(cursor=cursor, limit=500), self.fleet.transport.media)
                    _, _, data = await self.fleet.transport.request("POST", "/v1/sync/pull", token=self.creds.token,
                                                                    kind="pull", body=body, fault=fault)
                    page = decode(data, self.fleet.transport.media, PullResponse)
                    pages.append(page)
                    if not page.has_more:
                        return pages
                    cursor = page.cursor
            except Dropped:
                pass
            except SimHttpError as exc:
                if exc.code in (ErrorCode.CURSOR_INVALID, ErrorCode.RESET_REQUIRED):
                    m.errors[f"pull:{exc.code.value}"] += 1
                    if exc.code is ErrorCode.RESET_REQUIRED:
                        self.replica = Replica()
                    else:
                        self.replica.cursor = None
                    continue
                if not exc.retryable:
                    raise DeviceBroken(f"pull refused: {exc}") from None
                m.errors[f"pull:{exc.code.value if exc.code else exc.status}"] += 1
                retry_after = exc.retry_after
            except RETRYABLE_TRANSPORT as exc:
                m.errors[f"pull:{type(exc).__name__}"] += 1
            m.counters["retries"] += 1
            await asyncio.sleep(backoff_delay(attempt, self.retry_rng, cap=2.0, retry_after=retry_after))
        raise DeviceBroken("pull: too many attempts")

    async def upload_photos(self, budget: int = 12) -> None:
        """Advance waiting uploads, resuming cut-off ones where the server says they stand.

        Photos never block ticket sync (I8): each round spends at most `budget` requests per photo, and a photo
        the server asks us to hold back (429 + Retry-After) waits for a later round instead of stalling this one.
        """
        m = self.fleet.metrics
        loop = asyncio.get_running_loop()
        for p in list(self.photos):
            if p.not_before > loop.time():
                continue
            try:
                outcome = await advance_photo(
                    self.fleet.transport, self.creds.token, p, self.retry_rng, m, budget=budget,
                    fault=lambda: self.fault((("drop_request", 0.4), ("drop_response", 0.6))),
                    online=self.online.is_set)
            except UploadRefused as exc:
                self.photos.remove(p)
                self.persist_photos()
                m.counters["photos_refused"] += 1
                m.errors[f"upload_refused:{exc.code}"] += 1
                continue
            self.persist_photos()
            if outcome == "done":
                self.photos.remove(p)
                self.persist_photos()
                self.fleet.uploaded[(p.sha256, p.ticket_id, p.kind)] = self.id
                m.counters["photos_uploaded"] += 1
            elif outcome == "offline":
                return

    async def live_loop(self) -> None:
        """Keep a live socket while online; a poke wakes the sync loop (an optimisation only, SPEC §3)."""
        fleet = self.fleet
        attempt = 0
        while not fleet.finished and fleet.live_session is not None:
            await self.online.wait()
            try:
                async with fleet.live_session.ws_connect(
                    fleet.transport.base + "/v1/live?encoding=json", headers=fleet.transport.headers(self.creds.token, False),
                    heartbeat=30,
                ) as ws:
                    fleet.metrics.counters["live_connects"] += 1
                    self.live_ws = ws  # going offline closes it (crew_loop): no timer per device to notice
                    while self.online.is_set() and not fleet.finished:
                        msg = await ws.receive()
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            break
                        fleet.metrics.counters["live_messages"] += 1
                        frame = decode_live(msg.data, JSON)
                        if isinstance(frame, LivePoke):
                            fleet.metrics.counters["live_pokes"] += 1
                            self.poked = max(self.poked, frame.watermark)
                            if frame.watermark > self.replica.watermark:
                                self.wake.set()
                            else:
                                fleet.metrics.counters["pokes_already_pulled"] += 1
            except (*RETRYABLE_TRANSPORT, aiohttp.WSServerHandshakeError, DecodeError) as exc:
                fleet.metrics.errors[f"live:{type(exc).__name__}"] += 1
            finally:
                self.live_ws = None
            attempt += 1  # every disconnect backs off a little, so a server closing sockets is not hammered
            await asyncio.sleep(backoff_delay(min(attempt, 6), self.retry_rng, base=0.5, cap=10.0))

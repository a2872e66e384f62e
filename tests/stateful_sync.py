"""Hypothesis state machine: devices of two crews work offline, a supervisor reassigns and cancels, the network drops,
loses and duplicates requests. After quiescing, every replica equals the server and no mutation is lost or doubled.

Used by tests/test_sync_stateful.py (CI-sized) and ops/stateful_sync.py (long runs with a seed and a count).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import asyncpg
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sync_server.settings import Settings
from sync_server.storage.tickets import load_tickets
from tests.factories import World, build_world, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient

T = TypeVar("T")
CREWS = ("san-1", "san-2")
STEP_TIMEOUT = 60


class LoopThread:
    """One event loop in a thread: Hypothesis drives sync rules, the server and clients live on this loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion on the loop, bounded in time."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=STEP_TIMEOUT)

    def close(self) -> None:
        """Stop the loop thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Env:
    """Per-run environment handed to the machine by the test: cluster DSN factory and the loop."""

    admin_dsn: str
    template: str
    dsn_for: Any
    loop: LoopThread
    tmp: Any


ENV: Env | None = None  # set by the driver before running the machine (Hypothesis constructs machines itself)


@dataclass
class Phone:
    """A device with a replica, an outbox that survives anything, and what it learned from results."""

    client: DeviceClient
    outbox: list[dict[str, Any]] = field(default_factory=list)
    results: dict[int, str] = field(default_factory=dict)


class SyncMachine(RuleBasedStateMachine):
    """Random field work, supervision and network faults; convergence is checked after quiescing."""

    @initialize()
    def setup(self) -> None:
        assert ENV is not None
        self.env = ENV
        self.name = "h_" + uuid.uuid4().hex[:10]
        self.env.loop.run(self._setup())

    async def _setup(self) -> None:
        from tests.conftest import start_server

        admin = await asyncpg.connect(self.env.admin_dsn)
        try:
            await admin.execute(f"CREATE DATABASE {self.name} TEMPLATE {self.env.template}")
        finally:
            await admin.close()
        dsn = self.env.dsn_for(self.name)
        self.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        self.world: World = await build_world(self.pool)
        recs = await make_tickets(self.pool, self.world, 4, crew="san-1")
        recs += await make_tickets(self.pool, self.world, 3, crew="san-2")
        self.ticket_ids = [r.ticket.id for r in recs]
        settings = Settings(data_dir=self.env.tmp / self.name, demo_data=False, port=0, pool_min_size=1, pool_max_size=6)
        self.server = await start_server(settings, dsn)
        self.http = aiohttp.ClientSession()
        self.phones = [Phone(DeviceClient(self.http, self.server.url, self.world.device(c, i).token))
                       for c in CREWS for i in range(2)]
        self.sup = SupervisorClient(self.http, self.server.url, self.world.supervisors["sanitation"])
        for p in self.phones:
            await p.client.pull()

    def teardown(self) -> None:
        if not hasattr(self, "server"):
            return
        try:
            self.check_quiesced()
        finally:
            self.env.loop.run(self._teardown())

    async def _teardown(self) -> None:
        await self.http.close()
        await self.server.runner.cleanup()
        await self.pool.close()
        admin = await asyncpg.connect(self.env.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        finally:
            await admin.close()

    # ---- offline field work -------------------------------------------------------------------------------------

    @rule(phone=st.integers(0, 3), ticket=st.integers(0, 12),
          op=st.sampled_from(["acknowledge", "start", "pause", "resume", "complete", "unable_to_complete", "add_note",
                              "set_items", "set_resolution", "decline"]),
          count=st.integers(0, 5))
    def work(self, phone: int, ticket: int, op: str, count: int) -> None:
        """Queue a mutation offline; any ticket id (held or not), as stale phones do."""
        p = self.phones[phone]
        tid = self.ticket_ids[ticket % len(self.ticket_ids)]  # self-reported tickets join the pool
        args: dict[str, Any] = {
            "complete": {"resolution_code": "collected"},
            "unable_to_complete": {"reason_code": "blocked"},
            "decline": {"reason_code": "wrong_area"},
            "add_note": {"note_id": str(uuid.uuid4()), "text": f"note {count}"},
            "set_items": {"items": [{"item_type": "mattress", "count": count}]},
            # codes every service type accepts by default (service_types.resolution_codes, GET /v1/catalog)
            "set_resolution": {"resolution_code": ("collected", "cleaned", "removed", "partial", "resolved", "not_found")[count]},
        }.get(op, {})
        p.outbox.append(p.client.mutation(op, tid, args))

    @rule(phone=st.integers(0, 3))
    def self_report(self, phone: int) -> None:
        """Proactive work with a client-made id."""
        p = self.phones[phone]
        args = {"service_type": "Graffiti Removal", "address": "1 N MAIN ST", "lat": 34.05, "lon": -118.24,
                "resolution_code": "painted_over", "note": "tag"}
        tid = uuid.uuid4()
        self.ticket_ids.append(tid)
        p.outbox.append(p.client.mutation("self_report", tid, args))

    # ---- the network ---------------------------------------------------------------------------------------------

    @precondition(lambda self: any(p.outbox for p in self.phones))
    @rule(phone=st.integers(0, 3), fault=st.sampled_from(["none", "drop_request", "lose_response", "duplicate"]))
    def sync(self, phone: int, fault: str) -> None:
        """Push the outbox under a network fault, then pull."""
        self.env.loop.run(self._sync(self.phones[phone], fault))

    async def _sync(self, p: Phone, fault: str) -> None:
        if not p.outbox or fault == "drop_request":
            return
        batch = list(p.outbox)
        if fault == "duplicate":
            a, b = await asyncio.gather(p.client.push(batch), p.client.push(batch))
            resp = a
        else:
            resp = await p.client.push(batch)
        if fault == "lose_response":
            return  # the server committed; the phone never heard, keeps the outbox and will resend
        self._ack(p, resp)
        await p.client.pull()

    def _ack(self, p: Phone, resp: Any) -> None:
        for r in resp.results:
            assert r.seq not in p.results or p.results[r.seq] == r.status.value or r.replayed, (r.seq, p.results[r.seq], r)
            p.results.setdefault(r.seq, r.status.value)
        p.outbox = [m for m in p.outbox if m["seq"] > resp.last_seq]

    @rule(phone=st.integers(0, 3))
    def reinstall(self, phone: int) -> None:
        """App data lost except the outbox: the next pull is a snapshot."""
        from clients.sim.replica import Replica

        self.phones[phone].client.replica = Replica()

    # ---- supervision ---------------------------------------------------------------------------------------------

    @rule(ticket=st.integers(0, 6), action=st.sampled_from(["reassign", "cancel", "priority", "close"]),
          crew=st.sampled_from(CREWS))
    def supervise(self, ticket: int, action: str, crew: str) -> None:
        """Central changes while phones are offline; illegal ones are refused by the API and change nothing."""
        tid = self.ticket_ids[ticket % 7]
        call = {
            "reassign": ("POST", f"/v1/tickets/{tid}/assign", {"crew": crew}),
            "cancel": ("POST", f"/v1/tickets/{tid}/cancel", {"reason": "resident"}),
            "priority": ("PATCH", f"/v1/tickets/{tid}", {"priority": "urgent"}),
            "close": ("POST", f"/v1/tickets/{tid}/close", {}),
        }[action]
        self.env.loop.run(self.sup.call(*call, expect=None))

    # ---- invariants ----------------------------------------------------------------------------------------------

    @invariant()
    def seqs_are_gap_free(self) -> None:
        for p in getattr(self, "phones", []):
            seqs = [m["seq"] for m in p.outbox]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True

    def check_quiesced(self) -> None:
        """Drain every outbox without faults, pull to the head, and compare everything with the server."""
        self.env.loop.run(self._quiesce_and_check())

    async def _quiesce_and_check(self) -> None:
        for p in self.phones:
            if p.outbox:
                self._ack(p, await p.client.push(list(p.outbox)))
        for p in self.phones:
            await p.client.pull()
        async with self.pool.acquire() as conn:
            for p in self.phones:
                did = await conn.fetchval("SELECT id FROM devices WHERE token_hash = sha256($1::bytea)",
                                          p.client.token.encode())
                sent = p.client.seq
                # nothing lost: every seq the phone made has exactly one stored result
                n = await conn.fetchval("SELECT count(*) FROM mutation_results WHERE device_id = $1", did)
                assert n == sent and sorted(p.results) == list(range(1, sent + 1)), (did, n, sent)
                crew = await conn.fetchval("SELECT crew_id FROM devices WHERE id = $1", did)
                ids = [r["id"] for r in await conn.fetch("SELECT id FROM tickets WHERE holder_crew_id = $1", crew)]
                server = await load_tickets(conn, ids)
                assert p.client.replica.converged()
                assert {k: v.model_dump(mode="json") for k, v in p.client.replica.tickets.items()} == {
                    k: v.ticket.model_dump(mode="json") for k, v in server.items()}
            # nothing applied twice: every applied add_note is stored exactly once
            applied_notes = await conn.fetchval(
                "SELECT count(*) FROM mutation_results WHERE op = 'add_note' AND status IN ('applied', 'merged')")
            assert applied_notes == await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE author LIKE 'dev-%'") - \
                await conn.fetchval("SELECT count(*) FROM tickets WHERE source = 'self_report'")
            reports = await conn.fetchval(
                "SELECT count(*) FROM mutation_results WHERE op = 'self_report' AND status = 'applied'")
            assert reports == await conn.fetchval("SELECT count(*) FROM tickets WHERE source = 'self_report'")


def run(env: Env, max_examples: int, seed: int | None = None, stateful_step_count: int = 30) -> None:
    """Run the machine; a failure raises with Hypothesis's shrunk reproduction."""
    from hypothesis import HealthCheck, settings
    from hypothesis import seed as seed_decorator
    from hypothesis.stateful import run_state_machine_as_test

    global ENV
    ENV = env
    cfg = settings(max_examples=max_examples, stateful_step_count=stateful_step_count, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck), derandomize=seed is None)

    def go() -> None:
        run_state_machine_as_test(SyncMachine, settings=cfg)

    if seed is not None:
        go = seed_decorator(seed)(go)
    go()

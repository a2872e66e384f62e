"""The simulator against a real server: a seeded, faulty shift ends with a clean verdict, and planted defects fail it."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from protocol import Ticket

from clients.sim.cli import simulate
from clients.sim.config import SimConfig
from clients.sim.verdict import judge
from sync_server.engine.changes import commit_changes
from sync_server.storage.tickets import load_tickets, lock_tickets
from tests.conftest import Server
from tests.factories import World


def credentials(server: Server, world: World) -> dict[str, Any]:
    """The demo-credentials.json shape, built from the test world (the simulator enrols its own devices)."""
    return {
        "server": server.url,
        "admin": {"token": world.admin},
        "supervisors": [{"department": d, "token": t} for d, t in world.supervisors.items()],
        "devices": [],
    }


def config(**kw: Any) -> SimConfig:
    base: dict[str, Any] = dict(devices=30, duration_s=20, seed=7, fault_rate=0.1, offline_fraction=0.3,
                                photo_rate=0.4, supervisor_rate=40, step_s=0.6, progress=False, quiesce_timeout_s=40)
    base.update(kw)
    return SimConfig(**base)


async def test_faulty_shift_has_a_clean_verdict_and_an_edited_replica_fails_it(server: Server, world: World) -> None:
    rep, verdict, fleet = await simulate(config(), credentials(server, world))
    assert rep["ok"], rep["examples"]
    assert (rep["lost"], rep["duplicated"], rep["diverged_devices"], rep["unresolved"]) == (0, 0, 0, 0)
    assert rep["mutations_sent"] > 200 and rep["mutations_applied"] > 100
    # the faults really happened, and every resend of a committed push came back as a replay
    assert rep["faults_injected"].get("drop_response", 0) > 0 and rep["faults_injected"].get("duplicate", 0) > 0
    assert rep["replayed_results"] > 0
    assert rep["photos_verified"] == rep["photos_uploaded"] > 0
    # supervisors moved work away from crews mid-shift, and that was visible as scope exits or late reports
    assert rep["supervisor_actions"].get("reassign", 0) + rep["supervisor_actions"].get("cancel", 0) > 0
    # like the crew app, a device ignores a poke its last pull already covered (its own push pokes it too), and
    # still converges
    assert fleet.metrics.counters["live_pokes"] > fleet.metrics.counters["pokes_already_pulled"] > 0

    # planted defect (a): a replica edited behind the simulator's back must fail the verdict
    device = next(d for d in fleet.devices if d.replica.tickets)
    tid, t = next(iter(device.replica.tickets.items()))
    device.replica.tickets[tid] = Ticket.model_validate({**t.model_dump(), "description": t.description + " (edited)"})
    verdict = await _rejudge(fleet)
    assert not verdict.ok and verdict.diverged_devices == 1 and verdict.lost == 0


async def _rejudge(fleet: Any) -> Any:
    from clients.sim.http1 import Client

    async with Client(fleet.transport.base) as http:  # the run's pool is closed; judge only needs HTTP
        fleet.transport.http = fleet.staff_transport.http = http
        return await judge(fleet)


async def lose_first_note(pool: asyncpg.Pool) -> UUID | None:
    """Lose the run's first note as a faulty server would, so that every reader sees it gone: its row deleted and its
    ticket re-rendered through the one change path (commit_changes). Deleting the row alone leaves the stored document
    (what the ticket list, and so the verdict, serves) showing the note until some later writer happens to re-render
    that ticket, which is timing: under load that was often nobody, and the run passed."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT id, ticket_id FROM ticket_notes ORDER BY created_at, id LIMIT 1")
        if row is None:
            return None
        await lock_tickets(conn, [row["ticket_id"]])
        before = await load_tickets(conn, [row["ticket_id"]])
        await conn.execute("DELETE FROM ticket_notes WHERE id = $1", row["id"])
        await commit_changes(conn, before, actor_kind="system", actor="test", action="update")
        return UUID(str(row["id"]))


async def test_note_deleted_on_the_server_mid_run_is_reported_lost(server: Server, world: World, pool: asyncpg.Pool) -> None:
    run = asyncio.create_task(simulate(config(devices=10, duration_s=8, seed=11, offline_fraction=0.0),
                                       credentials(server, world)))
    deleted = None
    while deleted is None and not run.done():  # bounded by the run (its shift and quiesce have their own bounds)
        await asyncio.sleep(0.05)
        deleted = await lose_first_note(pool)
    rep, _, _ = await run
    assert deleted is not None
    assert not rep["ok"] and rep["lost"] >= 1
    assert any(str(deleted) in line for line in rep["examples"]["lost"])


async def test_server_that_forgets_stored_results_fails_the_verdict(server: Server, world: World,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Planted I1 defect: replays no longer get their stored result back (answered as expired duplicates instead).
    from sync_server.storage import push_sql as store

    async def forget(conn: Any, device_id: str, seqs: list[int]) -> dict[int, Any]:
        return {}

    monkeypatch.setattr(store, "stored_results", forget)
    rep, _, _ = await simulate(config(devices=10, duration_s=8, seed=12, fault_rate=0.3, offline_fraction=0.0),
                               credentials(server, world))
    assert rep["faults_injected"].get("duplicate", 0) > 0
    assert not rep["ok"] and rep["duplicated"] >= 1

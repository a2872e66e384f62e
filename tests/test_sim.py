"""The simulator against a real server: a seeded, faulty shift ends with a clean verdict, and planted defects fail it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from protocol import Ticket

from clients.sim.cli import simulate
from clients.sim.config import SimConfig
from clients.sim.verdict import judge
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


@pytest.mark.rows_edited_by_hand  # deletes a note row behind the server's back, on purpose
async def test_note_deleted_on_the_server_mid_run_is_reported_lost(server: Server, world: World, pool: asyncpg.Pool) -> None:
    run = asyncio.create_task(simulate(config(devices=10, duration_s=8, seed=11, offline_fraction=0.0),
                                       credentials(server, world)))
    deleted = None
    for _ in range(200):  # bounded: the shift is 8 s
        await asyncio.sleep(0.05)
        deleted = await pool.fetchval(
            "DELETE FROM ticket_notes WHERE id = (SELECT id FROM ticket_notes ORDER BY created_at LIMIT 1) RETURNING id")
        if deleted is not None:
            break
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

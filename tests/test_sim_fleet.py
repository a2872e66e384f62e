"""A real fleet for the simulator: crews of 2-4 devices created per run, split over processes with one verdict."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request

from clients.sim.config import SimConfig
from clients.sim.crews import CrewSlot, crew_sizes, plan, split
from clients.sim.procs import run_processes
from tests.conftest import Server
from tests.factories import World
from tests.test_sim import credentials


def test_crew_sizes_are_two_to_four_and_add_up() -> None:
    for n in range(2, 80):
        sizes = crew_sizes(n, seed=3)
        assert sum(sizes) == n and all(2 <= s <= 4 for s in sizes), (n, sizes)
    assert crew_sizes(1, seed=3) == [1]
    assert crew_sizes(9, seed=5) == crew_sizes(9, seed=5)


def test_plan_names_crews_per_run_and_split_keeps_crews_whole() -> None:
    slots = plan(9, seed=1, run_id="ab12", departments=["streets", "sanitation"])
    assert slots[0].name == "sim-ab12-0000" and slots[0].department == "sanitation"
    assert slots[1].department == "streets"
    parts = split([CrewSlot("a", "d", 4), CrewSlot("b", "d", 3), CrewSlot("c", "d", 2), CrewSlot("e", "d", 2)], 2)
    assert [[s.name for s in p] for p in parts] == [["a", "e"], ["b", "c"]]  # 6 and 5 devices, no crew in both


def _sim_crews(server: Server, token: str) -> dict[str, int]:
    req = urllib.request.Request(server.url + "/v1/crews", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        crews = json.loads(r.read())["crews"]
    return {c["name"]: c["devices"] for c in crews if c["name"].startswith("sim-")}


def _p(xs: list[float], q: int) -> float:
    return sorted(xs)[math.ceil(q / 100 * len(xs)) - 1]


async def test_two_processes_one_fleet_one_verdict(server: Server, world: World) -> None:
    cfg = SimConfig(devices=11, duration_s=6, seed=21, fault_rate=0.1, offline_fraction=0.0, photo_rate=0.0,
                    supervisor_rate=20, step_s=0.4, progress=False, quiesce_timeout_s=30, processes=2)
    merged, parts, samples = await asyncio.to_thread(run_processes, cfg, credentials(server, world))
    assert merged["ok"], merged["examples"]
    assert len(parts) == 2 and merged["processes"] == 2
    # counts of the merged verdict are the sums of the parts
    for key in ("devices", "crews", "mutations_sent", "mutations_applied", "mutations_merged", "lost", "duplicated",
                "diverged_devices", "unresolved"):
        assert merged[key] == parts[0][key] + parts[1][key], key
    assert merged["devices"] == 11 and merged["mutations_sent"] > 20
    # percentiles come from the union of raw samples, not from the parts' percentiles
    pushes = samples[0]["push"] + samples[1]["push"]
    assert merged["push_latency_ms"]["count"] == len(pushes) == parts[0]["push_latency_ms"]["count"] + \
        parts[1]["push_latency_ms"]["count"]
    assert merged["push_latency_ms"]["p99"] == round(_p(pushes, 99), 1)
    assert merged["push_latency_ms"]["p50"] == round(_p(pushes, 50), 1)
    # the server has the fleet's crews, 2-4 devices each, and no crew was driven by both processes
    crews = await asyncio.to_thread(_sim_crews, server, world.admin)
    assert sum(crews.values()) == 11 and all(2 <= n <= 4 for n in crews.values()), crews
    assert len(crews) == merged["crews"] == parts[0]["crews"] + parts[1]["crews"]

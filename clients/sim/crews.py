"""A real fleet: crews of 2–4 devices created for the run, and their split over simulator processes.

A city's crew is a truck with two to four phones working the same tickets. Putting hundreds of devices on a
handful of demo crews measures contention nobody has in the field, so each run creates its own crews (through the
admin API, like an operator would) sized from the seed, spread over the departments it has supervisors for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .supervisor import StaffApi

MIN_CREW, MAX_CREW = 2, 4


@dataclass(frozen=True)
class CrewSlot:
    """One crew of the run: its name, department and how many simulated devices it gets."""

    name: str
    department: str
    devices: int


def crew_sizes(devices: int, seed: int) -> list[int]:
    """Seeded crew sizes in 2..4 summing to `devices` (a single device gets a crew of one)."""
    rng = random.Random(f"fieldsync-sim/{seed}/crews")
    sizes: list[int] = []
    rest = devices
    while rest > MAX_CREW:
        size = rng.choice((2, 3, 4))
        if rest - size == 1:  # never leave one device alone for the last crew
            size -= 1
        sizes.append(size)
        rest -= size
    if rest:
        sizes.append(rest)
    return sizes


def plan(devices: int, seed: int, run_id: str, departments: list[str]) -> list[CrewSlot]:
    """The crews of one run, round-robin over departments; names carry the run id so reruns never collide."""
    depts = sorted(departments)
    return [CrewSlot(f"sim-{run_id}-{k:04d}", depts[k % len(depts)], n)
            for k, n in enumerate(crew_sizes(devices, seed))]


def split(slots: list[CrewSlot], parts: int) -> list[list[CrewSlot]]:
    """Disjoint crews per process, balanced by device count (each process gets whole crews, never half of one)."""
    out: list[list[CrewSlot]] = [[] for _ in range(parts)]
    load = [0] * parts
    for slot in sorted(slots, key=lambda s: -s.devices):
        i = load.index(min(load))
        out[i].append(slot)
        load[i] += slot.devices
    return [sorted(p, key=lambda s: s.name) for p in out]


async def create(admin: StaffApi, slots: list[CrewSlot]) -> None:
    """Create the run's crews over POST /v1/crews (admin), a few at a time."""
    from .supervisor import gather_bounded

    await gather_bounded([admin.call("POST", "/v1/crews", {
        "name": s.name, "department": s.department, "display_name": f"Simulated crew {s.name}",
    }) for s in slots], 8)

"""Simulation settings: one frozen object built from the command line, so a seed plus this object is a scenario."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .crews import CrewSlot


@dataclass(frozen=True)
class SimConfig:
    """Every knob of a run; defaults give a realistic, moderately faulty shift."""

    server: str = ""
    devices: int = 50
    duration_s: float = 60.0
    seed: int = 1
    offline_fraction: float = 0.2     # share of a device's shift spent without signal
    photo_rate: float = 0.3           # chance a worked ticket gets before/after photos
    supervisor_rate: float = 12.0     # reassign/cancel/reprioritise/create actions per minute, per department
    fault_rate: float = 0.02          # chance per request of an injected fault (see faults.py)
    step_s: float = 2.0               # mean pause between a crew's taps (compressed shift time)
    connections: int = 100            # HTTP pool limit (http1.Client): the simulator's own concurrency cap
    push_batch: int = 200             # mutations per push request
    tickets_per_crew: int = 8         # minimum open tickets per crew; supervisors create more when short
    quiesce_timeout_s: float = 120.0  # bound on draining outboxes at the end
    request_timeout_s: float = 30.0
    live: bool = True                 # use GET /v1/live pokes when the server offers it
    photos: bool = True               # use tus uploads when the server offers them
    report: Path | None = None
    plot: Path | None = None
    progress: bool = True
    processes: int = 1                # simulator processes sharing one fleet (disjoint crews, one verdict)
    existing_crews: bool = False      # legacy: spread devices over the server's existing crews instead
    run_id: str = ""                  # prefix of the crews this run creates (unique per run)
    crews: tuple[CrewSlot, ...] = ()  # this process's share of the fleet's crews (set by the runner)
    device_offset: int = 0            # index of this process's first device in the whole fleet (seeds)
    metrics_url: str = ""             # the server's Prometheus endpoint, scraped during the shift if set

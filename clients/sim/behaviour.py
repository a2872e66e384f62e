"""Crew and supervisor behaviour as data plus a seeded planner: the same seed always yields the same stream of intents.

The planner never looks at the server. It emits abstract intents ("work the ticket at position 0.37 of my
list: acknowledge, two notes, photos, complete"); the device binds an intent to a concrete ticket only when
it acts, with `bind_work`, which is a pure function of (intent, ticket). So the mutation stream is fixed by
the seed, and timing only decides which tickets it lands on (test: tests/test_sim_determinism.py).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from protocol import Ticket



@dataclass(frozen=True)
class Profile:
    """How a crew works one service type: what it counts, how it closes, how often it fails."""

    items: tuple[str, ...]
    resolutions: tuple[str, ...]
    unable: tuple[str, ...]
    unable_rate: float = 0.12
    notes: tuple[str, ...] = ("On site", "Resident spoke to crew", "Access via alley", "Done, area clean")


PROFILES: Final[dict[str, Profile]] = {
    "Bulky Items": Profile(("mattress", "sofa", "chair", "dresser", "tv"), ("collected",), ("items_not_out", "no_access")),
    "Metal/Household Appliances": Profile(("refrigerator", "washer", "water_heater"), ("collected",), ("items_not_out",)),
    "Electronic Waste": Profile(("tv", "monitor", "computer", "microwave"), ("collected",), ("items_not_out",)),
    "Illegal Dumping Pickup": Profile(("bags", "debris_cuyd", "tires"), ("cleaned",), ("hazmat_referral",), 0.08),
    "Dead Animal Removal": Profile(("animal",), ("removed",), ("not_found",), 0.2),
    "Graffiti Removal": Profile(("sq_ft",), ("painted_over", "pressure_washed"), ("private_property",)),
    "Homeless Encampment": Profile(("bags",), ("cleaned",), ("occupied", "no_access"), 0.3),
    "Single Streetlight Issue": Profile(("lamp",), ("relamped", "photocell_replaced"), ("pole_down_referral",)),
    "Multiple Streetlight Issue": Profile(("lamp", "wire_ft"), ("circuit_repaired",), ("edison_referral",)),
    "Pothole Repair": Profile(("asphalt_tons",), ("patched",), ("utility_cut",), 0.1),
}
DEFAULT_PROFILE: Final = Profile(("units",), ("resolved",), ("no_access",))
SELF_REPORT_TYPES: Final = ("Graffiti Removal", "Illegal Dumping Pickup", "Bulky Items", "Pothole Repair")
STREETS: Final = ("S Main St", "W 7th St", "N Figueroa St", "E Cesar Chavez Ave", "S Broadway", "W Pico Blvd")


def profile(service_type: str) -> Profile:
    """The crew behaviour for a service type (a generic one for types we do not model)."""
    return PROFILES.get(service_type, DEFAULT_PROFILE)


@dataclass(frozen=True)
class WorkIntent:
    """Work one ticket from start to finish; every random choice is made here, none at bind time."""

    slot: float                       # position in the device's sorted list of workable tickets
    acknowledge: bool
    pause: bool
    notes: tuple[tuple[str, int], ...]  # (note id, text index)
    item_picks: tuple[tuple[int, int], ...]  # (item index, count)
    photos: tuple[tuple[str, int], ...]  # (kind, photo seed)
    fail: bool
    code_pick: int
    gaps: tuple[float, ...]           # seconds between the taps


@dataclass(frozen=True)
class SelfReportIntent:
    """The crew fixes something nobody reported (graffiti painted over) and records it."""

    ticket_id: str
    type_pick: int
    street_no: int
    street_pick: int
    lat: float
    lon: float
    photo_seed: int | None


@dataclass(frozen=True)
class OfflineIntent:
    """No signal for a while (basement garage, canyon road)."""

    seconds: float


@dataclass(frozen=True)
class IdleIntent:
    """Driving between jobs."""

    seconds: float


Intent = WorkIntent | SelfReportIntent | OfflineIntent | IdleIntent


@dataclass
class Planner:
    """One device's seeded intent stream; `describe` gives a timing-free fingerprint for determinism tests."""

    seed: int
    index: int
    step_s: float = 2.0
    offline_fraction: float = 0.2
    photo_rate: float = 0.3
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"fieldsync-sim/{self.seed}/device/{self.index}")

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def next(self) -> Intent:
        """The next thing this crew does."""
        r = self.rng
        roll = r.random()
        # Offline stretches are ~4 work steps long, so their frequency gives the wanted share of offline time.
        offline_len = 4 * 4 * self.step_s
        work_len = 5 * self.step_s
        p_off = 0.0
        if 0 < self.offline_fraction < 1:
            p_off = min(0.9, self.offline_fraction * work_len / (offline_len * (1 - self.offline_fraction)))
        if roll < p_off:
            return OfflineIntent(round(r.uniform(0.5, 1.5) * offline_len, 3))
        roll = r.random()
        if roll < 0.06:
            return SelfReportIntent(self._uuid(), r.randrange(1000), r.randrange(100, 9999), r.randrange(len(STREETS)),
                                    round(34.0 + r.random() * 0.2, 5), round(-118.4 + r.random() * 0.2, 5),
                                    r.getrandbits(32) if r.random() < self.photo_rate else None)
        if roll < 0.12:
            return IdleIntent(round(r.expovariate(1.0 / self.step_s), 3))
        n_notes = r.choices((0, 1, 2), (0.3, 0.5, 0.2))[0]
        photos: tuple[tuple[str, int], ...] = ()
        if r.random() < self.photo_rate:
            photos = (("before", r.getrandbits(32)), ("after", r.getrandbits(32)))
        n_items = r.choice((0, 1, 1, 2))
        taps = 3 + n_notes + len(photos) + (1 if n_items else 0)
        return WorkIntent(
            slot=r.random(),
            acknowledge=r.random() < 0.7,
            pause=r.random() < 0.1,
            notes=tuple((self._uuid(), r.randrange(1000)) for _ in range(n_notes)),
            item_picks=tuple((r.randrange(100), r.randint(1, 6)) for _ in range(n_items)),
            photos=photos,
            fail=r.random() < 0.12,
            code_pick=r.randrange(1000),
            gaps=tuple(round(r.expovariate(1.0 / self.step_s), 3) for _ in range(taps)),
        )

    def stream(self, n: int) -> list[Intent]:
        """The first n intents (used by the determinism test)."""
        return [self.next() for _ in range(n)]


def pick(tickets: list[Ticket], slot: float) -> Ticket | None:
    """The ticket at a slot of the id-sorted list: same list and slot, same ticket."""
    if not tickets:
        return None
    ordered = sorted(tickets, key=lambda t: str(t.id))
    return ordered[min(len(ordered) - 1, int(slot * len(ordered)))]


def note_text(device: str, note_id: str, idx: int, profile_: Profile) -> str:
    """A note a person might write, plus a marker that makes a duplicate findable by text."""
    return f"{profile_.notes[idx % len(profile_.notes)]} [{device}:{note_id[:8]}]"


def device_uuid(planned: str, device: str) -> str:
    """Make a planned id unique to the enrolled device, so two runs with one seed on one server never share ids."""
    return str(uuid.uuid5(uuid.UUID(planned), device))


def closing_note(intent: WorkIntent, ticket: Ticket, device: str, prof: Profile) -> str | None:
    """The note a crew types when it finishes (three jobs in four): it must reach the ticket's notes exactly once.

    Derived from the intent without drawing from the rng, so seeded intent streams stay as they were; the marker
    makes a duplicate findable by text like an add_note's."""
    if intent.code_pick % 4 == 0:
        return None
    key = hashlib.sha256(f"{device}/{ticket.id}/{intent.slot}/{intent.code_pick}".encode()).hexdigest()[:8]
    return f"{prof.notes[intent.code_pick % len(prof.notes)]} [{device}:{key}]"


def bind_work(intent: WorkIntent, ticket: Ticket, device: str) -> list[tuple[str, dict[str, Any], float]]:
    """(op, args, gap before it) for working `ticket`: pure, so the same intent and ticket give the same mutations."""
    prof = profile(ticket.service_type)
    ops: list[tuple[str, dict[str, Any]]] = []
    status = ticket.status.value if hasattr(ticket.status, "value") else str(ticket.status)
    if status in ("assigned", "reopened") and intent.acknowledge:
        ops.append(("acknowledge", {}))
    if status in ("assigned", "reopened", "acknowledged"):
        ops.append(("start", {}))
    elif status == "paused":
        ops.append(("resume", {}))
    if intent.pause:
        ops += [("pause", {"reason": "waiting for second truck"}), ("resume", {})]
    for kind, seed in intent.photos[:1]:
        ops.append(("attach_photo", {"_photo_seed": seed, "kind": kind}))
    for planned, idx in intent.notes:
        note_id = device_uuid(planned, device)
        ops.append(("add_note", {"note_id": note_id, "text": note_text(device, note_id, idx, prof)}))
    if intent.item_picks:
        lines = {}
        for item_idx, count in intent.item_picks:
            lines[prof.items[item_idx % len(prof.items)]] = count
        ops.append(("set_items", {"items": [{"item_type": k, "count": v} for k, v in sorted(lines.items())]}))
    for kind, seed in intent.photos[1:]:
        ops.append(("attach_photo", {"_photo_seed": seed, "kind": kind}))
    closing = closing_note(intent, ticket, device, prof)
    if intent.fail:
        ops.append(("unable_to_complete", {"reason_code": prof.unable[intent.code_pick % len(prof.unable)], "note": closing}))
    else:
        ops.append(("complete", {"resolution_code": prof.resolutions[intent.code_pick % len(prof.resolutions)], "note": closing}))
    gaps = list(intent.gaps) + [0.5] * max(0, len(ops) - len(intent.gaps))
    return [(op, args, gaps[i]) for i, (op, args) in enumerate(ops)]


def bind_self_report(intent: SelfReportIntent, service_types: list[str], device: str) -> tuple[str, dict[str, Any]] | None:
    """The self_report mutation args, or None when the department has no type a crew fixes on the spot."""
    choices: list[str] = [t for t in SELF_REPORT_TYPES if t in service_types] or sorted(service_types)
    if not choices:
        return None
    # Graffiti is what crews fix unprompted; a department that does graffiti always reports that.
    stype = choices[0] if choices[0] == "Graffiti Removal" else choices[intent.type_pick % len(choices)]
    prof = profile(stype)
    address = f"{intent.street_no} {STREETS[intent.street_pick]}, Los Angeles"
    ticket_id = device_uuid(intent.ticket_id, device)
    return ticket_id, {
        "service_type": stype, "address": address, "lat": intent.lat, "lon": intent.lon, "zip": None,
        "description": f"Found and fixed on patrol [{device}:{ticket_id[:8]}]",
        "resolution_code": prof.resolutions[0], "items": [], "note": f"Painted over [{device}:{ticket_id[:8]}]",
    }


def device_time(now: datetime) -> str:
    """The device clock as the wire wants it (UTC, with an offset)."""
    return now.isoformat()


# ---------------------------------------------------------------------------------------------- supervisors

SUPERVISOR_ACTIONS: Final[tuple[tuple[str, float], ...]] = (
    ("reassign", 0.35), ("cancel", 0.15), ("priority", 0.25), ("create", 0.15), ("close", 0.10),
)


@dataclass(frozen=True)
class SupervisorIntent:
    """One supervisor action on the ticket at `slot` of the department's sorted open tickets."""

    action: str
    slot: float
    crew_slot: float
    priority: str
    busy_first: bool
    gap: float


@dataclass
class SupervisorPlanner:
    """A department supervisor's seeded action stream."""

    seed: int
    department: str
    rate_per_min: float
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"fieldsync-sim/{self.seed}/supervisor/{self.department}")

    def next(self) -> SupervisorIntent:
        """The next action and the pause before it."""
        r = self.rng
        names = [a for a, _ in SUPERVISOR_ACTIONS]
        weights = [w for _, w in SUPERVISOR_ACTIONS]
        gap = r.expovariate(max(self.rate_per_min, 1e-6) / 60.0)
        return SupervisorIntent(r.choices(names, weights)[0], r.random(), r.random(),
                                r.choice(("low", "normal", "high", "urgent")), r.random() < 0.5, round(gap, 3))

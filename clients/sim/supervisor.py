"""Supervisors at their desks: reassign, cancel, reprioritise, create and close work during the shift, over the JSON API.

Their actions are what turn crew work into late field reports and scope exits. The same `StaffApi` reads
the server's state for the verdict (tickets, audit history, conflicts, photos): the simulator never reads
the database.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from uuid import UUID

from protocol import FIELD_DONE_STATUSES, HELD_STATUSES, WORKABLE_STATUSES, ErrorCode, Ticket

from .behaviour import PROFILES, SupervisorIntent, SupervisorPlanner, pick
from .transport import RETRYABLE_TRANSPORT, SimHttpError, Transport, with_retries

if TYPE_CHECKING:
    from .fleet import Fleet

LIST_OVERLAP = timedelta(seconds=10)  # updated_at is taken at a transaction's start; it may commit a little later

class StaffApi:
    """The supervisor/admin JSON API with the protocol's retry policy; one instance per token."""

    def __init__(self, transport: Transport, token: str, rng: random.Random) -> None:
        self.t, self.token, self.rng = transport, token, rng

    async def call(self, method: str, path: str, body: Any = None, *, retry: bool = True) -> Any:
        """JSON in, JSON out; transient failures are retried, permanent ones raise SimHttpError."""
        data = json.dumps(body).encode() if body is not None else None

        async def once() -> Any:
            _, _, raw = await self.t.request(method, path, token=self.token, kind="supervisor", body=data)
            return json.loads(raw) if raw else None

        if not retry:
            return await once()
        return await with_retries(once, self.rng, self.t.metrics, label="staff", max_attempts=20)

    async def raw(self, path: str) -> bytes:
        """Bytes of a GET (photo downloads)."""
        async def once() -> bytes:
            _, _, raw = await self.t.request("GET", path, token=self.token, kind="supervisor")
            return raw

        return await with_retries(once, self.rng, self.t.metrics, label="staff", max_attempts=20)

    async def tickets(self, known: dict[str, Ticket] | None = None, **query: Any) -> list[Ticket]:
        """Every ticket matching the filters, walking the keyset pages.

        With `known` (id text -> Ticket, updated here), a ticket listed again at the version already validated is
        reused instead of validated again: a list view's refresh re-reads the overlap of the previous one, and
        validating those was most of a 1,000-device simulator's supervisor CPU."""
        out: list[Ticket] = []
        cursor = None
        for _ in range(10_000):
            q = {k: v for k, v in query.items() if v is not None}
            q["limit"] = 500
            if cursor:
                q["cursor"] = cursor
            page = await self.call("GET", "/v1/tickets?" + urlencode(q))
            for raw in page["tickets"]:
                prev = known.get(raw.get("id")) if known is not None else None
                if prev is not None and prev.version == raw.get("version"):
                    out.append(prev)
                    continue
                t = Ticket.model_validate(raw)
                if known is not None:
                    known[raw["id"]] = t
                out.append(t)
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return out

    async def conflicts(self) -> list[dict[str, Any]]:
        """Every conflict and late report (open and resolved), newest first."""
        out: list[dict[str, Any]] = []
        before = None
        for _ in range(10_000):
            q: dict[str, Any] = {"state": "all", "limit": 500}
            if before is not None:
                q["before"] = before
            page = await self.call("GET", "/v1/conflicts?" + urlencode(q))
            out.extend(page["conflicts"])
            before = page.get("next_before")
            if before is None:
                break
        return out


class SupervisorActor:
    """One department's supervisor, acting at `--supervisor-rate` actions per minute from a seeded plan."""

    def __init__(self, department: str, api: StaffApi, fleet: Fleet) -> None:
        self.department, self.api, self.fleet = department, api, fleet
        self.planner = SupervisorPlanner(fleet.config.seed, department, fleet.config.supervisor_rate)
        self.open: list[Ticket] = []
        self.done: list[Ticket] = []
        self.actions = 0
        self.held: dict[UUID, Ticket] = {}  # the department's held tickets as last listed
        self.listed_up_to: datetime | None = None  # newest updated_at seen: later refreshes list only what changed
        self.seen: dict[str, Ticket] = {}  # every ticket listed, by id text, at the version last validated

    @property
    def crews(self) -> list[str]:
        """Crews of this department that the fleet drives (work moves between them)."""
        return sorted({d.creds.crew for d in self.fleet.devices if d.creds.department == self.department})

    async def refresh(self) -> None:
        """Re-read the department's open and finished work (a supervisor's list view): the whole list once, then only
        tickets updated since (with an overlap for transactions that committed late), as a console refreshes.

        Re-reading every held ticket of a city-sized department (thousands, in pages of 500) five times a minute per
        process was a tenth of the server's CPU at 1,000 devices: load no supervisor generates."""
        if self.listed_up_to is None:
            tickets = await self.api.tickets(self.seen, status=",".join(sorted(HELD_STATUSES)))
        else:
            since = self.listed_up_to - LIST_OVERLAP
            tickets = await self.api.tickets(self.seen, updated_since=since.isoformat())
        for t in tickets:
            if t.status in HELD_STATUSES:
                self.held[t.id] = t
            else:
                self.held.pop(t.id, None)
            if self.listed_up_to is None or t.updated_at > self.listed_up_to:
                self.listed_up_to = t.updated_at
        crews = set(self.crews)
        self.open = [t for t in self.held.values() if t.status in WORKABLE_STATUSES and t.crew in crews]
        self.done = [t for t in self.held.values() if t.status in FIELD_DONE_STATUSES and t.crew in crews]

    async def run(self) -> None:
        """Act until the shift ends; races with crews (409s) are expected and counted, not errors."""
        m = self.fleet.metrics
        while not self.fleet.stopping:
            intent = self.planner.next()
            await self.fleet.sleep(intent.gap)
            if self.fleet.stopping or not self.crews:
                return
            try:
                if self.actions % 5 == 0:
                    await self.refresh()
                await self.act(intent)
                self.actions += 1
                m.counters[f"supervisor_{intent.action}"] += 1
            except SimHttpError as exc:
                if exc.code in (ErrorCode.ILLEGAL_TRANSITION, ErrorCode.CONFLICT, ErrorCode.NOT_FOUND):
                    m.counters["supervisor_races"] += 1
                else:
                    m.errors[f"supervisor:{exc.code.value if exc.code else exc.status}"] += 1
            except (RuntimeError, *RETRYABLE_TRANSPORT) as exc:
                m.errors[f"supervisor:{type(exc).__name__}"] += 1

    def _target(self, intent: SupervisorIntent) -> Ticket | None:
        pool = self.open
        if intent.busy_first:  # work already under way is where late reports come from
            busy = [t for t in pool if t.status.value in ("acknowledged", "in_progress", "paused")]
            pool = busy or pool
        return pick(pool, intent.slot)

    async def act(self, intent: SupervisorIntent) -> None:
        """Perform one planned action against the current list."""
        crews = self.crews
        if intent.action == "create":
            await self.create(crews[int(intent.crew_slot * len(crews))])
            return
        if intent.action == "close":
            t = pick(self.done, intent.slot)
            if t is not None:
                await self.api.call("POST", f"/v1/tickets/{t.id}/close", {"reason": "reviewed"}, retry=False)
                self.done.remove(t)
            return
        t = self._target(intent)
        if t is None:
            return
        if intent.action == "reassign":
            others = [c for c in crews if c != t.crew] or crews
            await self.api.call("POST", f"/v1/tickets/{t.id}/assign",
                                {"crew": others[int(intent.crew_slot * len(others))]}, retry=False)
        elif intent.action == "cancel":
            await self.api.call("POST", f"/v1/tickets/{t.id}/cancel", {"reason": "resident cancelled"}, retry=False)
            self.open.remove(t)
        elif intent.action == "priority":
            await self.api.call("PATCH", f"/v1/tickets/{t.id}", {"priority": intent.priority}, retry=False)

    async def create(self, crew: str, n: int = 1) -> int:
        """New 311 work for a crew, of a service type this department handles."""
        types = self.fleet.service_types.get(self.department) or []
        made = 0
        for i in range(n):
            if not types:
                return made
            stype = types[(self.actions + i) % len(types)]
            await self.api.call("POST", "/v1/tickets", {
                "service_type": stype, "address": f"{200 + i} W Temple St, Los Angeles", "lat": 34.0537,
                "lon": -118.2427, "description": "Simulated 311 request", "crew": crew,
            }, retry=False)
            made += 1
        return made


async def discover_service_types(api: StaffApi, known: set[str]) -> list[str]:
    """A department's service types: the ones its tickets use, else probe the catalog (no list endpoint exists).

    Probing creates one unassigned ticket per accepted type; that is real, harmless work for the run.
    """
    if known:
        return sorted(known)
    found = []
    for stype in [*PROFILES, "Other"]:
        try:
            await api.call("POST", "/v1/tickets", {"service_type": stype, "address": "1 Probe Way, Los Angeles",
                                                   "description": "Simulator probe"}, retry=False)
            found.append(stype)
        except SimHttpError:
            continue
    return found


async def gather_bounded(coros: list[Any], limit: int) -> list[Any]:
    """Run coroutines with at most `limit` in flight (the server is shared with the devices)."""
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))

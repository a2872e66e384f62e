"""Per-process leases of the shared rate-limit budgets, so that counting a request is almost never a database write.

The budgets (api/limits.py) live in PostgreSQL so that every process and host shares them; counting each request there
cost two upserts per request (address and device). Instead a process takes a slice of a key's budget for the current
window with one upsert (hits += slice) and lets the requests it covers through from memory. Nothing is ever let through
beyond the budget: a slice is granted only out of what the window had left. The price is the other way: budget that
one process leased and did not use by the window's end is not lent to another, so with N processes a client can be
refused up to (N-1) slices early, never late. A spent window is also remembered, so a flood is refused without a query.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

SLICE_FRACTION = 10  # a process leases a tenth of a budget at a time (one upsert per 60 device requests by default)
MAX_KEYS = 50_000  # leases kept per process; past it the ended ones go, then all (costs only upserts, never budget)


def slice_size(limit: int) -> int:
    """Requests one lease covers: small budgets (tests, strict deployments) are counted one by one, exactly."""
    return max(1, limit // SLICE_FRACTION)


@dataclass(slots=True)
class _Lease:
    left: int  # requests this process may still let through in the window
    ends: float  # loop-clock time the window ends
    spent: bool  # the window's whole budget is gone (every process's): refuse until `ends`


class Budgets:
    """This process's leases, keyed like the database counters ("device:<id>", "address:<ip>")."""

    def __init__(self) -> None:
        self._leases: dict[str, _Lease] = {}

    def take(self, key: str, now: float) -> float | None:
        """Let one request through from a lease: 0.0 when covered, seconds until the window ends when the window is
        spent (refuse), None when the database must be asked."""
        lease = self._leases.get(key)
        if lease is None or lease.ends <= now:
            return None
        if lease.spent:
            return lease.ends - now
        if lease.left <= 0:
            return None
        lease.left -= 1
        return 0.0

    def record(self, key: str, granted: int, left_s: float, now: float) -> None:
        """What the database granted for the window ending in `left_s`; the asking request has used one of `granted`
        (none granted: the window is spent)."""
        if len(self._leases) >= MAX_KEYS and key not in self._leases:
            self._leases = {k: v for k, v in self._leases.items() if v.ends > now}
            if len(self._leases) >= MAX_KEYS:
                self._leases.clear()
        self._leases[key] = _Lease(left=max(0, granted - 1), ends=now + left_s, spent=granted <= 0)


def granted(hits_after: int, asked: int, limit: int) -> int:
    """How much of a lease of `asked` the window had left: the counter read `hits_after` once it was added."""
    return max(0, min(asked, limit - (hits_after - asked)))


BUDGETS = web.AppKey("rate_budgets", Budgets)

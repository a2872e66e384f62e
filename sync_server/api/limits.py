"""Abuse limits: per-address (before authentication) and per-device request rates, counted in PostgreSQL so every
server process and host shares one budget (each process leases slices of it: api/budget.py); over the limit answers
429 rate_limited with Retry-After."""

from __future__ import annotations

import functools
import ipaddress
import math
import time

from aiohttp import web

from protocol import ErrorCode, ProtocolError
from sync_server.api.budget import BUDGETS, granted, slice_size
from sync_server.keys import POOL
from sync_server.metrics import METRICS
from sync_server.settings import Settings
from sync_server.storage.credentials import hit

WINDOW_S = 60
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})  # probes from orchestrators and balancers: no address budget
AUTH_FAILURES = (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_REVOKED)


def client_address(request: web.Request, settings: Settings) -> str | None:
    """The caller's address: the peer, or behind a trusted proxy the last X-Forwarded-For hop (the one it added)."""
    if settings.rate_limit_trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip() or None
    return request.remote


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest of this check, on every request
def _is_loopback(address: str) -> bool:
    """Whether a peer address is a loopback one (an unparsable one is not)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _exempt(address: str | None, settings: Settings) -> bool:
    """Loopback callers are not limited unless configured (tests, local tools)."""
    if address is None:
        return True
    return _is_loopback(address) and not settings.rate_limit_loopback


def limited_address(request: web.Request, settings: Settings) -> str | None:
    """The caller's address when its requests count against a budget; None when no limit is configured or the caller
    is exempt (loopback unless rate_limit_loopback)."""
    if not (settings.rate_limit_address_per_minute or settings.rate_limit_device_per_minute):
        return None
    address = client_address(request, settings)
    return None if _exempt(address, settings) else address


async def check(request: web.Request, scope: str, key: str, limit: int) -> None:
    """Count this request against one budget, refusing it once the window's budget is spent: scope "address" before
    authentication (bounds token guessing and floods from one address), "device" after it (one device's budget,
    whichever process or host it reaches); called by api/middleware.pipeline. Counted from this process's lease of the
    budget (api/budget.py) when it has one: one upsert per slice of requests, not one per request."""
    budgets, name, now = request.app[BUDGETS], f"{scope}:{key}", time.monotonic()
    left: float | None = budgets.take(name, now)
    if left is None:
        size = slice_size(limit)
        async with request.app[POOL].acquire() as conn:
            hits, left = await hit(conn, name, WINDOW_S, size)
        got = granted(hits, size, limit)
        budgets.record(name, got, left, now)
        if got:
            return
    elif not left:
        return
    request.app[METRICS].rate_limited.labels(scope=scope).inc()
    raise ProtocolError(ErrorCode.RATE_LIMITED, f"more than {limit} requests per minute from this {scope}",
                        {"retry_after": max(1, math.ceil(left)), "limit": limit})

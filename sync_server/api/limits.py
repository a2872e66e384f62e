"""Abuse limits: per-address (before authentication) and per-device request rates, counted in PostgreSQL so every
server process and host shares one budget (each process leases slices of it: api/budget.py); over the limit answers
429 rate_limited with Retry-After."""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from protocol import ErrorCode, ProtocolError
from sync_server.api.budget import BUDGETS, granted, slice_size
from sync_server.keys import POOL, PRINCIPAL, SETTINGS
from sync_server.metrics import METRICS
from sync_server.settings import Settings
from sync_server.storage.credentials import hit

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WINDOW_S = 60
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})  # probes from orchestrators and balancers
AUTH_FAILURES = (ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_REVOKED)


def client_address(request: web.Request, settings: Settings) -> str | None:
    """The caller's address: the peer, or behind a trusted proxy the last X-Forwarded-For hop (the one it added)."""
    if settings.rate_limit_trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip() or None
    return request.remote


@functools.lru_cache(maxsize=4096)  # parsing an address costs more than the rest of this check, twice per request
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


async def _check(request: web.Request, scope: str, key: str, limit: int) -> None:
    """Count this request; refuse it once the window's budget is spent. Counted from this process's lease of the
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


@web.middleware
async def by_address(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before authentication: bounds token guessing and floods from one address; also counts failed logins."""
    settings = request.app[SETTINGS]
    if settings.rate_limit_address_per_minute and request.path not in EXEMPT_PATHS:
        address = client_address(request, settings)
        if not _exempt(address, settings):
            await _check(request, "address", str(address), settings.rate_limit_address_per_minute)
    try:
        return await handler(request)
    except ProtocolError as err:
        if err.code in AUTH_FAILURES and PRINCIPAL not in request:
            request.app[METRICS].auth_failures.labels(code=err.code.value).inc()
        raise


@web.middleware
async def by_device(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: one device's budget, whichever process or host it reaches."""
    settings = request.app[SETTINGS]
    who = request.get(PRINCIPAL)
    if who is not None and who.device_id is not None and settings.rate_limit_device_per_minute:
        if not _exempt(client_address(request, settings), settings):
            await _check(request, "device", who.device_id, settings.rate_limit_device_per_minute)
    return await handler(request)

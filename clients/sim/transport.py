"""HTTP as a phone sees it: one keep-alive pool, typed errors from the protocol envelope, injected faults, retries.

Requests go through the lean HTTP/1.1 client (http1.py), not aiohttp: the simulator shares the machine's cores with
the server it loads, and aiohttp's per-request CPU made a 1,000-device fleet measure the load generator. Header
bytes are built once per (token, body or not); a request is one write. WebSockets stay on aiohttp (fleet.py).

Faults are injected here, client-side and on loopback only: a "dropped request" is never sent, a "dropped
response" is sent, committed by the server, and then thrown away, exactly like a phone losing signal while
the server answers. The retry policy is the protocol's: only error codes whose `retryable` flag is set (and
transport failures) are retried, with capped exponential backoff, full jitter and `Retry-After`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from protocol import MSGPACK, PROTOCOL_VERSION, VERSION_HEADER, DecodeError, ErrorCode, ErrorEnvelope, decode

from . import http1
from .metrics import Metrics

T = TypeVar("T")
UNKNOWN_CODE_RETRIES = 3  # SPEC §4: an unknown error code is retried like internal_error, but only a few times


class Dropped(Exception):
    """An injected fault: the request never left, or its response was lost after the server answered."""

    def __init__(self, kind: str, status: int | None = None) -> None:
        super().__init__(kind)
        self.kind, self.status = kind, status


class Offline(Exception):
    """The device has no signal; requests wait for it instead of failing."""


class SimHttpError(Exception):
    """A non-2xx answer, classified by the protocol's error code (None when the body was not an envelope)."""

    def __init__(self, status: int, code: ErrorCode | None, message: str, details: dict[str, Any],
                 retry_after: float | None) -> None:
        super().__init__(f"{status} {code.value if code else '?'}: {message}")
        self.status, self.code, self.message, self.details, self.retry_after = status, code, message, details, retry_after

    @property
    def retryable(self) -> bool:
        """The protocol table decides; a body we cannot read is treated as a transient server failure."""
        if self.code is not None:
            return self.code.retryable
        return self.status >= 500 or self.status == 429


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Transport:
    """Every request of every simulated device goes through here, so bytes and latencies are counted once."""

    def __init__(self, http: http1.Client, base_url: str, metrics: Metrics, media: str = MSGPACK) -> None:
        self.http, self.base, self.metrics, self.media = http, base_url.rstrip("/"), metrics, media
        self._blocks: dict[tuple[str, bool], bytes] = {}  # (token, has body) -> pre-built header lines

    def headers(self, token: str, body: bool = True) -> dict[str, str]:
        """Auth and protocol version on every request; msgpack both ways for sync bodies."""
        h = {"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION), "Accept": self.media}
        if body:
            h["Content-Type"] = self.media
        return h

    async def request(self, method: str, path: str, *, token: str, kind: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None, fault: str | None = None,
                      ok: tuple[int, ...] = (200, 201, 204)) -> tuple[int, Any, bytes]:
        """Send one request; returns (status, headers, body) or raises SimHttpError / Dropped / http1.TransportError."""
        if fault == "drop_request":
            self.metrics.faults["drop_request"] += 1
            raise Dropped(fault)
        if headers:  # extra headers may replace the defaults (an upload's Content-Type): build this one's lines
            h = self.headers(token, body is not None)
            h.update(headers)
            block = http1.header_block(h)
        else:
            key = (token, body is not None)
            block = self._blocks.get(key) or self._blocks.setdefault(key, http1.header_block(self.headers(*key)))
        t0 = time.perf_counter()
        resp = await self.http.request(method, path, body=body, headers=block)
        status, rh, data = resp.status, resp.headers, resp.body
        self.metrics.sample(kind, (time.perf_counter() - t0) * 1000.0)
        self.metrics.bytes_up += len(body or b"")
        self.metrics.bytes_down += len(data)
        if fault == "drop_response":
            self.metrics.faults["drop_response"] += 1
            raise Dropped(fault, status)
        if status not in ok:
            raise self.error(status, rh, data)
        return status, rh, data

    def error(self, status: int, headers: Any, data: bytes) -> SimHttpError:
        """Decode the error envelope with the protocol codec; anything else keeps only the status."""
        ctype = headers.get("Content-Type") if headers is not None else None
        try:
            env = decode(data, ctype, ErrorEnvelope)
            err = env.error
            return SimHttpError(status, err.code, err.message, dict(err.details), _retry_after(headers))
        except DecodeError:
            return SimHttpError(status, None, data[:200].decode("utf-8", "replace"), {}, _retry_after(headers))


def backoff_delay(attempt: int, rng: random.Random, base: float = 0.1, cap: float = 5.0,
                  retry_after: float | None = None) -> float:
    """Capped exponential backoff with full jitter (so a fleet does not retry in lockstep), never below Retry-After."""
    delay = rng.uniform(0.0, min(cap, base * (2 ** attempt)))
    return max(delay, retry_after or 0.0)


RETRYABLE_TRANSPORT = (http1.TransportError, aiohttp.ClientError, asyncio.TimeoutError, Dropped, ConnectionError)


async def with_retries(call: Callable[[], Awaitable[T]], rng: random.Random, metrics: Metrics, *,
                       wait_online: Callable[[], Awaitable[None]] | None = None, max_attempts: int = 60,
                       label: str = "request") -> T:
    """Retry transient failures only; a permanent protocol error propagates at once (the caller must change something)."""
    unknown = 0
    attempt = 0
    while True:
        if wait_online is not None:
            await wait_online()
        try:
            return await call()
        except SimHttpError as exc:
            if not exc.retryable:
                raise
            if exc.code is None:
                unknown += 1
                if unknown > UNKNOWN_CODE_RETRIES:
                    raise
            metrics.errors[f"{label}:{exc.code.value if exc.code else exc.status}"] += 1
            retry_after = exc.retry_after
        except RETRYABLE_TRANSPORT as exc:
            if not isinstance(exc, Dropped):
                metrics.errors[f"{label}:{type(exc).__name__}"] += 1
            retry_after = None
        attempt += 1
        metrics.counters["retries"] += 1
        if attempt >= max_attempts:
            raise RuntimeError(f"{label}: gave up after {attempt} attempts")
        await asyncio.sleep(backoff_delay(min(attempt, 8), rng, retry_after=retry_after))

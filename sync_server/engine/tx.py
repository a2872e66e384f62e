"""Retry-safe transaction runner: serialization failures and deadlocks are retried a bounded number of times."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog

from protocol import ErrorCode, ProtocolError

log = structlog.get_logger(__name__)
T = TypeVar("T")

RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
MAX_ATTEMPTS = 5


async def run_in_tx(
    pool: asyncpg.Pool,
    body: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    isolation: str = "read_committed",
    readonly: bool = False,
    after_commit: Callable[[asyncpg.Connection, T], Awaitable[None]] | None = None,
    retry_if: Callable[[asyncpg.PostgresError], bool] | None = None,
) -> T:
    """Run `body` in one transaction; the body must be safe to run again from scratch (STYLE rule 8).

    `after_commit` runs on the same connection once the commit succeeded (e.g. a live-feed wake-up that must not be
    part of the transaction); its database errors are logged, never raised: the transaction's outcome is settled.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction(isolation=isolation, readonly=readonly):
                        result = await body(conn)
                    if after_commit is not None:
                        try:
                            await after_commit(conn, result)
                        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                            log.warning("tx.after_commit_failed", error=type(exc).__name__, detail=str(exc)[:200])
                    return result
                except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                    if not conn.is_closed():
                        raise
                    # The connection died under the transaction (primary crashed, failover): asyncpg reports it as a
                    # protocol-state or "connection is closed" error. Outcome unknown: the client retries the same
                    # request, which exactly-once makes safe, so answer it as the connection loss it is.
                    raise asyncpg.ConnectionDoesNotExistError("connection lost during the transaction") from exc
        except asyncpg.PostgresError as exc:
            if not isinstance(exc, RETRYABLE) and not (retry_if is not None and retry_if(exc)):
                raise
            if attempt == MAX_ATTEMPTS:
                raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "write contention, retry", {"retry_after": 1}) from exc
            delay = min(0.5, 0.01 * 2**attempt) * (0.5 + random.random())
            log.info("tx.retry", attempt=attempt, error=type(exc).__name__, delay_ms=round(delay * 1000, 1))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")

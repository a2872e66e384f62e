"""Write leases on upload sessions that die with their process: PostgreSQL session advisory locks on one connection.

A PATCH streams into a partial file for as long as its body takes, so the lease cannot live in a pool transaction.
A lease that lives in a table row (token + expiry) outlives a SIGKILLed server, and every retry is refused until
it expires. Instead each server process keeps one dedicated connection and takes a session-level advisory lock
per upload it is writing: when the process dies its connection closes and PostgreSQL drops every lock it held, so
a retry on a restarted (or any other) server resumes at once, while two live writers still exclude each other.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
import structlog

from protocol import ErrorCode, ProtocolError

log = structlog.get_logger(__name__)

# Single-bigint advisory keys (objsubid 1 in pg_locks) never collide with the two-int4 keys (photo and device
# locks, objsubid 2); the key is the first 64 bits of md5(upload id), so meeting one of the few fixed bigint keys
# (migrations, import, seed) is a 2^-64 chance. Upload ids are random tokens.
_KEY_SQL = "('x' || substr(md5($1), 1, 16))::bit(64)::bigint"
_TRY_SQL = f"SELECT pg_try_advisory_lock({_KEY_SQL})"
_UNLOCK_SQL = f"SELECT pg_advisory_unlock({_KEY_SQL})"
_CONNECT_TIMEOUT = 10.0
# A host that vanishes without closing its socket is noticed by TCP keepalive, after which PostgreSQL drops its
# locks; the row's lease_until bounds the wait for the sweep in any case.
_KEEPALIVE = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


class LeaseHolder:
    """The one connection of this process that holds its upload write leases; statements on it are serialised."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._held: set[str] = set()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            if self._held:
                # The connection died (database restart): every lease it held is gone with it. Writers notice at
                # their next renewal (their row token no longer matches once another request claims the upload).
                log.warning("upload.leases_lost", count=len(self._held))
                self._held.clear()
            self._conn = await asyncpg.connect(
                self._dsn, timeout=_CONNECT_TIMEOUT,
                server_settings={"application_name": f"fieldsync-upload-leases:{os.getpid()}", **_KEEPALIVE},
            )
        return self._conn

    async def acquire(self, upload_id: str) -> bool:
        """Take the write lease of one upload; False while another live request (in any process) holds it."""
        async with self._lock:
            if upload_id in self._held:  # session advisory locks are re-entrant: the check for this process is ours
                return False
            try:
                conn = await self._connection()
                got = bool(await conn.fetchval(_TRY_SQL, upload_id))
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, "database unavailable, retry",
                                    {"retry_after": 2}) from exc
            if got:
                self._held.add(upload_id)
            return got

    async def release(self, upload_id: str) -> None:
        """Give the lease back; a lost connection already released it, so failures here are harmless."""
        async with self._lock:
            if upload_id not in self._held:
                return
            self._held.discard(upload_id)
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.fetchval(_UNLOCK_SQL, upload_id)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                log.info("upload.lease_release_failed", upload=upload_id)

    def holds(self, upload_id: str) -> bool:
        """Whether this process still holds the lease (False after its connection was lost)."""
        return upload_id in self._held and self._conn is not None and not self._conn.is_closed()

    async def close(self) -> None:
        """Closing the connection releases every lease at once."""
        async with self._lock:
            self._held.clear()
            if self._conn is not None and not self._conn.is_closed():
                await self._conn.close(timeout=5)
            self._conn = None

"""Bearer-token principals: devices bound to one crew, supervisors to one department, admins to all."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
import structlog

from protocol import ErrorCode, ProtocolError

log = structlog.get_logger(__name__)
DEVICE_PREFIX = "fsd_"
USER_PREFIX = "fsu_"
# Triggers on devices and crews (migration 0015) NOTIFY here with a device id ("*": every device) whenever a cached
# device principal may have changed: revoked, rotated, deleted, moved to another crew or department.
AUTH_CHANNEL = "fieldsync_auth"


class Role(StrEnum):
    """The three kinds of caller; every endpoint names the roles it admits."""

    DEVICE = "device"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling, resolved once per request from the token."""

    role: Role
    name: str
    department_id: int | None = None
    crew_id: int | None = None
    device_id: str | None = None
    user_id: int | None = None
    superseded: bool = False  # authenticated by a rotated-away token, valid only until its grace window ends

    @property
    def actor_kind(self) -> str:
        """Audit actor kind."""
        return self.role.value


def new_token(prefix: str) -> str:
    """256 bits from the OS CSPRNG; the prefix routes lookup to the right table without a second query."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """Only the SHA-256 is stored: a database leak must not hand out working tokens (high-entropy, so no KDF needed)."""
    return hashlib.sha256(token.encode()).digest()


def new_device_id() -> str:
    """Short public id a crew lead can read off a phone's settings screen."""
    return "dev-" + secrets.token_hex(6)


_DEVICE_LOGIN = (
    "SELECT d.id, d.revoked_at, d.crew_id, c.department_id, d.token_hash <> $1 AS superseded"
    " FROM devices d JOIN crews c ON c.id = d.crew_id"
    # the previous token stays valid for the grace window after a rotation (a lost answer never locks out)
    " WHERE d.token_hash = $1 OR (d.prev_token_hash = $1 AND d.prev_token_expires_at > now())"
)


async def warm(conn: asyncpg.Connection) -> None:
    """Plan the device login on a new pool connection (matching nothing): after a start every device's first request
    logs in, and each backend's first planning of it (~0.5 ms of PostgreSQL CPU with its catalogue loads) landed
    inside that burst."""
    try:
        await conn.fetchrow(_DEVICE_LOGIN, b"")
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        pass  # a schema behind this build: the start-up check (migrate.check_schema) says so


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None. The scheme name is case-insensitive
    (RFC 9110 §11.1): generated clients and proxies that send `bearer` were refused as if they sent no token."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


async def authenticate(conn: asyncpg.Connection, header: str | None) -> Principal:
    """Resolve an Authorization header to a principal; every failure is the same 401 family, never a hint."""
    token = bearer_token(header)
    if not token:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing bearer token")
    # tokens are ASCII; a header byte above 0x7f arrives as a lone surrogate that cannot even be hashed (was a 500)
    if len(token) > 200 or not token.isascii():
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")
    digest = hash_token(token)
    if token.startswith(DEVICE_PREFIX):
        row = await conn.fetchrow(_DEVICE_LOGIN, digest)
        if row is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")
        if row["revoked_at"] is not None:  # logged, not audited: a stale phone retrying must not grow the audit log
            log.warning("auth.token_revoked", device_id=row["id"])
            raise ProtocolError(ErrorCode.TOKEN_REVOKED, "this device has been revoked; re-enroll it")
        return Principal(Role.DEVICE, row["id"], department_id=row["department_id"], crew_id=row["crew_id"], device_id=row["id"],
                         superseded=row["superseded"])
    if token.startswith(USER_PREFIX):
        row = await conn.fetchrow(
            "SELECT id, name, role, department_id, revoked_at FROM users WHERE token_hash = $1", digest
        )
        if row is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")
        if row["revoked_at"] is not None:
            log.warning("auth.token_revoked", user=row["name"])
            raise ProtocolError(ErrorCode.TOKEN_REVOKED, "this token has been revoked")
        return Principal(Role(row["role"]), row["name"], department_id=row["department_id"], user_id=row["id"])
    raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")


@dataclass(frozen=True)
class _Cached:
    principal: Principal
    at: float
    epoch: int | None  # the LISTEN session that vouches for it; None: only the short TTL applies


class AuthCache:
    """Device principals of the sync hot path, so a push or poll does not pay a query for its token.

    While this process LISTENs on AUTH_CHANNEL (the live hub's connection reports it), a change to a device's
    credentials removes its entry within milliseconds, so entries live `notified_ttl_s`. Without that connection
    (not yet up, lost, or no hub) every entry is judged by `ttl_s` (1 s): a revoke elsewhere is then refused within
    it, and an entry cached while listening is not served a moment past 1 s once the connection is gone. A revoke
    through this process clears the cache at once; and a push re-checks revocation under its device-row lock
    (engine/push), so a revoked device never gets a write in."""

    def __init__(self, ttl_s: float = 1.0, notified_ttl_s: float = 60.0, max_entries: int = 50_000) -> None:
        self.ttl_s, self.notified_ttl_s, self.max_entries = ttl_s, notified_ttl_s, max_entries
        self._by_digest: dict[bytes, _Cached] = {}
        self.listening = False
        self._epoch = 0  # one per LISTEN session (and per loss of one)
        self._gen = 0  # moves on every invalidation and every epoch change

    def mark(self) -> int:
        """Taken before the database read: a `put` with an older mark than the current one raced an invalidation."""
        return self._gen

    def get(self, header: str | None, now: float) -> Principal | None:
        """The cached principal of a device bearer token, or None (not cached, expired, or not a device token)."""
        token = _device_token(header)
        if token is None:
            return None
        hit = self._by_digest.get(hash_token(token))
        if hit is None:
            return None
        vouched = self.listening and hit.epoch == self._epoch
        if now >= hit.at + (self.notified_ttl_s if vouched else self.ttl_s):
            return None
        return hit.principal

    def put(self, header: str | None, who: Principal, now: float, mark: int | None = None) -> None:
        """Remember a device principal read from the database just now (`mark` from before that read)."""
        token = _device_token(header)
        if token is None or who.role is not Role.DEVICE:
            return
        if len(self._by_digest) >= self.max_entries:
            self._by_digest.clear()
        # Long-lived only if no notification can have been missed between the read and now, and the token is not
        # a superseded one whose grace window ends without any notification.
        vouched = self.listening and mark == self._gen and not who.superseded
        self._by_digest[hash_token(token)] = _Cached(who, now, self._epoch if vouched else None)

    def invalidate(self, device_id: str) -> None:
        """A NOTIFY said this device's credentials changed ("*": any device's)."""
        self._gen += 1
        if device_id == "*":
            self._by_digest.clear()
            return
        for digest in [d for d, c in self._by_digest.items() if c.principal.device_id == device_id]:
            del self._by_digest[digest]

    def set_listening(self, on: bool) -> None:
        """The LISTEN connection came up (notifications flow from now on) or went away (they may be missed)."""
        self.listening = on
        self._epoch += 1
        self._gen += 1
        if on:  # whatever was cached while deaf may have missed a notification
            self._by_digest.clear()

    def clear(self) -> None:
        """Forget everything (a device was revoked through this process)."""
        self._gen += 1
        self._by_digest.clear()


def _device_token(header: str | None) -> str | None:
    """The token of a well-formed device bearer header, else None (those always go to the database)."""
    token = bearer_token(header)
    return token if token is not None and token.startswith(DEVICE_PREFIX) and len(token) <= 200 else None


class TouchMemo:
    """Device contacts not yet written: a request only notes its device here, and touch_loop writes the noted ones
    in one UPDATE a second, so no sync request waits for a write (or its WAL flush) to say "seen". Each device is
    noted at most once a minute (the column's resolution), and the memo stays bounded: forgetting an entry only
    costs one more (no-op) UPDATE."""

    def __init__(self, interval_s: float = 60.0, max_entries: int = 100_000) -> None:
        self.interval_s, self.max_entries = interval_s, max_entries
        self._at: dict[str, float] = {}
        self._pending: set[str] = set()

    def due(self, device_id: str, now: float) -> bool:
        """True when the device's contact should be written now (and remembers that it will be)."""
        last = self._at.get(device_id)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._at) >= self.max_entries:
            self._at.clear()
        self._at[device_id] = now
        return True

    def seen(self, device_id: str, now: float) -> None:
        """A request from this device: queue its contact for the next write when one is due."""
        if self.due(device_id, now) and len(self._pending) < self.max_entries:
            self._pending.add(device_id)

    def take(self) -> list[str]:
        """The devices to write now (sorted: concurrent writers lock rows in one order); the queue empties."""
        out, self._pending = sorted(self._pending), set()
        return out


_TOUCH_SQL = ("UPDATE devices SET last_seen_at = now() WHERE id = ANY($1::text[])"
              " AND (last_seen_at IS NULL OR last_seen_at < now() - interval '60 seconds')")


async def flush_touches(pool: asyncpg.Pool, memo: TouchMemo) -> int:
    """Write the queued contacts in one statement; how many devices were queued."""
    ids = memo.take()
    if ids:
        async with pool.acquire() as conn:
            await conn.execute(_TOUCH_SQL, ids)
    return len(ids)


async def touch_loop(pool: asyncpg.Pool, memo: TouchMemo, interval_s: float = 1.0) -> None:
    """Every `interval_s`, write the contacts requests queued (cancelled at shutdown, after which the caller flushes
    once more). A failed write is logged; its devices are written again after their next request a minute on."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await flush_touches(pool, memo)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("auth.touch_failed", error=type(exc).__name__)


async def enroll_device(conn: asyncpg.Connection, crew_id: int, label: str | None, enrolled_by: str) -> tuple[str, str]:
    """Create a device for a crew and return (device_id, token); the token is shown once and never stored."""
    token = new_token(DEVICE_PREFIX)
    device_id = new_device_id()
    await conn.execute(
        "INSERT INTO devices (id, crew_id, label, token_hash, enrolled_by) VALUES ($1, $2, $3, $4, $5)",
        device_id, crew_id, label, hash_token(token), enrolled_by,
    )
    return device_id, token


async def create_user(conn: asyncpg.Connection, name: str, role: Role, department_id: int | None) -> str:
    """Create a supervisor or admin and return its token (shown once)."""
    token = new_token(USER_PREFIX)
    await conn.execute(
        "INSERT INTO users (name, role, department_id, token_hash) VALUES ($1, $2, $3, $4)",
        name, role.value, department_id, hash_token(token),
    )
    return token

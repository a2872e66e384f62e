"""Bearer-token principals: devices bound to one crew, supervisors to one department, admins to all."""

from __future__ import annotations

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


async def authenticate(conn: asyncpg.Connection, header: str | None) -> Principal:
    """Resolve an Authorization header to a principal; every failure is the same 401 family, never a hint."""
    if not header or not header.startswith("Bearer "):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing bearer token")
    token = header[len("Bearer "):].strip()
    if len(token) > 200:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")
    digest = hash_token(token)
    if token.startswith(DEVICE_PREFIX):
        row = await conn.fetchrow(
            "SELECT d.id, d.revoked_at, d.crew_id, c.department_id FROM devices d JOIN crews c ON c.id = d.crew_id"
            # the previous token stays valid for the grace window after a rotation (a lost answer never locks out)
            " WHERE d.token_hash = $1 OR (d.prev_token_hash = $1 AND d.prev_token_expires_at > now())",
            digest,
        )
        if row is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")
        if row["revoked_at"] is not None:  # logged, not audited: a stale phone retrying must not grow the audit log
            log.warning("auth.token_revoked", device_id=row["id"])
            raise ProtocolError(ErrorCode.TOKEN_REVOKED, "this device has been revoked; re-enroll it")
        return Principal(Role.DEVICE, row["id"], department_id=row["department_id"], crew_id=row["crew_id"], device_id=row["id"])
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


class AuthCache:
    """Device principals of the sync hot path, kept for at most `ttl_s` (default 1 s) so a push or poll does not pay a
    query for its token. Staleness is bounded by the TTL: a device revoked by another process (or the CLI) is refused
    by this one within `ttl_s`; a revoke through this process clears the cache at once; and a push re-checks
    revocation under its device-row lock anyway (engine/push), so a revoked device never gets a write in."""

    def __init__(self, ttl_s: float = 1.0, max_entries: int = 50_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._by_digest: dict[bytes, tuple[Principal, float]] = {}

    def get(self, header: str | None, now: float) -> Principal | None:
        """The cached principal of a device bearer token, or None (not cached, expired, or not a device token)."""
        token = _device_token(header)
        if token is None:
            return None
        hit = self._by_digest.get(hash_token(token))
        if hit is None or now >= hit[1]:
            return None
        return hit[0]

    def put(self, header: str | None, who: Principal, now: float) -> None:
        """Remember a device principal that authenticated just now."""
        token = _device_token(header)
        if token is None or who.role is not Role.DEVICE:
            return
        if len(self._by_digest) >= self.max_entries:
            self._by_digest.clear()
        self._by_digest[hash_token(token)] = (who, now + self.ttl_s)

    def clear(self) -> None:
        """Forget everything (a device was revoked through this process)."""
        self._by_digest.clear()


def _device_token(header: str | None) -> str | None:
    """The token of a well-formed device bearer header, else None (those always go to the database)."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer "):].strip()
    return token if token.startswith(DEVICE_PREFIX) and len(token) <= 200 else None


class TouchMemo:
    """When this process last recorded each device's contact: touch_device writes at most once a minute anyway, so
    asking PostgreSQL again within that minute is a wasted round trip on every sync request. Bounded: forgetting an
    entry only costs one more (no-op) UPDATE."""

    def __init__(self, interval_s: float = 60.0, max_entries: int = 100_000) -> None:
        self.interval_s, self.max_entries = interval_s, max_entries
        self._at: dict[str, float] = {}

    def due(self, device_id: str, now: float) -> bool:
        """True when the device's contact should be written now (and remembers that it will be)."""
        last = self._at.get(device_id)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._at) >= self.max_entries:
            self._at.clear()
        self._at[device_id] = now
        return True


async def touch_device(conn: asyncpg.Connection, device_id: str) -> None:
    """Record last contact at most once a minute, so auth does not turn every read into a write."""
    await conn.execute(
        "UPDATE devices SET last_seen_at = now() WHERE id = $1"
        " AND (last_seen_at IS NULL OR last_seen_at < now() - interval '60 seconds')",
        device_id,
    )


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

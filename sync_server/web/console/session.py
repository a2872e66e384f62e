"""Console sessions: sign-in with a password, an opaque cookie (stored hashed), idle and absolute expiry, CSRF tokens
and a throttle that slows repeated failures per account and per address."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog
from aiohttp import web

from protocol import ErrorCode, ProtocolError
from sync_server.auth import Principal, Role, hash_token
from sync_server.passwords import verify_password
from sync_server.settings import Settings
from sync_server.storage import staff
from sync_server.storage.tickets import audit

log = structlog.get_logger(__name__)

COOKIE = "fs_console"
SECURE_COOKIE = "__Host-fs_console"  # behind https: the __Host- prefix also pins the cookie to this host and path /
LOGIN_CSRF_COOKIE = "fs_login_csrf"
FREE_FAILURES = 3  # failures allowed before each further attempt must wait
MAX_WAIT_S = 300


@dataclass(frozen=True)
class ConsoleSession:
    """The signed-in staff member behind a request."""

    id_hash: bytes
    principal: Principal
    csrf: str
    department: str | None


def is_https(request: web.Request, settings: Settings) -> bool:
    """Secure cookies behind https: directly, behind a proxy that says so, or when the public URL is https."""
    return (request.scheme == "https" or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
            or (settings.public_url or "").startswith("https://"))


def cookie_name(request: web.Request, settings: Settings) -> str:
    """The session cookie's name in this deployment."""
    return SECURE_COOKIE if is_https(request, settings) else COOKIE


def client_address(request: web.Request) -> str:
    """The peer address the per-address throttle counts (the proxy's own address when behind one)."""
    return request.remote or "unknown"


def wait_seconds(failures: int, since_last: float, base: float = 2.0) -> int:
    """Seconds still to wait before the next attempt: free for the first few failures, then doubling from `base`, capped."""
    if failures < FREE_FAILURES:
        return 0
    required = min(base * 2 ** (failures - FREE_FAILURES), MAX_WAIT_S)
    return max(0, int(required - since_last + 0.999))


async def sign_in(pool: asyncpg.Pool, settings: Settings, name: str, password: str, address: str) -> tuple[str, ConsoleSession]:
    """Check the password (throttled) and open a session; returns the cookie value (shown to the browser only) and the session."""
    keys = [f"user:{name.lower()[:200]}", f"addr:{address}"]
    async with pool.acquire() as conn:
        for row in await staff.failures(conn, keys):
            wait = wait_seconds(row["failures"], (row["now"] - row["last_failure"]).total_seconds(),
                                settings.login_backoff_s)
            if wait > 0:
                log.warning("console.sign_in_throttled", key=row["key"].split(":")[0], wait=wait)
                await _audit_sign_in(conn, name, None, "sign_in_refused", address, "throttled")
                raise ProtocolError(ErrorCode.RATE_LIMITED,
                                    f"Too many failed sign-ins. Wait {wait} seconds, then try again.", {"retry_after": wait})
        user = await staff.account(conn, name)
    ok = await verify_password(user["password_hash"] if user is not None else None, password)
    async with pool.acquire() as conn:
        if not ok or user is None or user["revoked_at"] is not None or user["role"] not in (Role.SUPERVISOR, Role.ADMIN):
            await staff.record_failure(conn, keys)
            why = "unknown_account" if user is None else "disabled" if user["revoked_at"] is not None else "wrong_password"
            await _audit_sign_in(conn, name, user, "sign_in_failed", address, why)
            log.info("console.sign_in_failed")
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "Wrong username or password.")
        if user["role"] != Role.SUPERVISOR:
            await _audit_sign_in(conn, name, user, "sign_in_refused", address, "not_a_supervisor")
            raise ProtocolError(ErrorCode.FORBIDDEN,
                                "The console is for department supervisors; admins use the admin API and CLI.")
        await staff.clear_failures(conn, keys[0])
        await staff.prune_sessions(conn, timedelta(minutes=settings.session_idle_minutes))
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        id_hash = hash_token(cookie)
        await staff.create_session(conn, id_hash, user["id"], csrf, timedelta(hours=settings.session_max_hours), address)
        dept = await conn.fetchval("SELECT name FROM departments WHERE id = $1", user["department_id"])
        await _audit_sign_in(conn, name, user, "sign_in", address, None)
    log.info("console.signed_in", user=user["name"])
    who = Principal(Role(user["role"]), user["name"], department_id=user["department_id"], user_id=user["id"])
    return cookie, ConsoleSession(id_hash, who, csrf, dept)


async def load(pool: asyncpg.Pool, settings: Settings, cookie: str | None) -> ConsoleSession | None:
    """The session a cookie names, if it is still valid; refreshes the idle clock at most once a minute."""
    if not cookie or len(cookie) > 100 or not cookie.isascii():  # a byte above 0x7f cannot be hashed (was a 500)
        return None
    id_hash = hash_token(cookie)
    async with pool.acquire() as conn:
        row = await staff.session(conn, id_hash, timedelta(minutes=settings.session_idle_minutes))
        if row is None:
            return None
        if row["stale"]:
            await staff.touch_session(conn, id_hash)
    who = Principal(Role(row["role"]), row["name"], department_id=row["department_id"], user_id=row["user_id"])
    return ConsoleSession(id_hash, who, row["csrf_token"], row["department"])


async def sign_out(pool: asyncpg.Pool, sess: ConsoleSession) -> None:
    """End the session server-side."""
    who = sess.principal
    async with pool.acquire() as conn, conn.transaction():
        await staff.end_session(conn, sess.id_hash)
        await audit(conn, [(who.actor_kind, who.name, "sign_out", None, who.department_id, None, None, None)])


async def _audit_sign_in(conn: asyncpg.Connection, name: str, user: asyncpg.Record | None, action: str, address: str,
                         why: str | None) -> None:
    """Sign-ins, refusals and failures go to the audit log (I9) so city IT can see who tried what from where; the
    attempted name is kept as typed (at most 200 characters), never the password."""
    role = str(user["role"]) if user is not None else Role.SUPERVISOR.value
    dept = user["department_id"] if user is not None else None
    await audit(conn, [(role, name[:200], action, None, dept, None, {"address": address}, why)])


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    return (given is not None and expected.isascii() and given.isascii()  # tokens are ASCII; others cannot match
            and hmac.compare_digest(expected.encode(), given.encode()))


def same_origin(request: web.Request) -> bool:
    """A state-changing request whose Origin names another site is refused even with a valid token."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None  # browsers send Origin on POST; "null" is a sandboxed or privacy-stripped context
    host = request.headers.get("Host", "")
    return origin.split("://", 1)[-1] == host

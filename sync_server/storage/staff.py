"""SQL for console sign-in: staff accounts, browser sessions (stored as hashes) and the failed-sign-in throttle."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

# A counter whose last failure is older than this starts again from zero.
THROTTLE_WINDOW = timedelta(minutes=15)


async def account(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """A staff account by name, with its password hash; revoked accounts are returned so the caller refuses them alike."""
    return await conn.fetchrow(
        "SELECT id, name, role, department_id, password_hash, revoked_at FROM users WHERE name = $1", name)


async def failures(conn: asyncpg.Connection, keys: list[str]) -> list[asyncpg.Record]:
    """Current failure counts of the given throttle keys, ignoring counters that have aged out."""
    return await conn.fetch(
        "SELECT key, failures, last_failure, now() AS now FROM login_throttle"
        " WHERE key = ANY($1::text[]) AND last_failure > now() - $2::interval", keys, THROTTLE_WINDOW)


async def record_failure(conn: asyncpg.Connection, keys: list[str]) -> None:
    """Count one more failure on each key; an aged-out counter restarts at one (one statement, no read-modify-write)."""
    await conn.execute(
        "INSERT INTO login_throttle (key, failures, last_failure) SELECT k, 1, now() FROM unnest($1::text[]) AS k"
        " ON CONFLICT (key) DO UPDATE SET last_failure = now(), failures = CASE"
        " WHEN login_throttle.last_failure > now() - $2::interval THEN login_throttle.failures + 1 ELSE 1 END",
        keys, THROTTLE_WINDOW)


async def clear_failures(conn: asyncpg.Connection, key: str) -> None:
    """A successful sign-in resets its account's counter (not the address's: one good account must not unlock guessing others)."""
    await conn.execute("DELETE FROM login_throttle WHERE key = $1", key)


async def create_session(conn: asyncpg.Connection, id_hash: bytes, user_id: int, csrf: str, max_age: timedelta,
                         address: str | None) -> None:
    """A new session row; the absolute expiry is fixed here and never extended."""
    await conn.execute(
        "INSERT INTO console_sessions (id_hash, user_id, csrf_token, expires_at, address)"
        " VALUES ($1, $2, $3, now() + $4::interval, $5)", id_hash, user_id, csrf, max_age, address)


async def session(conn: asyncpg.Connection, id_hash: bytes, idle: timedelta) -> asyncpg.Record | None:
    """A live session and its user, or None when unknown, idle too long, past its absolute expiry or the user is revoked."""
    return await conn.fetchrow(
        "SELECT s.csrf_token, s.last_seen_at < now() - interval '60 seconds' AS stale, u.id AS user_id, u.name, u.role,"
        " u.department_id, d.name AS department FROM console_sessions s JOIN users u ON u.id = s.user_id"
        " LEFT JOIN departments d ON d.id = u.department_id"
        " WHERE s.id_hash = $1 AND s.expires_at > now() AND s.last_seen_at > now() - $2::interval"
        " AND u.revoked_at IS NULL", id_hash, idle)


async def touch_session(conn: asyncpg.Connection, id_hash: bytes) -> None:
    """Push the idle expiry forward (callers do it at most once a minute, so reads stay reads)."""
    await conn.execute("UPDATE console_sessions SET last_seen_at = now() WHERE id_hash = $1", id_hash)


async def end_session(conn: asyncpg.Connection, id_hash: bytes) -> None:
    """Sign-out: the row goes, so the cookie is worthless even if it was copied."""
    await conn.execute("DELETE FROM console_sessions WHERE id_hash = $1", id_hash)


async def prune_sessions(conn: asyncpg.Connection, idle: timedelta) -> int:
    """Drop expired sessions (called on sign-in, so the table stays the size of the active staff)."""
    status = await conn.execute(
        "DELETE FROM console_sessions WHERE expires_at <= now() OR last_seen_at <= now() - $1::interval", idle)
    return int(status.split()[-1])

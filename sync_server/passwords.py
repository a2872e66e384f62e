"""Staff passwords for the console: argon2id (memory-hard) hashes, hashed off the event loop because each costs ~50 ms."""

from __future__ import annotations

import asyncio

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from protocol import ErrorCode, ProtocolError
from sync_server.storage.tickets import audit

MIN_LENGTH = 10
MAX_LENGTH = 512  # argon2 takes any length; the cap only stops a megabyte "password" from costing CPU on the way in
_HASHER = PasswordHasher()  # immutable parameters object (argon2id, RFC 9106 low-memory profile), not mutable state
# Verified when the account does not exist, so a wrong username costs as much time as a wrong password.
_DUMMY = _HASHER.hash("fieldsync-no-such-account")


def check_policy(password: str) -> None:
    """Refuse passwords a guesser would find quickly; the rule is length, which is what actually helps."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"a password needs {MIN_LENGTH} to {MAX_LENGTH} characters",
                            {"field": "password"})


async def hash_password(password: str) -> str:
    """The stored form; runs in a thread so sign-ins never stall other requests."""
    return await asyncio.get_running_loop().run_in_executor(None, _HASHER.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    """Constant-shape check: an account without a password still spends one verification."""
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True only for the right password of an account that has one."""
    if len(password) > MAX_LENGTH:
        return False
    return await asyncio.get_running_loop().run_in_executor(None, _verify, stored, password)


async def set_password(conn: asyncpg.Connection, name: str, password: str, *, actor: str) -> int:
    """Set a user's password and end their console sessions (a new password locks out an old thief), audited; returns the user id."""
    check_policy(password)
    digest = await hash_password(password)
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE users SET password_hash = $2, password_set_at = now() WHERE name = $1 RETURNING id, department_id",
            name, digest)
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such user {name!r}")
        await conn.execute("DELETE FROM console_sessions WHERE user_id = $1", row["id"])
        await audit(conn, [("admin", actor, "set_password", None, row["department_id"], None, {"user": name}, None)])
    return int(row["id"])

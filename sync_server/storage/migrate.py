"""Numbered plain-SQL migrations applied once each under an advisory lock, so N workers starting together never race."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from sync_server.storage.tickets import backfill_docs

log = structlog.get_logger(__name__)

_LOCK_KEY = 0x46534D49  # 'FSMI': serialises concurrent migrators across processes
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer FieldSync; running old code on it could corrupt data."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Migrations shipped with this build, in order; the last one is the schema version this code expects."""
    out = []
    for entry in resources.files("sync_server.storage").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    if [m.version for m in out] != list(range(1, len(out) + 1)):
        raise RuntimeError(f"migration numbers must be 1..N without gaps: {[m.name for m in out]}")
    return out


def expected_version() -> int:
    """Schema version this build runs against."""
    return available()[-1].version


async def current_version(conn: asyncpg.Connection) -> int:
    """Schema version recorded in the database (0 for an empty one)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def _stored_ticket_docs(conn: asyncpg.Connection) -> None:
    """Back-fill the stored documents (their bytes come from Python), then require them on change rows."""
    tickets, changes = await backfill_docs(conn)
    await conn.execute("ALTER TABLE changes ALTER COLUMN doc_json SET NOT NULL, ALTER COLUMN doc_mp SET NOT NULL")
    log.info("migration.backfilled_docs", tickets=tickets, changes=changes)


# Steps a SQL file cannot do, run right after it in its transaction; keyed by name without the number, so a renumbered
# migration keeps its step.
_PYTHON_STEPS: dict[str, Callable[[asyncpg.Connection], Awaitable[None]]] = {
    "stored_ticket_docs.sql": _stored_ticket_docs,
}


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction; refuse a schema newer than this build knows."""
    migrations = available()
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = await current_version(conn)
        if have > migrations[-1].version:
            raise SchemaTooNewError(
                f"database schema is version {have}, this build knows up to {migrations[-1].version}: upgrade FieldSync"
            )
        for m in migrations:
            if m.version <= have:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                step = _PYTHON_STEPS.get(m.name.split("_", 1)[1])
                if step is not None:
                    await step(conn)
                await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", m.version, m.name)
            applied.append(m.name)
            log.info("migration.applied", migration=m.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


async def check_schema(conn: asyncpg.Connection) -> None:
    """Fail fast at start-up when the schema is behind or ahead of this build."""
    have = await current_version(conn)
    want = expected_version()
    if have > want:
        raise SchemaTooNewError(f"database schema is version {have}, this build knows up to {want}: upgrade FieldSync")
    if have < want:
        raise RuntimeError(f"database schema is version {have}, expected {want}: run `fieldsync migrate`")

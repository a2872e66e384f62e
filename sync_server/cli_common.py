"""Plumbing every `fieldsync` subcommand shares (database options and pool, the operator principal, output), so the
command modules depend on it and not on cli.py, which registers them."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from sync_server.auth import Principal, Role
from sync_server.runtime import CliError, Database, DatabaseUnreachable, connect, open_database
from sync_server.settings import Settings
from sync_server.storage.migrate import check_schema, migrate

T = TypeVar("T")


def db_options(p: argparse.ArgumentParser) -> None:
    """Every command that touches the database takes the same two ways to reach it."""
    p.add_argument("--data-dir", type=Path, help="data directory of the embedded cluster (env FIELDSYNC_DATA_DIR)")
    p.add_argument("--database-url", help="external PostgreSQL DSN instead of the embedded cluster (env FIELDSYNC_DATABASE_URL)")
    # SUPPRESS: a subcommand's default must not overwrite `fieldsync --log-level X COMMAND` given before it.
    p.add_argument("--log-level", default=argparse.SUPPRESS, help="minimum log level: debug, info, warning, error")


def json_arg(p: argparse.ArgumentParser) -> None:
    """Every organisation command prints one JSON document on stdout with --json, for scripts."""
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def with_db(settings: Settings, body: Callable[[Database], Awaitable[T]]) -> T:
    """Run an async command body against the runtime database (cluster started and stopped around it if needed)."""
    with open_database(settings) as db:
        return asyncio.run(body(db))


async def command_pool(db: Database, *, migrate_first: bool) -> asyncpg.Pool:
    """A small pool for a command; commands other than migrate/import refuse a schema that is not current."""
    conn = await connect(db)
    try:
        if migrate_first:
            await migrate(conn)
        else:
            try:
                await check_schema(conn)
            except RuntimeError as exc:
                raise CliError(str(exc)) from None
    finally:
        await conn.close()
    try:
        # direct, not through a pooler: CLI work may hold session advisory locks
        return await asyncpg.create_pool(db.session_dsn, min_size=1, max_size=2)
    except (OSError, asyncpg.CannotConnectNowError) as exc:
        raise DatabaseUnreachable.of(db.session_dsn, exc) from None


def run_use_case(settings: Settings, call: Callable[[asyncpg.Pool], Awaitable[T]], *, migrate_first: bool = False) -> T:
    """Open the database (embedded or URL), a small pool, run one use case, close everything."""

    async def body(db: Database) -> T:
        pool = await command_pool(db, migrate_first=migrate_first)
        try:
            return await call(pool)
        finally:
            await pool.close()

    return with_db(settings, body)


def cli_principal() -> Principal:
    """Whoever has shell access to the data dir is an operator; audit rows name the OS user."""
    return Principal(Role.ADMIN, f"cli:{getpass.getuser()}")


def out(text: str) -> None:
    """Command results go to stdout (logs go to stderr), so they can be piped."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def plain(value: Any) -> Any:
    """JSON-able form of a record value (datetimes as ISO 8601, arrays as lists)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """JSON for scripts with --json, else a short human line or table."""
    out(json.dumps(data, default=str) if args.json else text)


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """A plain aligned table for humans (scripts use --json)."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)

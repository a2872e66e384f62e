"""The `fieldsync` command: serve, migrate, enrol/revoke devices, create users, import MyLA311 exports."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pydantic
import structlog

from protocol import ProtocolError
from sync_server.auth import Role
from sync_server.embedded_pg import EmbeddedPostgresError
from sync_server.ingest.parse import HeaderError, Rejected
from sync_server.logging import configure_logging
from sync_server.open311.mirror import MirrorError
from sync_server.runtime import CliError, Database, DatabaseUnreachable, connect
from sync_server.settings import LogFormat, Settings
from sync_server import __version__, cli_maintenance, cli_open311, cli_org
from sync_server.cli_common import cli_principal, command_pool, db_options, out, with_db
from sync_server.cli_serve import cmd_serve, prepare, serve  # noqa: F401  (prepare, serve: part of this module's API)
from sync_server.storage.migrate import SchemaTooNewError, migrate

log = structlog.get_logger("sync_server.cli")
EXIT_ERROR = 2  # configuration or environment problem: the operator must act (same code argparse uses)


# --------------------------------------------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    """All subcommands; flags override FIELDSYNC_* environment variables."""

    parser = argparse.ArgumentParser(prog="fieldsync", description="Offline-first sync backend for city 311 field crews.")
    parser.add_argument("--version", action="version", version=f"fieldsync {__version__}")
    parser.add_argument("--log-level", help="minimum log level (env FIELDSYNC_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP server (embedded PostgreSQL and demo data by default)")
    db_options(p)
    p.add_argument("--host", help="bind address (env FIELDSYNC_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port, 0 picks a free one (env FIELDSYNC_PORT, default 8080)")
    p.add_argument("--log-format", choices=[f.value for f in LogFormat], help="console or json (env FIELDSYNC_LOG_FORMAT)")
    demo = p.add_mutually_exclusive_group()
    demo.add_argument("--demo", dest="demo_data", action="store_const", const=True,
                      help="seed the demo city into an empty database even with --database-url (env FIELDSYNC_DEMO_DATA=true)")
    demo.add_argument("--no-demo", dest="demo_data", action="store_const", const=False,
                      help="do not seed demo data, not even into an empty embedded cluster (env FIELDSYNC_DEMO_DATA=false)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N server processes sharing the port (SO_REUSEPORT); live events reach all via LISTEN/NOTIFY")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="apply pending schema migrations")
    db_options(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("device", help="enrol or revoke crew devices")
    dsub = p.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    e = dsub.add_parser("enroll", help="enrol a device for a crew and print its token once")
    e.add_argument("--crew", required=True, help="crew name, e.g. san-ev")
    e.add_argument("--label", help="free-text label, e.g. the phone's asset tag")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    db_options(e)
    e.set_defaults(func=cmd_device_enroll)
    r = dsub.add_parser("revoke", help="revoke a device; its pushes fail at once, its other sync requests once servers get the NOTIFY (within 1 s without it)")
    r.add_argument("device_id")
    db_options(r)
    r.set_defaults(func=cmd_device_revoke)

    p = sub.add_parser("user", help="create supervisor and admin accounts")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    c = usub.add_parser("create", help="create a user and print its token once")
    c.add_argument("--name", required=True)
    c.add_argument("--role", required=True, choices=[Role.SUPERVISOR.value, Role.ADMIN.value])
    c.add_argument("--department", help="department code (required for supervisors), e.g. sanitation")
    c.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    db_options(c)
    c.set_defaults(func=cmd_user_create)
    cli_org.add_user_commands(usub)
    cli_org.add_org_commands(sub)
    cli_open311.add_open311_commands(sub)
    cli_maintenance.add_maintenance_commands(sub)
    sp = usub.add_parser("set-password", help="set a user's console password, read from stdin (first line)")
    sp.add_argument("name")
    db_options(sp)
    sp.set_defaults(func=cmd_user_set_password)

    p = sub.add_parser("prune", help="drop change-log history, tombstones and old push results past the retention window")
    p.add_argument("--retention-days", type=float, help="override FIELDSYNC_RETENTION_DAYS for this run")
    db_options(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("check", help="verify integrity: photos in the store with their hash, ticket documents vs rows, "
                                     "change log vs tickets, device seqs vs stored results (JSON report; exit 1 if not ok)")
    p.add_argument("--no-hash", dest="hash_photos", action="store_false",
                   help="check photos by presence and size only (skip reading every original)")
    db_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("import-311", help="import a MyLA311 service-request CSV export (upsert by SR number)")
    p.add_argument("path", type=Path, help="CSV file (portal CamelCase or lowercase headers; .csv.gz accepted)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    db_options(p)
    p.set_defaults(func=cmd_import_311)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """One Settings object: environment first, flags given on the command line on top."""
    overrides: dict[str, Any] = {}
    for name in ("data_dir", "database_url", "host", "port", "log_format", "log_level", "demo_data"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


# Settings field -> command-line flag, for the README's configuration table.
FLAGS: dict[str, str] = {
    "data_dir": "--data-dir", "database_url": "--database-url", "host": "--host", "port": "--port",
    "log_format": "--log-format", "log_level": "--log-level", "demo_data": "--demo / --no-demo",
}


def settings_table() -> str:
    """The README's configuration table, generated from Settings so a test can hold the two together."""
    lines = ["| Setting | Environment variable | Flag | Default | Meaning |", "|---|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "unset" if default is None else str(default.value if hasattr(default, "value") else default)
        flag = f"`{FLAGS[name]}`" if name in FLAGS else ""
        lines.append(f"| {name} | `FIELDSYNC_{name.upper()}` | {flag} | `{shown}` | {info.description} |")
    return "\n".join(lines)


README_MARKERS = ("<!-- settings-table:start -->", "<!-- settings-table:end -->")


def update_readme(path: Path = Path("README.md")) -> None:
    """Regenerate the README's configuration table in place, between its markers, after adding a setting."""
    text = path.read_text()
    start, end = text.index(README_MARKERS[0]), text.index(README_MARKERS[1])
    path.write_text(text[:start] + README_MARKERS[0] + "\n" + settings_table() + "\n" + text[end:])


# --------------------------------------------------------------------------------------------------- helpers

# --------------------------------------------------------------------------------------------------- commands

def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations and say which."""
    async def body(db: Database) -> list[str]:
        conn = await connect(db)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = with_db(settings, body)
    out("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_device_enroll(args: argparse.Namespace, settings: Settings) -> int:
    """Enrol a device; the token is printed here once and stored only as a hash."""
    from sync_server.engine import supervise

    async def body(db: Database) -> tuple[str, str, str]:
        pool = await command_pool(db, migrate_first=False)
        try:
            return await supervise.enroll(pool, cli_principal(), args.crew, args.label)
        finally:
            await pool.close()

    device_id, token, crew = with_db(settings, body)
    if args.json:
        out(json.dumps({"device_id": device_id, "crew": crew, "token": token}))
    else:
        out(f"device_id: {device_id}\ncrew: {crew}\ntoken: {token}")
    return 0


def cmd_device_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a lost or stolen device."""
    from sync_server.engine import supervise

    async def body(db: Database) -> Any:
        pool = await command_pool(db, migrate_first=False)
        try:
            return await supervise.revoke(pool, cli_principal(), args.device_id)
        finally:
            await pool.close()

    row = with_db(settings, body)
    out(f"revoked: {args.device_id} at {row['revoked_at'].isoformat()}")
    return 0


def cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a supervisor (bound to one department) or an admin."""
    from sync_server.engine import supervise

    role = Role(args.role)
    if (role is Role.SUPERVISOR) != (args.department is not None):
        raise CliError("--department is required for a supervisor and not allowed for an admin")

    async def body(db: Database) -> tuple[str, str | None]:
        pool = await command_pool(db, migrate_first=False)
        try:
            return await supervise.add_user(pool, cli_principal(), args.name, role, args.department)
        finally:
            await pool.close()

    token, dept = with_db(settings, body)
    if args.json:
        out(json.dumps({"name": args.name, "role": role.value, "department": dept, "token": token}))
        return 0
    out(f"user: {args.name}\nrole: {role.value}" + (f"\ndepartment: {dept}" if dept else "") + f"\ntoken: {token}")
    return 0


def cmd_user_set_password(args: argparse.Namespace, settings: Settings) -> int:
    """Set a console password from stdin (never argv, which other users can read in the process list); ends the user's sessions."""
    from sync_server.passwords import set_password

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("no password on stdin (e.g. `fieldsync user set-password NAME < file`)")

    async def body(db: Database) -> int:
        pool = await command_pool(db, migrate_first=False)
        try:
            async with pool.acquire() as conn:
                return await set_password(conn, args.name, password, actor=cli_principal().name)
        except ProtocolError as err:
            raise CliError(err.message) from None
        finally:
            await pool.close()

    with_db(settings, body)
    out(f"user: {args.name}\npassword: set (console sessions of this user ended)")
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """Retention by hand (every server also prunes in the background); cursors older than the window get a snapshot."""
    from datetime import timedelta

    from sync_server.engine.maintenance import prune

    days = args.retention_days if args.retention_days is not None else settings.retention_days
    if days <= 0:
        raise CliError("--retention-days must be positive")

    async def body(db: Database) -> Any:
        conn = await connect(db)
        try:
            await migrate(conn)  # like import-311: a fresh embedded data dir is usable straight away
            return await prune(conn, timedelta(days=days), batch=settings.prune_batch_rows,
                               keep_results=settings.results_keep_per_device)
        finally:
            await conn.close()

    report = with_db(settings, body)
    out(json.dumps({"retention_days": days, **report.__dict__}))
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Integrity check after a restore, an incident or an upgrade; read-only; exit 1 when anything is wrong."""
    from sync_server.blobs import open_store
    from sync_server.engine.check import check

    async def body(db: Database) -> dict[str, Any]:
        pool = await command_pool(db, migrate_first=False)
        store = open_store(settings)
        try:
            return (await check(pool, store, hash_photos=args.hash_photos)).as_dict()
        finally:
            await store.close()
            await pool.close()

    report = with_db(settings, body)
    out(json.dumps(report))
    return 0 if report["ok"] else 1


def cmd_import_311(args: argparse.Namespace, settings: Settings) -> int:
    """Import a MyLA311 export; rejected rows go to stderr with their line, the summary to stdout."""
    from sync_server.ingest.importer import Progress, import_csv

    from sync_server.ingest.importer import check_header

    path: Path = args.path
    check_header(path)  # before any cluster starts: a wrong file costs nothing

    def reject(r: Rejected) -> None:
        sys.stderr.write(f"{path.name}:{r.line}: rejected: {r.reason}\n")

    async def body(db: Database) -> dict[str, int]:
        pool = await command_pool(db, migrate_first=True)
        try:
            summary = await import_csv(pool, path, on_reject=reject, progress=Progress(path.stat().st_size))
        finally:
            await pool.close()
        return summary.as_dict()

    counts = with_db(settings, body)
    if args.json:
        out(json.dumps(counts))
    else:
        out("  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


# --------------------------------------------------------------------------------------------------- entry point

def _fail(message: str) -> NoReturn:
    """One line on stderr and the configuration-error exit code."""
    sys.stderr.write(f"fieldsync: error: {message}\n")
    raise SystemExit(EXIT_ERROR)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM outside the server's loop unwinds like Ctrl-C, so a cluster we started is still stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"invalid setting {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
    configure_logging(settings.log_format, settings.log_level)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130
    except (CliError, EmbeddedPostgresError, SchemaTooNewError, HeaderError, DatabaseUnreachable, MirrorError) as exc:
        _fail(str(exc))
    except ProtocolError as exc:
        _fail(exc.message)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _fail(f"database: {exc}")
    except OSError as exc:  # port in use, unreachable database host, unreadable file
        _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())

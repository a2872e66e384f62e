"""`fieldsync audit archive` and `fieldsync blobs collect`: bounded growth from the shell (the server runs the
pruner and the photo collector in the background; the audit archive is the operator's decision, so it is only here)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from sync_server.cli_common import cli_principal, command_pool, db_options, out, with_db
from sync_server.runtime import CliError, Database
from sync_server.settings import Settings


def add_maintenance_commands(sub: Any) -> None:
    """Register `audit archive` and `blobs collect` on the top-level subparsers."""
    p = sub.add_parser("audit", help="archive old audit rows to a file")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    a = asub.add_parser("archive", help="write audit rows older than --before to an NDJSON file (.gz: gzip), then "
                                        "delete them in batches; the archive is itself audited")
    a.add_argument("--before", required=True, type=_day, help="UTC date (YYYY-MM-DD): rows older than its midnight")
    a.add_argument("--to", required=True, type=Path, dest="dest", help="new file (never overwritten)")
    a.add_argument("--batch", type=int, default=5000, help="rows per write+delete batch (default 5000)")
    db_options(a)
    a.set_defaults(func=cmd_audit_archive)

    p = sub.add_parser("blobs", help="photo store maintenance")
    bsub = p.add_subparsers(dest="blobs_command", required=True, metavar="ACTION")
    c = bsub.add_parser("collect", help="delete photos no ticket shows (after FIELDSYNC_UNATTACHED_PHOTO_DAYS) and "
                                        "store objects without a row (after FIELDSYNC_BLOB_ORPHAN_GRACE_HOURS) now")
    db_options(c)
    c.set_defaults(func=cmd_blobs_collect)


def _day(text: str) -> datetime:
    """A date on the command line means its midnight UTC."""
    try:
        return datetime.combine(date.fromisoformat(text), time.min, tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def cmd_audit_archive(args: argparse.Namespace, settings: Settings) -> int:
    """Archive, then print one JSON report (rows, id range, file, sha256)."""
    from sync_server.engine.audit_archive import ArchiveRefused, archive

    if not 1 <= args.batch <= 100_000:
        raise CliError("--batch must be between 1 and 100000")

    async def body(db: Database) -> Any:
        pool = await command_pool(db, migrate_first=False)
        try:
            async with pool.acquire() as conn:
                return await archive(conn, args.before, args.dest, actor=cli_principal().name, batch=args.batch)
        except ArchiveRefused as exc:
            raise CliError(str(exc)) from None
        finally:
            await pool.close()

    out(json.dumps(asdict(with_db(settings, body))))
    return 0


def cmd_blobs_collect(args: argparse.Namespace, settings: Settings) -> int:
    """One photo collection now, whatever the schedule; prints its JSON report."""
    from sync_server.blobs import open_store
    from sync_server.engine.blob_gc import collect_if_due

    async def body(db: Database) -> Any:
        pool = await command_pool(db, migrate_first=False)
        store = open_store(settings)
        try:
            return await collect_if_due(pool, store, settings, force=True)
        finally:
            await store.close()
            await pool.close()

    report = with_db(settings, body)
    out(json.dumps(asdict(report) if report is not None else {}))
    return 0

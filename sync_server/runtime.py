"""One way every command gets its database: the operator's URL, or the private cluster started for the command and stopped only if we started it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import structlog

from sync_server.embedded_pg import EmbeddedPostgres
from sync_server.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Database:
    """A reachable database: its DSN and, for the embedded default, the cluster handle (None for an external URL)."""

    dsn: str
    embedded: EmbeddedPostgres | None = None
    direct_dsn: str | None = None  # bypasses a transaction-mode pooler: session advisory locks, LISTEN

    @property
    def session_dsn(self) -> str:
        """Where session-scoped work goes (migrations take a session advisory lock)."""
        return self.direct_dsn or self.dsn

    @property
    def kind(self) -> str:
        """For log lines: which of the two modes is in use."""
        return "external" if self.embedded is None else "embedded"


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """Yield a database for the duration of a command; a cluster a running server already owns is joined, never stopped."""
    if settings.database_url:
        yield Database(settings.database_url, direct_dsn=settings.database_direct_url)
        return
    pg = EmbeddedPostgres(settings.data_dir, settings.pg_bin_dir)  # raises EmbeddedPostgresError (one line) without binaries
    dsn = pg.start()
    try:
        yield Database(dsn, pg)
    finally:
        pg.stop()  # a no-op unless this process started the postmaster


class CliError(Exception):
    """An expected failure with a one-line message for the operator, never a traceback.

    Defined here, not in cli.py: under `python -m sync_server.cli` that module runs as __main__, and a class defined
    there would not be the one cli_org.py raises."""


class DatabaseUnreachable(RuntimeError):
    """The database did not answer: the operator must check host, port, network or that PostgreSQL runs."""

    @classmethod
    def of(cls, dsn: str, exc: BaseException) -> DatabaseUnreachable:
        """One line naming where we tried (never the password) and what to check."""
        where = _host_port(dsn)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return cls(f"cannot reach PostgreSQL at {where} ({reason}); check that it is running, the host and port in "
                   "--database-url / FIELDSYNC_DATABASE_URL, and firewalls")


def _host_port(dsn: str) -> str:
    """HOST:PORT of a postgresql:// URL (defaults as libpq applies them; a socket directory given as ?host=), for messages."""
    parsed = urlsplit(dsn)
    query = dict(parse_qsl(parsed.query))
    try:
        port = parsed.port or int(query.get("port", 5432))
    except ValueError:
        port = 5432
    return f"{parsed.hostname or query.get('host') or 'localhost'}:{port}"


async def connect(db: Database) -> asyncpg.Connection:
    """A single connection for short administrative work (migrate, seed, CLI commands)."""
    try:
        return await asyncpg.connect(db.session_dsn, server_settings={"application_name": "fieldsync-cli"}, timeout=15)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise DatabaseUnreachable.of(db.session_dsn, exc) from None

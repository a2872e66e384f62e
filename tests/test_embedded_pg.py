"""The private cluster's lifecycle (first start, reuse, crash leftovers, root) and the migration runner, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sync_server.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError
from sync_server.storage.migrate import SchemaTooNewError, available, check_schema, expected_version, migrate

IS_ROOT = os.geteuid() == 0


def _sql(dsn: str, query: str, *args: Any) -> Any:
    """Run one statement on its own connection (these tests are synchronous: cluster control blocks anyway)."""
    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A scratch dir the `postgres` user can traverse (as root the cluster runs as that user)."""
    root = Path(tempfile.mkdtemp(prefix="fs-pg-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _postmaster_alive(pg: EmbeddedPostgres) -> bool:
    pidfile = pg.pg_dir.resolve() / "postmaster.pid"
    if not pidfile.exists():
        return False
    return Path(f"/proc/{int(pidfile.read_text().splitlines()[0])}").exists()


def test_first_start_initialises_and_restart_reuses_data(reachable_dir: Path) -> None:
    pg = EmbeddedPostgres(reachable_dir / "data")
    dsn = pg.start()
    try:
        assert (pg.pg_dir / "PG_VERSION").is_file()
        _sql(dsn, "CREATE TABLE keep (v text)")
        _sql(dsn, "INSERT INTO keep VALUES ('survives')")
        password = (reachable_dir / "data" / "pg-password").read_text()
    finally:
        pg.stop()
    assert not _postmaster_alive(pg)

    again = EmbeddedPostgres(reachable_dir / "data")
    dsn2 = again.start()
    try:
        assert _sql(dsn2, "SELECT v FROM keep") == "survives"
        assert (reachable_dir / "data" / "pg-password").read_text() == password  # not re-initialised
        joined = EmbeddedPostgres(reachable_dir / "data")  # a second process on a running cluster joins it...
        assert _sql(joined.start(), "SELECT count(*) FROM keep") == 1
        joined.stop()  # ...and leaving does not stop it for the owner
        assert _sql(dsn2, "SELECT 1") == 1
    finally:
        again.stop()
    assert not _postmaster_alive(again)


def test_crash_leftovers_do_not_stop_the_next_start(reachable_dir: Path) -> None:
    pg = EmbeddedPostgres(reachable_dir / "data")
    dsn = pg.start()
    _sql(dsn, "CREATE TABLE keep (v int)")
    _sql(dsn, "INSERT INTO keep VALUES (1)")
    pg.kill()  # SIGKILL the postmaster: postmaster.pid stays behind
    pidfile = pg.pg_dir.resolve() / "postmaster.pid"
    assert pidfile.exists()

    after_crash = EmbeddedPostgres(reachable_dir / "data")
    dsn = after_crash.start()
    try:
        assert _sql(dsn, "SELECT count(*) FROM keep") == 1  # crash recovery replayed the WAL
    finally:
        after_crash.stop()

    # A stale pid file whose pid now belongs to a live, unrelated process (here: this test runner).
    lines = ["0"] * 8
    lines[0], lines[1], lines[3] = str(os.getpid()), str(pg.pg_dir.resolve()), "5999"
    pidfile.write_text("\n".join(lines) + "\n")
    stale = EmbeddedPostgres(reachable_dir / "data")
    dsn = stale.start()
    try:
        assert _sql(dsn, "SELECT count(*) FROM keep") == 1
        assert stale.port != 5999
    finally:
        stale.stop()


@pytest.mark.skipif(not IS_ROOT, reason="root case: only meaningful when the tests run as root")
def test_as_root_the_cluster_belongs_to_postgres_even_under_a_0700_dir() -> None:
    private = Path(tempfile.mkdtemp(prefix="fs-private-"))  # mkdtemp makes it 0700: `postgres` cannot enter it
    assert private.stat().st_mode & 0o777 == 0o700
    pg = EmbeddedPostgres(private / "data")
    real = None
    try:
        dsn = pg.start()
        real = pg.pg_dir.resolve()
        assert pg.pg_dir.is_symlink() and not real.is_relative_to(private)  # relocated, linked back
        owner = pwd.getpwnam("postgres").pw_uid
        assert real.stat().st_uid == owner and (real / "PG_VERSION").stat().st_uid == owner
        assert _sql(dsn, "SELECT current_setting('data_directory')") == str(real)
    finally:
        pg.stop()
        shutil.rmtree(private, ignore_errors=True)
        if real is not None:
            shutil.rmtree(real, ignore_errors=True)


def test_the_default_dsn_uses_the_unix_socket_and_tcp_stays_for_tools(reachable_dir: Path) -> None:
    pg = EmbeddedPostgres(reachable_dir / "data")
    dsn = pg.start()
    try:
        real = pg.pg_dir.resolve()
        assert dsn.split("@", 1)[1].startswith("/fieldsync?host=") and f"host={real}&port={pg.port}" in dsn
        assert (real / f".s.PGSQL.{pg.port}").is_socket()
        assert (real.stat().st_mode & 0o777) == 0o700  # only the owner (and root) reach the socket
        # inet_server_addr() is NULL on a Unix-socket connection and the address on a TCP one
        assert _sql(dsn, "SELECT inet_server_addr()::text") is None
        assert _sql(pg.tcp_dsn(), "SELECT host(inet_server_addr())") == "127.0.0.1"
        joined = EmbeddedPostgres(reachable_dir / "data")  # a second process joining the cluster gets the socket too
        assert _sql(joined.start(), "SELECT inet_server_addr()::text") is None
        joined.stop()
    finally:
        pg.stop()


def test_a_data_dir_too_deep_for_a_socket_path_still_starts_on_tcp(reachable_dir: Path) -> None:
    deep = reachable_dir / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    for d in (deep.parent, deep):
        d.chmod(0o755)
    pg = EmbeddedPostgres(deep / "data")
    dsn = pg.start()
    try:
        assert len(str(pg.pg_dir.resolve() / f".s.PGSQL.{pg.port}")) > 107
        assert pg.socket_path() is None and dsn == pg.tcp_dsn()
        assert _sql(dsn, "SELECT host(inet_server_addr())") == "127.0.0.1"
    finally:
        pg.stop()


def test_an_explicit_bin_dir_without_binaries_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedPostgresError) as err:
        EmbeddedPostgres(tmp_path / "data", bin_dir=tmp_path / "nothing-here")
    assert "\n" not in str(err.value) and "initdb" in str(err.value)


# ------------------------------------------------------------------------------------------------ migrations

@pytest.fixture
async def empty_db(pg_cluster: EmbeddedPostgres) -> Any:
    """An empty (unmigrated) database on the session cluster."""
    name = "m_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    await admin.execute(f"CREATE DATABASE {name}")
    conn = await asyncpg.connect(pg_cluster.dsn(name))
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_migrations_apply_once_and_are_idempotent(empty_db: asyncpg.Connection) -> None:
    first = await migrate(empty_db)
    assert first == [m.name for m in available()]
    rows = await empty_db.fetch("SELECT version, name FROM schema_version ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in available()]
    assert await migrate(empty_db) == []
    assert await empty_db.fetchval("SELECT count(*) FROM schema_version") == expected_version()
    await check_schema(empty_db)  # current: no error


async def test_a_newer_schema_is_refused(empty_db: asyncpg.Connection) -> None:
    await migrate(empty_db)
    await empty_db.execute("INSERT INTO schema_version (version, name) VALUES ($1, 'from_the_future.sql')", expected_version() + 1)
    with pytest.raises(SchemaTooNewError):
        await migrate(empty_db)
    with pytest.raises(SchemaTooNewError):
        await check_schema(empty_db)

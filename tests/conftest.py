"""Test infrastructure: one real PostgreSQL cluster per session, a migrated template, a fresh database per test, real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from sync_server.app import create_app, start_runner
from sync_server.embedded_pg import EmbeddedPostgres
from sync_server.settings import Settings
from sync_server.domain.document import render
from sync_server.storage import integrity
from sync_server.storage.migrate import migrate
from sync_server.storage.tickets import load_tickets
from tests.factories import World, build_world

TEMPLATE = "fs_template"
# A server's pool opens pool_min_size connections before it is ready (default: the whole pool, for production
# bursts); the suite starts hundreds of short-lived servers, in-process and as subprocesses, so one is enough here.
os.environ.setdefault("FIELDSYNC_POOL_MIN_SIZE", "1")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres]:
    """A throwaway cluster for the whole session (asyncpg's own test base does the same)."""
    root = Path(tempfile.mkdtemp(prefix="fs-test-"))
    root.chmod(0o755)  # as root the cluster runs as `postgres`, which must traverse this dir
    # fsync off: a test never survives an OS crash, and a killed postmaster loses nothing unsynced (its writes are in
    # the kernel already); it makes the per-test CREATE/DROP DATABASE much cheaper. Under pytest-xdist every worker
    # process has its own session, so its own cluster on its own free port.
    pg = EmbeddedPostgres(root / "data", extra_options=("fsync=off",))
    pg.start()
    try:
        yield pg
    finally:
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_db(pg_cluster: EmbeddedPostgres) -> str:
    """A migrated template; cloning it is much faster than migrating per test."""
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(pg_cluster.dsn(TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE


@contextlib.asynccontextmanager
async def scratch_database(pg_cluster: EmbeddedPostgres, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A database of its own for one test (a clone of `template`, or empty), dropped afterwards: every test that needs
    a database beside the per-test one uses this, so creation and forced clean-up live in one place."""
    name = prefix + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    finally:
        await admin.close()
    try:
        yield pg_cluster.dsn(name)
    finally:
        admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
async def db_dsn(pg_cluster: EmbeddedPostgres, template_db: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh migrated database for one test, dropped afterwards; on the way out, every ticket's stored document
    (doc_json, doc_mp, doc_hash) must equal a fresh render of its rows, whichever writers the test ran (a test that
    edits rows by hand on purpose says so with @pytest.mark.rows_edited_by_hand); and no stored result, note or item
    line may lack its device or ticket (they have no foreign keys since migration 0017)."""
    async with scratch_database(pg_cluster, "t_", template_db) as dsn:
        yield dsn
        if request.node.get_closest_marker("rows_edited_by_hand") is None:
            stale = await stale_documents(dsn)
            assert not stale, f"stored ticket documents differ from their rows (a writer bypassed commit_changes): {stale[:5]}"
        orphans = await orphan_children(dsn)
        assert not orphans, f"results, notes or item lines without their device or ticket (no foreign key since 0017): {orphans[:5]}"


async def orphan_children(dsn: str) -> list[tuple[str, str]]:
    """Stored results, notes and item lines whose device or ticket is missing (storage/integrity.orphan_children)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:  # the test dropped its database (loss and restore drills)
        return []
    try:
        if await conn.fetchval("SELECT to_regclass('ticket_items') IS NULL"):
            return []
        return await integrity.orphan_children(conn, 5)
    finally:
        await conn.close()


async def stale_documents(dsn: str) -> list[str]:
    """Ids of tickets whose stored document, msgpack or hash is not what rendering their rows gives now."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:  # the test dropped its database (loss and restore drills)
        return []
    try:
        if await conn.fetchval("SELECT to_regclass('tickets') IS NULL"):
            return []
        rows = await conn.fetch("SELECT id, doc_json, doc_mp, doc_hash FROM tickets ORDER BY id")
        fresh = await load_tickets(conn, [r["id"] for r in rows])
    finally:
        await conn.close()
    out = []
    for r in rows:
        want = render(fresh[r["id"]].doc)
        if (r["doc_json"], bytes(r["doc_mp"] or b""), bytes(r["doc_hash"] or b"")) != (want.json, want.mp, want.hash):
            out.append(str(r["id"]))
    return out


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, for tests that drive storage and engine code directly."""
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=10)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an in-test server: no demo data, a private data dir."""
    return Settings(data_dir=tmp_path / "data", demo_data=False, port=0, pool_min_size=1, pool_max_size=10,
                    metrics_port=0)


class Server:
    """A real aiohttp server on 127.0.0.1 for one test."""

    def __init__(self, app: web.Application, runner: web.AppRunner, url: str) -> None:
        self.app, self.runner, self.url = app, runner, url


async def start_server(settings: Settings, dsn: str) -> Server:
    """Start the real app on a free loopback port."""
    app = create_app(settings, dsn)
    runner = await start_runner(app, access_log=None)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Server(app, runner, f"http://127.0.0.1:{port}")


@pytest.fixture
async def server(settings: Settings, db_dsn: str) -> AsyncIterator[Server]:
    """The app served over real HTTP on loopback."""
    srv = await start_server(settings, db_dsn)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


@pytest.fixture
async def world(pool: asyncpg.Pool) -> World:
    """Two departments, three crews, devices, supervisors and an admin, with their tokens."""
    return await build_world(pool)


# Tests that share one pytest-xdist worker, one after another in collection order (ops/test.sh runs --dist loadgroup):
# the browser tests, so that one Chromium serves them all; the JS client's vitest runs, which share clients/js and its
# caches. (xdist's own xdist_group mark is not used: with pytest 9.2 its nodeid suffix no longer takes effect.)
XDIST_GROUPS = {"tests/browser/": "browser", "tests/test_js_client.py": "clients_js"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's loadgroup scheduler with the groups above chosen by path; every other test is its own unit."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class PathGroupScheduling(LoadGroupScheduling):
        """Groups by XDIST_GROUPS path prefix (a group is one work unit, run in order on one worker)."""

        def _split_scope(self, nodeid: str) -> str:
            for prefix, group in XDIST_GROUPS.items():
                if nodeid.startswith(prefix):
                    return group
            return nodeid

    return PathGroupScheduling(config, log)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    """Tests must never reach beyond loopback; make accidental proxies harmless."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        os.environ.pop(var, None)

"""`fieldsync serve`: start or join the database, migrate and seed once, then serve one process or N supervised workers."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
from typing import Any

import structlog
from aiohttp import web

from sync_server.runtime import CliError, Database, connect, open_database
from sync_server.settings import Settings
from sync_server.storage.migrate import migrate

log = structlog.get_logger("sync_server.cli")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Start (or join) the database, migrate, seed an empty one, and serve until SIGINT/SIGTERM."""
    workers = max(1, getattr(args, "workers", 1) or 1)
    _check_port_free(settings.host, settings.port)  # before PostgreSQL starts: a busy port costs one line, not a cluster
    with open_database(settings) as db:
        if workers > 1:
            return _serve_workers(settings, db, workers)
        return asyncio.run(serve(settings, db))


def _check_port_free(host: str, port: int) -> None:
    """Bind and release the port once, so "address in use" is found before the database is started or migrated."""
    import errno
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does: TIME_WAIT is not "in use"
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is already in use (another fieldsync serve?); "
                               "pick another with --port N, or --port 0 for a free one") from None
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _serve_workers(settings: Settings, db: Database, workers: int) -> int:
    """Fork N supervised workers onto one port (SO_REUSEPORT: the kernel spreads connections); each has its own pool
    and live LISTEN connection. Migrate/seed runs once before forking; a worker that dies is replaced."""
    import shutil
    import tempfile

    from sync_server.workers import supervise

    # Workers write metric values to per-pid files here; any worker's /metrics merges them. Set before anything
    # imports prometheus_client (it picks its value class at import), hence the literal name and the late import.
    metrics_dir = tempfile.mkdtemp(prefix="fieldsync-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from sync_server.metrics import MULTIPROC_ENV, mark_worker_dead

    try:
        return _fork_workers(settings, db, workers, supervise, mark_worker_dead)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _fork_workers(settings: Settings, db: Database, workers: int, supervise: Any, on_exit: Any) -> int:
    """Prepare once, fix the port, then hand the workers to the supervisor."""
    import socket

    asyncio.run(prepare(settings, db))
    if settings.port == 0:  # every worker must bind the same port
        with socket.socket() as probe:
            probe.bind((settings.host, 0))
            settings = settings.model_copy(update={"port": probe.getsockname()[1]})
    settings.resolved_cursor_secret()  # created once here, so every worker reads the same key
    return int(supervise(workers, lambda: asyncio.run(serve(settings, db, reuse_port=True, prepared=True)),
                         on_worker_exit=on_exit))


# The cyclic collector's first-generation threshold while serving (CPython's default is 700). A 25-mutation push nets
# ~700 new container objects (dicts of documents, results, rows), so the default ran a collection per push, and every
# tenth of those a wider one over the app's long-lived objects: ~0.4-1.4 ms of Python CPU per push (gc.callbacks,
# in-process pushes on a real PostgreSQL). Cycles are still collected, a few thousand objects later.
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Once the app is up: move everything allocated so far (modules, schemas, the pool) out of the collector's view
    (gc.freeze: never garbage, scanned by no collection) and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _url_host(host: str) -> str:
    """A wildcard bind is reached via loopback from this machine; IPv6 literals need brackets in a URL."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def prepare(settings: Settings, db: Database) -> dict[str, Any] | None:
    """Migrate, and seed the demo city into an empty database; returns fresh credentials when it seeded.

    Runs once before any worker starts, so a future `--workers N` only forks after this."""
    from sync_server.demo.seed import seed, write_credentials

    conn = await connect(db)
    try:
        applied = await migrate(conn)
        if applied:
            log.info("serve.migrated", applied=applied)
        credentials = None
        if settings.wants_demo():
            credentials = await seed(conn, tickets=settings.demo_tickets, seed=settings.demo_seed)
    finally:
        await conn.close()
    if credentials is not None:
        credentials["server"] = settings.public_url
        # Written before binding: if the port turns out to be taken, the once-only tokens are not lost.
        write_credentials(settings.data_dir, credentials)
    return credentials


async def serve(settings: Settings, db: Database, *, reuse_port: bool = False, prepared: bool = False) -> int:
    """Serve one process until SIGINT/SIGTERM, then drain requests and close the pool before the cluster stops."""
    from sync_server.app import create_app, start_runner
    from sync_server.demo.seed import CREDENTIALS_FILE, update_server_url

    if not prepared:
        await prepare(settings, db)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await start_runner(create_app(settings, db.dsn), access_log=None, shutdown_timeout=10.0)
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
        tune_gc()
        port = runner.addresses[0][1]
        url = settings.public_url or f"http://{_url_host(settings.host)}:{port}"
        credentials = update_server_url(settings.data_dir, url)
        log.info("serve.ready", url=url, pid=os.getpid(), database=db.kind, data_dir=str(settings.data_dir.absolute()))
        if credentials is not None:  # tokens never go to the log (logs are shipped and kept); the file is 0600
            log.info("serve.demo_credentials", url=url, file=str((settings.data_dir / CREDENTIALS_FILE).absolute()))
        await stop.wait()
        log.info("serve.stopping")
    finally:
        await runner.cleanup()
    log.info("serve.stopped")
    return 0

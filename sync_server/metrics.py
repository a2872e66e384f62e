"""Prometheus metrics on their own listener, so operators can watch a deployment without exposing it to devices:
per-process instruments (multiprocess mode under `--workers N`) plus database gauges computed at scrape time."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from sync_server.keys import POOL, SETTINGS
from sync_server.storage import stats

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HOLD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_SAMPLE_S = 0.1
POOL_REFRESH_S = 5.0  # every worker publishes its pool gauges this often; a scrape reaches only one worker


def multiprocess_mode() -> bool:
    """`serve --workers N` sets the shared directory before forking; each worker then writes its values there."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The process's instruments; one per app (no module globals), so in-test apps never collide in a registry."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        if self.multiprocess and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
        # In multiprocess mode values live in per-pid files and a scrape merges them; registering the live objects
        # too would report this process twice.
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.registry = own if own is not None else _multiprocess_registry()
        reg: Any = own
        self.requests = Histogram("fieldsync_http_request_duration_seconds",
                                  "HTTP request latency by method, route template and status.",
                                  ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=reg)
        self.mutations = Counter("fieldsync_mutations", "Push results by status and rejection/merge reason "
                                 "(status=replayed for resent seqs answered from the stored result).",
                                 ["status", "reason"], registry=reg)
        self.pull_pages = Counter("fieldsync_pull_pages", "Pull pages served, by kind (delta or snapshot).",
                                  ["kind"], registry=reg)
        self.pull_bytes = Counter("fieldsync_pull_bytes", "Bytes of pull response bodies.", registry=reg)
        self.pull_resets = Counter("fieldsync_pull_resets", "Snapshot page sets served (no, reinstalled or expired cursor).",
                                   registry=reg)
        self.live_sockets = Gauge("fieldsync_live_sockets", "Open live WebSockets by role.", ["role"],
                                  multiprocess_mode="livesum", registry=reg)
        self.live_closes = Counter("fieldsync_live_closes", "Live WebSockets closed, by close code "
                                   "(4008 = consumer too slow, 1013 = database unavailable).", ["code"], registry=reg)
        self.upload_bytes = Counter("fieldsync_upload_bytes", "Photo bytes accepted by tus PATCH.", registry=reg)
        self.rate_limited = Counter("fieldsync_rate_limited", "Requests refused with 429 rate_limited, by scope "
                                    "(address or device).", ["scope"], registry=reg)
        self.auth_failures = Counter("fieldsync_auth_failures", "Requests refused for a missing, invalid or revoked "
                                     "token, by error code.", ["code"], registry=reg)
        self.retention_removed = Counter("fieldsync_retention_removed", "Rows and photo-store objects removed by "
                                         "retention and photo collection, by kind.", ["kind"], registry=reg)
        self.retention_runs = Counter("fieldsync_retention_runs", "Retention (prune) and photo-collection (blob_gc) "
                                      "runs this process performed, by job and outcome.", ["job", "outcome"],
                                      registry=reg)
        self.pool_size = Gauge("fieldsync_db_pool_size", "Connections open in the asyncpg pools.",
                               multiprocess_mode="livesum", registry=reg)
        self.pool_in_use = Gauge("fieldsync_db_pool_in_use", "Pool connections checked out.",
                                 multiprocess_mode="livesum", registry=reg)
        self.pool_waiting = Gauge("fieldsync_db_pool_waiting", "Tasks waiting for a pool connection.",
                                  multiprocess_mode="livesum", registry=reg)
        self.pool_max = Gauge("fieldsync_db_pool_max", "Configured maximum pool connections.",
                              multiprocess_mode="livesum", registry=reg)
        self.pool_shed = Counter("fieldsync_db_shed", "Requests refused with 503 service_unavailable because the "
                                 "line for a pool connection was too long or they waited too long (db_queue_limit, "
                                 "db_queue_timeout_s).", registry=reg)
        self.pool_wait = Histogram("fieldsync_db_pool_wait_seconds", "Time a task waited for a pool connection, by "
                                   "route ('background' for the server's own loops).", ["route"],
                                   buckets=HOLD_BUCKETS, registry=reg)
        self.pool_hold = Histogram("fieldsync_db_connection_hold_seconds", "Time a pool connection stayed checked out, "
                                   "per acquisition, by route: held across awaits that are not database work, it is "
                                   "what starves the pool.", ["route"], buckets=HOLD_BUCKETS, registry=reg)
        self.loop_lag = Histogram("fieldsync_event_loop_lag_seconds", "How late the event loop ran a timer (sampled "
                                  "every 100 ms): time every request and transaction on this process waits too.",
                                  buckets=HOLD_BUCKETS, registry=reg)
        self.loop_lag_max = Gauge("fieldsync_event_loop_lag_max_seconds", "Largest event-loop lag in the last second.",
                                  multiprocess_mode="max", registry=reg)

        # Series a dashboard plots exist from the first scrape (a rate over a missing series is no data, not 0).
        for status in ("applied", "merged", "duplicate", "replayed"):
            self.mutations.labels(status=status, reason="")
        # Children bound once: labels() costs a lock and a tuple build per call, on every request otherwise.
        self._pull_pages = {kind: self.pull_pages.labels(kind=kind) for kind in ("delta", "snapshot")}
        self._request_series: dict[tuple[str, str, str], Any] = {}
        self._db_series: dict[tuple[str, str], Any] = {}
        for scope in ("address", "device"):
            self.rate_limited.labels(scope=scope)
        for code in ("unauthorized", "token_revoked"):
            self.auth_failures.labels(code=code)
        for role in ("device", "supervisor", "admin"):
            self.live_sockets.labels(role=role)
        for job in ("prune", "blob_gc"):
            for outcome in ("ok", "failed"):
                self.retention_runs.labels(job=job, outcome=outcome)
        for code in ("1001", "1013", "4003", "4008"):
            self.live_closes.labels(code=code)

    def observe_pool(self, pool: asyncpg.Pool) -> None:
        """Publish this process's pool occupancy (waiting comes from the pool's queue: asyncpg has no public count)."""
        size = pool.get_size()
        self.pool_size.set(size)
        self.pool_in_use.set(size - pool.get_idle_size())
        self.pool_max.set(pool.get_max_size())
        waiting = getattr(pool, "waiting", None)  # dbpool.MeteredPool counts its admission line too
        if waiting is not None:
            self.pool_waiting.set(waiting())
        else:
            queue = getattr(pool, "_queue", None)
            self.pool_waiting.set(len(getattr(queue, "_getters", ()) or ()))

    def observe_db(self, what: str, route: str, seconds: float) -> None:
        """dbpool.MeteredPool's observer: one wait sample per acquisition, one hold sample per release."""
        key = (what, route)
        child = self._db_series.get(key)
        if child is None:  # routes are templates, so the series are few; labels() per acquisition cost a lock each
            child = self._db_series[key] = (self.pool_wait if what == "wait" else self.pool_hold).labels(route=route)
        child.observe(seconds)

    def count_push(self, response: dict[str, Any]) -> None:
        """One increment per result of a push response."""
        for result in response.get("results", ()):
            status = "replayed" if result.get("replayed") else str(result.get("status", "unknown"))
            self.mutations.labels(status=status, reason=str(result.get("reason") or "")).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One latency sample; the series are few (route templates, not paths), so their children are kept."""
        key = (method, route, str(status))
        child = self._request_series.get(key)
        if child is None:
            child = self._request_series[key] = self.requests.labels(method=method, route=route, status=key[2])
        child.observe(seconds)

    def count_pull(self, reset: bool, has_more: bool, body_bytes: int) -> None:
        """A served pull page."""
        self._pull_pages["snapshot" if reset else "delta"].inc()
        self.pull_bytes.inc(body_bytes)
        if reset and not has_more:  # one per snapshot page set (every page of it says reset)
            self.pull_resets.inc()


def _multiprocess_registry() -> CollectorRegistry:
    """A registry that merges every worker's files (dead workers' counters included: totals never go backwards)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def mark_worker_dead(pid: int) -> None:
    """Supervisor hook: a dead worker's live gauges (sockets, pool) must stop counting."""
    if multiprocess_mode():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _Families:
    """A collector over families computed just before exposition (database gauges are not per-process values)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        """Prometheus collector protocol."""
        return self.families


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def database_families(pool: asyncpg.Pool, stale_hours: float) -> list[Metric]:
    """Gauges read from PostgreSQL at scrape time, with a bounded query; `fieldsync_db_up` says whether it answered."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(5):
            async with pool.acquire() as conn:
                row = await stats.deployment_stats(conn, stale_hours)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("metrics.db_stats_failed", error=str(exc)[:200])
        return [_gauge("fieldsync_db_up", "1 if the scrape-time database query answered.", 0)]
    took = time.perf_counter() - started
    stale = GaugeMetricFamily("fieldsync_devices_stale", "Enrolled, unrevoked devices not seen for longer than "
                              "`hours` (never-seen devices included).", labels=["hours"])
    stale.add_metric([f"{stale_hours:g}"], row.stale_devices)
    return [
        _gauge("fieldsync_db_up", "1 if the scrape-time database query answered.", 1),
        _gauge("fieldsync_db_stats_seconds", "How long the scrape-time database query took.", took),
        _gauge("fieldsync_db_oldest_xact_age_seconds", "Age of the oldest open transaction holding a transaction id "
               "(cluster-wide); the cursor and live feed cannot move past it.", row.oldest_xact_age_s),
        _gauge("fieldsync_change_log_rows", "Rows in the change log (estimate above 100k rows).", row.change_rows),
        _gauge("fieldsync_audit_rows", "Rows in the audit log (estimate above 100k rows).", row.audit_rows),
        stale,
        _gauge("fieldsync_conflicts_open", "Conflicts and late field reports not yet resolved by a supervisor.",
               row.open_conflicts),
        _gauge("fieldsync_upload_sessions_open", "Unfinished tus upload sessions.", row.open_uploads),
        _gauge("fieldsync_push_results_rows", "Stored push results (estimate above 100k rows).", row.result_rows),
        *_job_ages(row.job_ages),
    ]


def _job_ages(ages: dict[str, float]) -> list[Metric]:
    """Seconds since each maintenance job last finished (alert when retention stops keeping up)."""
    fam = GaugeMetricFamily("fieldsync_maintenance_last_finished_age_seconds", "Seconds since the retention (prune) "
                            "and photo-collection (blob_gc) jobs last finished anywhere in the deployment.",
                            labels=["job"])
    for job, age in sorted(ages.items()):
        fam.add_metric([job], age)
    return [fam]


async def scrape(request: web.Request) -> web.Response:
    """GET /metrics on the metrics listener."""
    main = request.app[SOURCE]
    metrics = main[METRICS]
    pool = main[POOL]
    metrics.observe_pool(pool)
    db = CollectorRegistry(auto_describe=False)
    db.register(_Families(await database_families(pool, main[SETTINGS].metrics_stale_device_hours)))  # type: ignore[arg-type]
    body = generate_latest(metrics.registry) + generate_latest(db)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


METRICS = web.AppKey("metrics", Metrics)
SOURCE = web.AppKey("metrics_source", web.Application)


async def sample_loop_lag(metrics: Metrics) -> None:
    """Sleep 100 ms at a time and record how late each wake-up came: a busy or CPU-starved loop shows here first."""
    loop = asyncio.get_running_loop()
    worst, window_end = 0.0, loop.time() + 1.0
    while True:
        due = loop.time() + LAG_SAMPLE_S
        await asyncio.sleep(LAG_SAMPLE_S)
        now = loop.time()
        late = max(0.0, now - due)
        metrics.loop_lag.observe(late)
        worst = max(worst, late)
        if now >= window_end:
            metrics.loop_lag_max.set(worst)
            worst, window_end = 0.0, now + 1.0


async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """Serve /metrics on metrics_host:metrics_port (off when the port is unset/0) and refresh pool gauges."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    runner: web.AppRunner | None = None
    if settings.metrics_port:
        side = web.Application()
        side[SOURCE] = app
        side.router.add_get("/metrics", scrape)
        runner = web.AppRunner(side, access_log=None)
        await runner.setup()
        # Workers share the port like the main listener; any one of them answers for all (multiprocess files).
        site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port,
                          reuse_port=metrics.multiprocess or None)
        try:
            await site.start()
            log.info("metrics.listening", host=settings.metrics_host, port=settings.metrics_port)
        except OSError as exc:  # sync must keep working even if the metrics port is taken: say so loudly
            log.error("metrics.listen_failed", host=settings.metrics_host, port=settings.metrics_port, error=str(exc))
            await runner.cleanup()
            runner = None

    async def refresh() -> None:
        while True:
            metrics.observe_pool(app[POOL])
            await asyncio.sleep(POOL_REFRESH_S)

    task = asyncio.create_task(refresh()) if metrics.multiprocess else None
    lag = asyncio.create_task(sample_loop_lag(metrics))
    try:
        yield
    finally:
        lag.cancel()
        if task is not None:
            task.cancel()
        if runner is not None:
            await runner.cleanup()

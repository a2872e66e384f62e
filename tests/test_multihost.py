"""Several hosts behind a load balancer: two `fieldsync serve` processes with their own data dirs behind a real HAProxy,
sharing one PostgreSQL database and one S3-compatible store (moto's server), as in docs/operations.md."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import boto3
import msgpack
import pytest

from protocol import MSGPACK, PushResponse, decode
from protocol.live import LiveEvent
from sync_server.embedded_pg import EmbeddedPostgres
from tests.factories import World, build_world, make_tickets
from tests.infra import free_port, wait_port
from tests.syncclient import DeviceClient
from tests.test_blobs import moto_url  # noqa: F401  (module-scoped fixture: one moto server for this module)
from tests.test_live import Live
from tests.test_uploads_support import create, head_offset, noise_jpeg, patch, raw_patch_partial, sha

REPO = Path(__file__).resolve().parents[1]
HAPROXY = "/usr/sbin/haproxy"
SECRET = "shared-cursor-secret-for-both-hosts"
RETRYABLE = {502, 503, 504}


class Host:
    """One `fieldsync serve` process standing in for one machine: its own data dir and port, shared DB and bucket."""

    def __init__(self, name: str, root: Path, dsn: str, env: dict[str, str]) -> None:
        self.name, self.port = name, free_port()
        self.data_dir = root / name
        self.data_dir.mkdir(parents=True)
        self.log_path = root / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sync_server.cli", "serve", "--database-url", dsn, "--data-dir", str(self.data_dir),
             "--no-demo", "--port", str(self.port)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env,
        )

    async def ready(self) -> None:
        """Bounded wait for the serve.ready log line."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            if '"serve.ready"' in self.log_path.read_text():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready:\n" + self.log_path.read_text()[-2000:])

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, like a machine losing power."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, bounded, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def haproxy_config(port: int, hosts: list[Host]) -> str:
    """The configuration docs/operations.md shows, on loopback ports with fast health checks."""
    servers = "\n".join(f"    server {h.name} 127.0.0.1:{h.port} check inter 200ms fall 1 rise 1" for h in hosts)
    return f"""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    retries 3
    option redispatch 1
frontend fieldsync
    bind 127.0.0.1:{port}
    default_backend hosts
backend hosts
    balance roundrobin
    option forwardfor
    option httpchk GET /readyz
    retry-on conn-failure
{servers}
"""


@dataclass
class Deployment:
    """Two hosts, HAProxy in front, the bucket they share."""

    a: Host
    b: Host
    lb: str
    bucket: str
    s3: Any

    def keys(self, prefix: str) -> dict[str, int]:
        """Objects in the shared bucket under a prefix, read straight from S3."""
        page = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for o in page.get("Contents", [])}


@pytest.fixture(scope="module")
async def shared_db(pg_cluster: EmbeddedPostgres, template_db: str) -> AsyncIterator[str]:
    """One database for the module's deployment (starting two hosts per test would cost more than the tests)."""
    name = "mh_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    yield pg_cluster.dsn(name)
    admin = await asyncpg.connect(pg_cluster.dsn("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def pool(shared_db: str) -> AsyncIterator[asyncpg.Pool]:
    """The test's own view of the shared database."""
    p = await asyncpg.create_pool(shared_db, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="module")
async def world(pool: asyncpg.Pool) -> World:
    """Each test below uses its own devices, so their seqs never interleave."""
    return await build_world(pool)


@pytest.fixture(scope="module")
async def deployment(shared_db: str, moto_url: str, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
                     world: World) -> AsyncIterator[Deployment]:
    """Started once; the host-kill test runs last (module order) because it leaves one host."""
    tmp_path = tmp_path_factory.mktemp("multihost")
    db_dsn = shared_db
    bucket = f"city-{os.urandom(4).hex()}"
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    env.update({
        "FIELDSYNC_LOG_FORMAT": "json", "FIELDSYNC_METRICS_PORT": "0", "FIELDSYNC_BLOB_BACKEND": "s3",
        "FIELDSYNC_S3_BUCKET": bucket, "FIELDSYNC_S3_ENDPOINT_URL": moto_url, "FIELDSYNC_S3_REGION": "us-east-1",
        "FIELDSYNC_S3_ACCESS_KEY_ID": "test", "FIELDSYNC_S3_SECRET_ACCESS_KEY": "test",
        "FIELDSYNC_UPLOAD_PARTIALS": "store", "FIELDSYNC_CURSOR_SECRET": SECRET, "FIELDSYNC_LIVE_POLL_S": "120",
        "FIELDSYNC_RATE_LIMIT_TRUST_FORWARDED": "true",
        # production opens the whole pool before ready (20 connections per host: seconds of CPU on a loaded machine)
        "FIELDSYNC_POOL_MIN_SIZE": "2",
    })
    lb_port = free_port()
    env["FIELDSYNC_PUBLIC_URL"] = f"http://127.0.0.1:{lb_port}"  # what devices are told (tus Location)
    hosts = [Host(n, tmp_path, db_dsn, env) for n in ("a", "b")]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(lb_port, hosts))
    lb: subprocess.Popen[bytes] | None = None
    lb_log = open(tmp_path / "haproxy.log", "w")
    try:
        for h in hosts:
            await h.ready()
        lb = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=lb_log)
        await asyncio.to_thread(wait_port, lb_port, 10)
        yield Deployment(hosts[0], hosts[1], f"http://127.0.0.1:{lb_port}", bucket, s3)
    finally:
        if lb is not None:
            lb.kill()
            lb.wait(timeout=10)
        lb_log.close()
        for h in hosts:
            h.stop()


@pytest.mark.timeout(180)
async def test_upload_started_on_one_host_resumes_on_another(
    deployment: Deployment, pool: asyncpg.Pool, world: World
) -> None:
    d = deployment
    (t,) = await make_tickets(pool, world, 1)
    token = world.device("san-1").token
    photo = noise_jpeg(160, 120, seed=7)
    digest = sha(photo)
    half = len(photo) // 2
    async with aiohttp.ClientSession() as http:
        created = await create(http, d.lb, token, photo, t.ticket.id)
        assert created.status == 201
        location = created.headers["Location"]
        upload_id = location.rsplit("/", 1)[1]
        assert location == f"{d.lb}/v1/uploads/{upload_id}"  # the public URL, whichever host answered
        path = f"/v1/uploads/{upload_id}"
        first = await patch(http, d.a.url + path, token, 0, photo[:half])
        assert first.status == 204 and first.headers["Upload-Offset"] == str(half)
        # the acknowledged half is in the shared bucket, named by its byte range
        assert d.keys(f"photos/partials/{upload_id}/") == {f"photos/partials/{upload_id}/000000000000-{half:012d}": half}
        # host B never saw those bytes: it must find them in the bucket to take the rest
        assert not list((d.b.data_dir / "uploads").glob("*.part"))
        assert await head_offset(http, d.b.url + path, token) == (200, half)
        rest = await patch(http, d.b.url + path, token, half, photo[half:])
        assert rest.status == 204 and rest.headers["Upload-Offset"] == str(len(photo))
    stored = d.s3.get_object(Bucket=d.bucket, Key=f"photos/original/{digest[:2]}/{digest[2:4]}/{digest}")
    assert sha(stored["Body"].read()) == digest
    assert await pool.fetchval("SELECT size FROM blobs WHERE sha256 = $1", digest) == len(photo)
    assert await pool.fetchval("SELECT state FROM upload_sessions WHERE id = $1", upload_id) == "complete"
    assert d.keys("photos/partials/") == {}  # pieces are deleted once the photo is published


@pytest.mark.timeout(180)
async def test_cursor_from_one_host_is_valid_on_the_other_and_live_events_reach_both(
    deployment: Deployment, pool: asyncpg.Pool, world: World
) -> None:
    d = deployment
    (t,) = await make_tickets(pool, world, 1)
    async with aiohttp.ClientSession() as http:
        sup_a = await Live.connect(http, d.a.url, world.supervisors["sanitation"])
        sup_b = await Live.connect(http, d.b.url, world.supervisors["sanitation"])
        await sup_a.ready()
        await sup_b.ready()
        on_a = DeviceClient(http, d.a.url, world.device("san-1", 1).token)
        await on_a.pull()
        cursor = on_a.replica.cursor
        assert t.ticket.id in on_a.replica.tickets
        await on_a.push([on_a.mutation("acknowledge", t.ticket.id)])
        # the same device continues on host B with host A's cursor: an incremental page, not an error or a reset
        on_b = DeviceClient(http, d.b.url, world.device("san-1", 1).token)
        page = await on_b.pull_once(cursor)
        assert page.reset is False
        assert [(c.ticket.id, c.ticket.status) for c in page.changes] == [(t.ticket.id, "acknowledged")]  # type: ignore[union-attr]
        # the push went through host A; both hosts' supervisor sockets get the event (NOTIFY, not the 120 s poll)
        for sup in (sup_a, sup_b):
            got = await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket is not None
                                  and m.ticket.id == t.ticket.id and m.ticket.status == "acknowledged")
            assert got[-1].ticket.version == 2
        await sup_a.close()
        await sup_b.close()


async def _push_until_done(dev: DeviceClient, batch: list[dict[str, object]], errors: list[int | str]) -> PushResponse:
    """A device's outbox drain: resend the same batch on retryable failures (bounded), like the real clients."""
    for _ in range(40):
        try:
            status, body = await dev.raw("/v1/sync/push", msgpack.packb({"mutations": batch}))
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            errors.append(type(exc).__name__)
        else:
            if status == 200:
                return decode(body, MSGPACK, PushResponse)
            assert status in RETRYABLE, body[:300]  # HAProxy's 502/503 page, or the server's typed 503
            errors.append(status)
        await asyncio.sleep(0.2)
    raise AssertionError(f"push never succeeded: {errors}")


def _note(c: DeviceClient, ticket_id: UUID, device_id: str, n: int) -> dict[str, object]:
    return c.mutation("add_note", ticket_id, {"note_id": str(uuid.uuid4()), "text": f"{device_id} note {n}"})


@pytest.mark.timeout(180)
async def test_host_killed_mid_request_costs_only_retries(deployment: Deployment, pool: asyncpg.Pool, world: World) -> None:
    d = deployment
    (t,) = await make_tickets(pool, world, 1, crew="san-2")
    devices = [world.device("san-2", 0), world.device("san-2", 1)]
    errors: list[int | str] = []
    timeout = aiohttp.ClientTimeout(total=20)
    photo = noise_jpeg(200, 150, seed=11)
    half = len(photo) // 2
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as http:
        clients = [DeviceClient(http, d.lb, dev.token) for dev in devices]
        for c in clients:
            await c.pull()
        # a photo upload on host A: half acknowledged, and the rest streaming (body half sent) when A dies
        created = await create(http, d.a.url, devices[0].token, photo, t.ticket.id)
        path = "/v1/uploads/" + created.headers["Location"].rsplit("/", 1)[1]
        assert (await patch(http, d.a.url + path, devices[0].token, 0, photo[:half])).status == 204
        streaming = await raw_patch_partial(d.a.url, path, devices[0].token, half, len(photo) - half,
                                            photo[half:half + 1000], close=False)
        batches = [[_note(c, t.ticket.id, dev.device_id, n) for n in range(1, 4)] for c, dev in zip(clients, devices)]
        # hold the ticket row so every push blocks inside its transaction on whichever host HAProxy chose
        async with pool.acquire() as blocker:
            tx = blocker.transaction()
            await tx.start()
            try:
                await blocker.execute("SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", t.ticket.id)
                pushes = [asyncio.create_task(_push_until_done(c, b, errors)) for c, b in zip(clients, batches)]
                waiting = 0
                for _ in range(200):  # both requests are inside the database, one on each host (round robin)
                    waiting = await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()")
                    if waiting == 2:
                        break
                    await asyncio.sleep(0.05)
                assert waiting == 2
                d.a.kill()  # mid-request: its push is waiting on the row lock, uncommitted
            finally:
                await tx.rollback()
        results = await asyncio.wait_for(asyncio.gather(*pushes), 30)
        # every seq has exactly one final result, and later pushes through the survivor work as usual
        for r in results:
            assert [x.seq for x in r.results] == [1, 2, 3]
            assert {x.status for x in r.results} == {"applied"}
        for c, dev in zip(clients, devices):
            more = await _push_until_done(c, [_note(c, t.ticket.id, dev.device_id, 4)], errors)
            assert [x.seq for x in more.results] == [4]
        # the upload resumes on B at the last acknowledged offset (A's streaming bytes were never acknowledged,
        # and A's write lease died with its database connection), and completes there
        assert streaming is not None
        streaming[1].close()
        assert await head_offset(http, d.b.url + path, devices[0].token) == (200, half)
        rest = await patch(http, d.b.url + path, devices[0].token, half, photo[half:])
        assert rest.status == 204 and rest.headers["Upload-Offset"] == str(len(photo))
    assert await pool.fetchval("SELECT size FROM blobs WHERE sha256 = $1", sha(photo)) == len(photo)
    assert errors, "the killed host's request was answered without any retry"
    assert set(errors) <= RETRYABLE | {"ServerDisconnectedError", "ClientOSError", "ClientConnectorError"}
    rows = await pool.fetch("SELECT text FROM ticket_notes WHERE ticket_id = $1", t.ticket.id)
    texts = sorted(r["text"] for r in rows)
    expected = sorted(f"{dev.device_id} note {n}" for dev in devices for n in range(1, 5))
    assert texts == expected  # nothing lost, nothing applied twice
    for dev in devices:
        assert await pool.fetchval("SELECT last_seq FROM devices WHERE id = $1", dev.device_id) == 4

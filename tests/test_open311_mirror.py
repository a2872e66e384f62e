"""`fieldsync open311-mirror` between two FieldSync servers on 127.0.0.1 with their own databases: B mirrors A's
open requests into tickets through its own intake and rules, exactly once, resuming from its stored position after
a bounded (interrupted) run; updates upstream are noted, closed-upstream newcomers skipped; the CLI runs once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from collections.abc import AsyncIterator
from pathlib import Path
import aiohttp
import asyncpg
import pytest

from sync_server.embedded_pg import EmbeddedPostgres
from sync_server.open311.mirror import mirror_once
from sync_server.settings import Settings
from tests.conftest import Server, scratch_database, start_server
from tests.factories import World, build_world
from tests.syncclient import DeviceClient
from tests.test_open311 import http, post_form  # noqa: F401 - fixture
from tests.test_supervisor_api import Api

__all__ = ["http"]
NO_LAG = timedelta(0)


@pytest.fixture
async def b_dsn(pg_cluster: EmbeddedPostgres, template_db: str) -> AsyncIterator[str]:
    """A second city database on the same cluster (the mirror's own)."""
    async with scratch_database(pg_cluster, "m_", template_db) as dsn:
        yield dsn


@pytest.fixture
async def b_pool(b_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(b_dsn, min_size=1, max_size=5)
    try:
        yield p
    finally:
        await p.close()


async def post(http: aiohttp.ClientSession, url: str, key: str, code: str, address: str, text: str) -> str:  # noqa: F811
    status, body, _ = await post_form(http, url, {"api_key": key, "service_code": code, "address_string": address,
                                                 "description": text})
    assert status == 201, body
    return str(body[0]["service_request_id"])


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_b_mirrors_a_exactly_once_and_resumes(
    server: Server, world: World, pool: asyncpg.Pool, b_pool: asyncpg.Pool, b_dsn: str, settings: Settings,
    tmp_path: Path, http: aiohttp.ClientSession,  # noqa: F811
) -> None:
    admin_a = Api(http, server.url, world.admin)
    _, key = await admin_a.call("POST", "/v1/api-keys", {"name": "app", "rate_per_minute": 100})
    await admin_a.call("POST", "/v1/dispatch-rules", {"service_type": "graffiti_removal", "crew": "san-2"})
    upstream = [await post(http, server.url, key["api_key"], "bulky_items", f"{n} Main St 90012", f"sofa {n}")
                for n in range(1, 5)]
    upstream.append(await post(http, server.url, key["api_key"], "graffiti_removal", "9 Main St 90013", "tag on wall"))
    # One of A's requests is finished by A's crew before B ever sees it: B must not create work for it.
    dev = DeviceClient(http, server.url, world.device("san-2").token)
    await dev.pull()
    (done,) = [t for t, tk in dev.replica.tickets.items() if tk.sr_number == upstream[4]]
    resp = await dev.push([dev.mutation("acknowledge", done), dev.mutation("start", done),
                           dev.mutation("complete", done, {"resolution_code": "painted_over"})])
    assert [r.status for r in resp.results] == ["applied"] * 3

    world_b = await build_world(b_pool, devices_per_crew=1)
    srv_b = await start_server(settings.model_copy(update={"data_dir": tmp_path / "b",
                                                           "open311_sr_format": "B-{seq:05d}"}), b_dsn)
    try:
        admin_b = Api(http, srv_b.url, world_b.admin)
        await admin_b.call("POST", "/v1/dispatch-rules", {"service_type": "bulky_items", "zip": "90012", "crew": "san-1"})
        endpoint = server.url + "/open311/v2"
        # The mirror stays 2 s behind the upstream clock (writers stamp updated_at before commit); every write here
        # has committed, so the test reads up to now (lag=0) instead of sleeping.
        # A bounded run (as if the process died after two pages) stores its position...
        first = await mirror_once(b_pool, http, endpoint, sr_format="B-{seq:05d}", page_size=2, max_pages=2,
                                  lag=NO_LAG)
        # updated_datetime has whole seconds and the position is inclusive, so page 2 re-reads what page 1 read in
        # its last second: 2 new (all posts in one second) or 3 (page 1 straddled a second boundary).
        assert first.pages == 2 and first.created in (2, 3) and first.created + first.unchanged == 4
        stored = await b_pool.fetchval("SELECT updated_after FROM open311_mirror_state WHERE endpoint = $1", endpoint)
        assert stored == first.position and stored is not None
        # ... and the next run resumes there: every open request exactly once, the closed one skipped.
        second = await mirror_once(b_pool, http, endpoint, sr_format="B-{seq:05d}", page_size=2, lag=NO_LAG)
        assert first.created + second.created == 4 and second.skipped == {"closed_upstream": 1}
        rows = await b_pool.fetch(
            "SELECT m.service_request_id, t.sr_number, t.status, c.name AS crew, t.description FROM open311_mirror_items m"
            " JOIN tickets t ON t.id = m.ticket_id LEFT JOIN crews c ON c.id = t.crew_id ORDER BY m.service_request_id")
        assert [r["service_request_id"] for r in rows] == sorted(upstream[:4])
        assert {r["crew"] for r in rows} == {"san-1"}  # B's own rule routed them
        assert {r["status"] for r in rows} == {"assigned"}
        assert sorted(r["description"] for r in rows) == ["sofa 1", "sofa 2", "sofa 3", "sofa 4"]
        assert all(r["sr_number"].startswith("B-") for r in rows)
        # Nothing new upstream: a third run creates nothing. An update upstream is noted, not duplicated.
        # A's supervisor cancels another: B cancels its open copy (audited), the crew's devices lose it.
        # Open311 datetimes carry whole seconds, so an upstream update in the same second as the request's last one is
        # indistinguishable by its timestamp: move past that second first (on a fast machine this run takes < 1 s).
        await asyncio.sleep(1.1)
        await pool.execute("UPDATE tickets SET updated_at = now(), version = version + 1 WHERE sr_number = $1",
                           upstream[0])
        a_id = await pool.fetchval("SELECT id FROM tickets WHERE sr_number = $1", upstream[1])
        status, _ = await Api(http, server.url, world.supervisors["sanitation"]).call(
            "POST", f"/v1/tickets/{a_id}/cancel", {"reason": "resident withdrew"})
        assert status == 200
        third = await mirror_once(b_pool, http, endpoint, sr_format="B-{seq:05d}", page_size=2, lag=NO_LAG)
        assert (third.created, third.updated, third.closed) == (0, 2, 1)
        assert await b_pool.fetchval("SELECT count(*) FROM tickets") == 4
        b_status = await b_pool.fetchval("SELECT t.status FROM open311_mirror_items m JOIN tickets t ON t.id = m.ticket_id"
                                         " WHERE m.service_request_id = $1", upstream[1])
        assert b_status == "cancelled"
        assert await b_pool.fetchval("SELECT reason FROM audit_log WHERE action = 'cancel'") == \
            f"closed upstream ({upstream[1]})"
        # B serves them over Open311 like its own.
        async with http.get(srv_b.url + "/open311/v2/requests.json?status=open") as r:
            assert sorted(x["description"] for x in await r.json()) == ["sofa 1", "sofa 3", "sofa 4"]
        # The CLI, once, as an operator runs it: nothing new, exit 0, a JSON report on stdout.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sync_server.cli", "open311-mirror", "--endpoint", endpoint, "--once", "--json",
            "--database-url", b_dsn, "--data-dir", str(tmp_path / "cli"), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert (report["created"], report["skipped"]) == (0, {})
        assert await b_pool.fetchval("SELECT count(*) FROM tickets") == 4
    finally:
        await srv_b.runner.cleanup()


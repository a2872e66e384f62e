"""Done-when of issue 15: a new city is set up on an empty external database with only the README's commands
(read from its new-city block, run as real subprocesses), then a device syncs against the server they started."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from sync_server.embedded_pg import EmbeddedPostgres
from tests.conftest import scratch_database
from tests.syncclient import DeviceClient
from tests.test_cli import CLI, REPO, _env, _events, _run

README = REPO / "README.md"


def readme_commands() -> list[list[str]]:
    """The `fieldsync ...` lines of the README's new-city block, split like a shell would (comments dropped)."""
    text = README.read_text()
    block = text[text.index("<!-- new-city:start -->"):text.index("<!-- new-city:end -->")]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("fieldsync ")]


@pytest.fixture
async def empty_db(pg_cluster: EmbeddedPostgres) -> AsyncIterator[str]:
    """A brand-new database with no schema at all (not the migrated template), as a city's DBA would hand over."""
    async with scratch_database(pg_cluster, "city_") as dsn:
        yield dsn


def _field(out: str, key: str) -> str:
    """`key: value` from a command's human output."""
    m = re.search(rf"^{key}: (\S+)$", out, re.MULTILINE)
    assert m, out
    return m.group(1)


async def test_a_new_city_from_an_empty_database_with_only_readme_commands(empty_db: str, tmp_path: Path) -> None:
    commands = readme_commands()
    assert [c[1] for c in commands] == ["migrate", "admin", "department", "service-type", "crew", "user", "device", "serve"]
    env = _env(FIELDSYNC_DATABASE_URL=empty_db, FIELDSYNC_DATA_DIR=str(tmp_path / "data"))
    outputs = []
    for cmd in commands[:-1]:
        code, out, err = await _run(*cmd[1:], env=env)
        assert code == 0, (cmd, err[-2000:])
        outputs.append(out)
    admin_token = _field(outputs[1], "token")
    supervisor_token = _field(outputs[5], "token")
    device_token = _field(outputs[6], "token")
    assert admin_token.startswith("fsu_") and supervisor_token.startswith("fsu_") and device_token.startswith("fsd_")

    serve = commands[-1][1:]
    serve[serve.index("--host") + 1], serve[serve.index("--port") + 1] = "127.0.0.1", "0"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*CLI, *serve], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            url = await _wait_ready(proc, log_path)
            await _sync_a_device(url, supervisor_token, device_token, admin_token)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    events = _events(log_path.read_text())
    assert not any(e["event"] in ("demo.seeded", "serve.demo_credentials") for e in events)
    conn = await asyncpg.connect(empty_db)
    try:  # exactly the city the commands described, no demo data next to it
        assert await conn.fetchval("SELECT array_agg(name) FROM crews") == ["san-ev"]
        assert await conn.fetchval("SELECT array_agg(code) FROM departments") == ["sanitation"]
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE actor LIKE 'cli:%'") == 6
    finally:
        await conn.close()


async def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    """Bounded wait for serve.ready; returns the URL."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-2000:]
        for ev in _events(log_path.read_text()):
            if ev.get("event") == "serve.ready":
                return str(ev["url"])
        await asyncio.sleep(0.2)
    raise AssertionError("server not ready in 60 s:\n" + log_path.read_text()[-2000:])


async def _sync_a_device(url: str, supervisor: str, device: str, admin: str) -> None:
    """A supervisor creates work for the crew; the device reads the catalogue, pulls, completes it, converges."""
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/crews", headers={"Authorization": f"Bearer {admin}"}) as r:
            assert r.status == 200
            crews = (await r.json())["crews"]
        assert [(c["name"], c["display_name"], c["devices"]) for c in crews] == [("san-ev", "Sanitation East Valley", 1)]
        async with http.post(url + "/v1/tickets", headers={"Authorization": f"Bearer {supervisor}"},
                             json={"service_type": "bulky_items", "address": "1200 W 7th St", "crew": "san-ev",
                                   "sr_number": "1-1523590121"}) as r:
            assert r.status == 201, await r.text()
        async with http.get(url + "/v1/catalog", headers={"Authorization": f"Bearer {device}",
                                                          VERSION_HEADER: str(PROTOCOL_VERSION)}) as r:
            catalog = await r.json()
        assert catalog["department"] == "sanitation"
        assert [(s["code"], s["resolution_codes"], s["reason_codes"]) for s in catalog["service_types"]] == [
            ("bulky_items", ["collected", "partial"], ["items_not_out", "no_access"])]
        dev = DeviceClient(http, url, device)
        await dev.pull()
        (ticket,) = dev.replica.tickets.values()
        assert (ticket.sr_number, ticket.status.value, ticket.crew) == ("1-1523590121", "assigned", "san-ev")
        resp = await dev.push([dev.mutation("start", ticket.id),
                               dev.mutation("complete", ticket.id, {"resolution_code": catalog["service_types"][0]["resolution_codes"][0]})])
        assert [r.status.value for r in resp.results] == ["applied", "applied"]
        pages = await dev.pull()
        assert dev.replica.tickets[ticket.id].status.value == "completed"
        assert dev.replica.local_checksum() == pages[-1].scope_checksum  # converged (I4)

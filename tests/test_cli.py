"""The `fieldsync` command as an operator runs it: real subprocesses, the embedded cluster or a URL, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from protocol import ErrorCode, ProtocolError
from sync_server.auth import Role, authenticate
from sync_server.cli import build_parser, settings_from
from tests.factories import World

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "tests" / "data" / "la311_slice.csv"
CLI = [sys.executable, "-m", "sync_server.cli"]


def _env(**extra: str) -> dict[str, str]:
    """A clean FIELDSYNC_* environment, so the developer's own settings never leak into a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    # a server opens pool_min_size connections before it is ready (default: all of them); a test needs a few
    env.update(FIELDSYNC_LOG_FORMAT="json", FIELDSYNC_POOL_MIN_SIZE="2", **extra)
    return env


async def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    """Run the CLI without blocking the test loop (the server fixtures live on it)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=REPO, env=env or _env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A data dir parent the `postgres` user can traverse when tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="fs-cli-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _events(stderr: str) -> list[dict[str, Any]]:
    """JSON log lines of a run."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


class ServeProcess:
    """`fieldsync serve` in the background, its stderr collected to a file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"serve-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--data-dir", str(data_dir), "--port", "0"], cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log, env=_env(FIELDSYNC_DEMO_TICKETS="200"),
        )

    async def wait_ready(self) -> str:
        """Bounded wait for the serve.ready log line; returns the server URL."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            for ev in _events(self.log_path.read_text()):
                if ev.get("event") == "serve.ready":
                    return str(ev["url"])
            await asyncio.sleep(0.2)
        raise AssertionError("server not ready in 90 s:\n" + self.log_path.read_text()[-2000:])

    def stop(self) -> int:
        """SIGTERM, as systemd or docker would send, and the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _cluster_running(data_dir: Path) -> bool:
    pidfile = (data_dir / "pg").resolve() / "postmaster.pid"
    return pidfile.exists() and Path(f"/proc/{pidfile.read_text().split()[0]}").exists()


async def test_serve_end_to_end_with_demo_data(data_root: Path) -> None:
    data_dir = data_root / "data"
    first = ServeProcess(data_dir)
    try:
        url = await first.wait_ready()
        creds = json.loads((data_dir / "demo-credentials.json").read_text())
        assert set(creds) == {"server", "admin", "supervisors", "devices"}
        assert creds["server"] == url and url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert {s["department"] for s in creds["supervisors"]} == {
            "sanitation", "street_services", "street_lighting", "community_beautification"}
        assert all(set(d) == {"device_id", "crew", "department", "token"} for d in creds["devices"])
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/readyz") as r:
                assert r.status == 200
            sup = next(s for s in creds["supervisors"] if s["department"] == "sanitation")
            async with http.get(url + "/v1/crews", headers={"Authorization": f"Bearer {sup['token']}"}) as r:
                assert r.status == 200
                body = await r.json()
            crews = {c["name"] for c in body["crews"]}
            assert crews and all(c.startswith("san-") for c in crews)  # a supervisor sees only their department
            device = creds["devices"][0]
            async with http.get(url + "/v1/crews", headers={"Authorization": f"Bearer {device['token']}"}) as r:
                assert r.status == 403  # authenticated as a device, but not allowed here
            async with http.get(url + "/v1/crews", headers={"Authorization": "Bearer fsd_not-a-token"}) as r:
                assert r.status == 401
        events = _events(first.log_path.read_text())
        shown = next(e for e in events if e["event"] == "serve.demo_credentials")
        assert shown["file"] == str((data_dir / "demo-credentials.json").absolute()) and shown["url"] == url
        log_text = first.log_path.read_text()
        tokens = [creds["admin"]["token"], *(s["token"] for s in creds["supervisors"]), *(d["token"] for d in creds["devices"])]
        assert not [t for t in tokens if t in log_text]  # never a token in the log
        assert "fsu_" not in log_text and "fsd_" not in log_text
        assert (data_dir / "demo-credentials.json").stat().st_mode & 0o777 == 0o600
        assert any(e["event"] == "demo.seeded" and e["tickets"] == 200 for e in events)
        assert first.stop() == 0
    finally:
        first.kill()
    assert not _cluster_running(data_dir)
    assert any(e["event"] == "embedded_pg.stopped" for e in _events(first.log_path.read_text()))

    second = ServeProcess(data_dir)
    try:
        url2 = await second.wait_ready()
        creds2 = json.loads((data_dir / "demo-credentials.json").read_text())
        assert creds2["server"] == url2
        assert {k: v for k, v in creds2.items() if k != "server"} == {k: v for k, v in creds.items() if k != "server"}
        async with aiohttp.ClientSession() as http:
            async with http.get(url2 + "/v1/crews", headers={"Authorization": f"Bearer {creds['admin']['token']}"}) as r:
                assert r.status == 200  # the first run's tokens still work: same data, not re-seeded
                body = await r.json()
        assert sum(c["open_tickets"] for c in body["crews"]) <= 200
        events = _events(second.log_path.read_text())
        assert not any(e["event"] in ("demo.seeded", "embedded_pg.initialised") for e in events)
        assert second.stop() == 0
    finally:
        second.kill()
    assert not _cluster_running(data_dir)


async def test_device_enroll_and_revoke_through_the_cli(db_dsn: str, pool: asyncpg.Pool, world: World) -> None:
    code, out, err = await _run("device", "enroll", "--crew", "san-2", "--label", "truck 7", "--database-url", db_dsn)
    assert code == 0, err
    fields = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert fields["crew"] == "san-2" and fields["token"].startswith("fsd_")
    async with pool.acquire() as conn:
        who = await authenticate(conn, "Bearer " + fields["token"])
    assert (who.role, who.device_id, who.crew_id) == (Role.DEVICE, fields["device_id"], world.crews["san-2"])

    code, out, err = await _run("device", "revoke", fields["device_id"], "--database-url", db_dsn)
    assert code == 0, err
    async with pool.acquire() as conn:
        with pytest.raises(ProtocolError) as exc:
            await authenticate(conn, "Bearer " + fields["token"])
    assert exc.value.code is ErrorCode.TOKEN_REVOKED

    code, _, err = await _run("device", "enroll", "--crew", "no-such-crew", "--database-url", db_dsn)
    assert code == 2 and err.strip().splitlines()[-1].startswith("fieldsync: error:") and "Traceback" not in err


async def test_user_create_prints_a_working_supervisor_token(db_dsn: str, pool: asyncpg.Pool, world: World) -> None:
    code, out, err = await _run("user", "create", "--name", "Ana", "--role", "supervisor", "--department",
                                "street_services", "--database-url", db_dsn)
    assert code == 0, err
    token = out.strip().splitlines()[-1].removeprefix("token: ")
    async with pool.acquire() as conn:
        who = await authenticate(conn, "Bearer " + token)
    assert (who.role, who.department_id) == (Role.SUPERVISOR, world.departments["street_services"])
    code, _, err = await _run("user", "create", "--name", "Bo", "--role", "supervisor", "--database-url", db_dsn)
    assert code == 2 and "--department" in err


async def test_import_json_prints_exactly_one_object_with_the_five_keys(db_dsn: str) -> None:
    code, out, err = await _run("import-311", str(SLICE), "--json", "--database-url", db_dsn)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    summary = json.loads(out)
    assert set(summary) == {"read", "inserted", "updated", "unchanged", "rejected"}
    assert summary["read"] == summary["inserted"] + summary["rejected"] and summary["rejected"] > 0
    rejected_lines = [line for line in err.splitlines() if ": rejected: " in line]
    assert len(rejected_lines) == summary["rejected"]
    assert all(line.startswith("la311_slice.csv:") for line in rejected_lines)
    code, out, _ = await _run("import-311", str(SLICE), "--json", "--database-url", db_dsn)
    again = json.loads(out)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, summary["inserted"])


async def test_import_against_the_embedded_default_starts_and_stops_the_cluster(data_root: Path) -> None:
    code, out, err = await _run("import-311", str(SLICE), "--data-dir", str(data_root / "d"))
    assert code == 0, err
    assert out.startswith("read ") and "inserted" in out
    assert not _cluster_running(data_root / "d")


async def test_missing_postgres_binaries_is_one_line_and_exit_2(data_root: Path) -> None:
    code, out, err = await _run("serve", "--data-dir", str(data_root / "d"),
                                env=_env(FIELDSYNC_PG_BIN_DIR=str(data_root / "no-bin")))
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("fieldsync: error: no initdb/pg_ctl/postgres")


def test_no_postgres_installed_at_all(data_root: Path) -> None:
    """Hide every PostgreSQL install in a private mount namespace (root only), as on a machine without the package."""
    script = "mount -t tmpfs none /usr/lib/postgresql && exec \"$@\""
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs root and mount namespaces to hide /usr/lib/postgresql")
    res = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", *CLI, "migrate", "--data-dir", str(data_root / "d")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "install them" in res.stderr and "--database-url" in res.stderr


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIELDSYNC_PORT", "9999")
    monkeypatch.setenv("FIELDSYNC_HOST", "0.0.0.0")
    monkeypatch.setenv("FIELDSYNC_DEMO_TICKETS", "17")
    s = settings_from(build_parser().parse_args(["serve", "--port", "0", "--data-dir", str(tmp_path), "--no-demo"]))
    assert (s.port, s.host, s.data_dir, s.demo_data, s.demo_tickets) == (0, "0.0.0.0", tmp_path, False, 17)


async def test_demo_data_only_on_the_embedded_default_unless_asked(db_dsn: str, tmp_path: Path) -> None:
    """A fresh production database given by URL is never filled with a fake city; --demo opts in; the embedded default seeds."""
    from sync_server.cli import prepare
    from sync_server.runtime import Database
    from sync_server.settings import Settings

    assert Settings(data_dir=tmp_path).wants_demo() is True
    assert Settings(data_dir=tmp_path, database_url=db_dsn).wants_demo() is False
    assert settings_from(build_parser().parse_args(["serve", "--database-url", db_dsn, "--demo"])).wants_demo() is True
    assert settings_from(build_parser().parse_args(["serve", "--no-demo"])).wants_demo() is False
    external = Settings(data_dir=tmp_path / "a", database_url=db_dsn, demo_tickets=20)
    assert await prepare(external, Database(db_dsn)) is None
    conn = await asyncpg.connect(db_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM crews") == 0
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
        assert not (tmp_path / "a" / "demo-credentials.json").exists()
        opted_in = external.model_copy(update={"demo_data": True})
        creds = await prepare(opted_in, Database(db_dsn))
        assert creds is not None and await conn.fetchval("SELECT count(*) FROM tickets") == 20
        # a database that is set up already is never seeded again
        assert await prepare(opted_in, Database(db_dsn)) is None
        assert await conn.fetchval("SELECT count(*) FROM tickets") == 20
    finally:
        await conn.close()

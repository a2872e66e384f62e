"""The TypeScript device library (clients/js) against a real server: its conformance suite, and the Python simulator
on the same server, must both pass — two independent implementations of SPEC.md agreeing on the protocol."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clients.sim.cli import simulate
from clients.sim.config import SimConfig
from tests.conftest import Server
from tests.factories import World

JS = Path(__file__).resolve().parents[1] / "clients" / "js"
CONFORMANCE_TESTS = 8  # the number of `it(...)` in clients/js/test/conformance/protocol.test.ts


def node_modules() -> Path:
    """The pinned npm dependencies (package-lock.json); installed here if CI's build step did not already."""
    vitest = JS / "node_modules" / ".bin" / "vitest"
    if not vitest.exists():
        npm = shutil.which("npm")
        assert npm is not None, "Node 20 and npm are required for the JS client tests"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, stdin=subprocess.DEVNULL, timeout=600)
    return vitest


def credentials(server: Server, world: World) -> dict[str, Any]:
    """The demo-credentials.json shape the JS conformance setup reads, for the test world."""
    return {
        "server": server.url,
        "admin": {"token": world.admin},
        "supervisors": [{"department": d, "token": t} for d, t in world.supervisors.items()],
        "service_types": {"sanitation": "Bulky Items", "street_services": "Pothole Repair"},
        "devices": [],
    }


async def run_conformance(server: Server, world: World, tmp: Path) -> dict[str, Any]:
    """Run the vitest conformance project against `server` without blocking the loop that serves it."""
    vitest = node_modules()
    creds = tmp / "credentials.json"
    creds.write_text(json.dumps(credentials(server, world)))
    out = tmp / "vitest.json"
    env = {**os.environ, "FIELDSYNC_CREDENTIALS": str(creds), "CI": "true"}
    proc = await asyncio.create_subprocess_exec(
        str(vitest), "run", "--project", "conformance", "--reporter=json", f"--outputFile={out}",
        cwd=JS, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with asyncio.timeout(240):
            log, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    failures = [a["fullName"] + ": " + "; ".join(a.get("failureMessages", []))[:800]
                for f in report.get("testResults", []) for a in f.get("assertionResults", []) if a["status"] != "passed"]
    assert proc.returncode == 0, failures or log.decode(errors="replace")[-3000:]
    return report


async def test_js_library_conforms_to_the_protocol_on_a_live_server(server: Server, world: World, tmp_path: Path) -> None:
    report = await run_conformance(server, world, tmp_path)
    assert report["numPassedTests"] == CONFORMANCE_TESTS
    assert report["numFailedTests"] == 0


@pytest.mark.slow
async def test_simulator_and_js_library_agree_on_one_server(server: Server, world: World, tmp_path: Path) -> None:
    cfg = SimConfig(devices=8, duration_s=8, seed=3, fault_rate=0.1, offline_fraction=0.3, photo_rate=0.3,
                    supervisor_rate=20, step_s=0.5, progress=False, quiesce_timeout_s=40)
    rep, _, _ = await simulate(cfg, credentials(server, world))
    assert rep["ok"], rep["examples"]
    assert rep["mutations_applied"] > 0 and (rep["lost"], rep["duplicated"], rep["diverged_devices"]) == (0, 0, 0)
    # the same server, after a faulty simulated shift, still passes every check of the second implementation
    report = await run_conformance(server, world, tmp_path)
    assert report["numPassedTests"] == CONFORMANCE_TESTS and report["numFailedTests"] == 0

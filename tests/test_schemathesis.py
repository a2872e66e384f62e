"""OpenAPI conformance checked by a tool nobody here wrote (issue 15.7): schemathesis `--checks all` against a live
server, once with a device token and once with a staff token, must report nothing. Bounded: few examples per
operation, a hard time limit. The full run is `st run URL/openapi.json --checks all -H "Authorization: Bearer T"`
from the repository root (schemathesis.toml lists the business-rule refusals each operation documents)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg

from tests.conftest import Server
from tests.factories import World, make_tickets

ROOT = Path(__file__).resolve().parent.parent
ST = Path(sys.executable).parent / "st"


async def st_run(server: Server, token: str) -> tuple[int, str]:
    """One bounded schemathesis run; returns (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        str(ST), "run", server.url + "/openapi.json", "--checks", "all", "-H", f"Authorization: Bearer {token}",
        "--phases", "fuzzing", "--max-examples", "2", "--generation-deterministic", "--no-color",
        "--request-timeout", "10",
        # Open311 GeoReport routes included: their XML/JSON answers and error lists are documented as they are
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def test_openapi_conformance_device_then_staff(server: Server, pool: asyncpg.Pool, world: World) -> None:
    await make_tickets(pool, world, 3)
    # device first: the staff run may revoke devices it finds (POST /v1/devices/{id}/revoke is a valid request)
    for who, token in (("device", world.device("san-1").token), ("staff", world.admin)):
        code, out = await st_run(server, token)
        assert code == 0, f"schemathesis ({who} token) reported failures:\n{out[out.find('FAILURES'):][:6000]}"
        assert "passed" in out


async def test_undeclared_methods_answer_405_with_allow_on_every_path(server: Server, world: World) -> None:
    """RFC 9110: a 405 names the allowed methods; TRACE (never served) on every path, without and with a token."""
    from sync_server.api.registry import ROUTES
    from tests.rawhttp import send

    paths: dict[str, set[str]] = {}
    for d in server.app[ROUTES]:
        concrete = re.sub(r"\{([^}]+)\}", lambda m: "json" if m.group(1) == "fmt" else
                          "00000000-0000-4000-8000-000000000000", d.path)
        paths.setdefault(concrete, set()).add(d.method)
    assert len(paths) > 20
    for path, methods in paths.items():
        for headers in ({}, {"Authorization": f"Bearer {world.admin}"}):
            r = await send(server.url, "TRACE", path, headers)
            assert r.status == 405, (path, r.status, r.body[:200])
            allowed = {m.strip() for m in r.headers["allow"].split(",")}
            assert methods <= allowed, (path, methods, allowed)
            assert "TRACE" not in allowed

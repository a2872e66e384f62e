"""`fieldsync api-key` and `fieldsync dispatch-rule` as an operator runs them (real subprocesses on a database URL):
the same audited use cases as the admin API; a key issued here works for POST, a revoked one is 403."""

from __future__ import annotations

import json

import aiohttp
import asyncpg

from tests.conftest import Server
from tests.factories import World
from tests.test_cli import _env, _run


async def test_api_key_and_dispatch_rule_commands(server: Server, world: World, pool: asyncpg.Pool, db_dsn: str) -> None:
    env = _env(FIELDSYNC_DATABASE_URL=db_dsn)
    code, out, err = await _run("api-key", "issue", "kiosk", "--rate", "5", "--json", env=env)
    assert code == 0, err
    issued = json.loads(out)
    assert (issued["name"], issued["rate_per_minute"]) == ("kiosk", 5) and issued["api_key"].startswith("fsk_")
    code, out, err = await _run("dispatch-rule", "add", "--crew", "ss-1", "--service-type", "pothole_repair",
                                "--polygon", "[[-118.3, 34.0], [-118.2, 34.0], [-118.2, 34.1], [-118.3, 34.1]]",
                                "--json", env=env)
    assert code == 0, err
    rule = json.loads(out)
    assert (rule["crew"], rule["service_type"], len(rule["polygon"])) == ("ss-1", "pothole_repair", 4)
    # A rule whose crew is in another department than its service type is refused: exit 2, one line, nothing stored.
    code, _, err = await _run("dispatch-rule", "add", "--crew", "san-1", "--service-type", "pothole_repair", env=env)
    assert code == 2 and "another department" in err
    assert await pool.fetchval("SELECT count(*) FROM dispatch_rules") == 1

    async with aiohttp.ClientSession() as http:
        fields = {"api_key": issued["api_key"], "service_code": "pothole_repair", "lat": "34.05", "long": "-118.25",
                  "description": "pothole inside the polygon"}
        async with http.post(server.url + "/open311/v2/requests.json", data=fields) as r:
            assert r.status == 201
            sr = (await r.json())[0]["service_request_id"]
        assert await pool.fetchval("SELECT c.name FROM tickets t JOIN crews c ON c.id = t.crew_id"
                                   " WHERE t.sr_number = $1", sr) == "ss-1"
        code, out, _ = await _run("api-key", "list", "--json", env=env)
        assert [(k["name"], k["created_requests"], k["revoked_at"]) for k in json.loads(out)["api_keys"]] == [
            ("kiosk", 1, None)]
        code, _, err = await _run("api-key", "revoke", "kiosk", env=env)
        assert code == 0, err
        async with http.post(server.url + "/open311/v2/requests.json", data=fields) as r:
            assert r.status == 403
    code, _, err = await _run("dispatch-rule", "delete", str(rule["id"]), env=env)
    assert code == 0, err
    assert await pool.fetchval("SELECT count(*) FROM dispatch_rules") == 0
    actions = [r["action"] for r in await pool.fetch(
        "SELECT action FROM audit_log WHERE action LIKE 'api_key%' OR action LIKE 'dispatch_rule%' ORDER BY id")]
    assert actions == ["api_key_issue", "dispatch_rule_add", "dispatch_rule_add_refused", "api_key_revoke",
                       "dispatch_rule_delete"]

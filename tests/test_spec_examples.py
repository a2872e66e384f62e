"""Every example of protocol/SPEC.md §8 (parsed out of its `<!-- model: X -->` code blocks) is sent to a live server
in the situation the text describes, and the server answers as the SPEC says: same changes, statuses, reasons,
removals and error code. Values the server mints (cursor, versions, checksums, times) are not compared."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

import protocol
from protocol import PROTOCOL_VERSION, VERSION_HEADER
from sync_server.engine.intake import NewTicket, insert_tickets
from tests.conftest import Server
from tests.factories import World
from tests.test_supervisor_api import Api

SPEC = Path(protocol.__file__).with_name("SPEC.md")


def spec_examples() -> list[tuple[str, Any]]:
    """(model name, parsed JSON) of every model-tagged example, in document order."""
    blocks = re.findall(r"<!-- model: (\w+) -->\n```json\n(.*?)```", SPEC.read_text(encoding="utf-8"), re.S)
    return [(name, json.loads(body)) for name, body in blocks]


def digest(changes: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """What a change means to a device, without server-minted values."""
    out = set()
    for c in changes:
        if c["kind"] == "remove":
            out.add(("remove", c["ticket_id"], c["reason"]))
        else:
            t = c["ticket"]
            out.add(("upsert", t["id"], t["status"], t["crew"], t["department"], t["service_type"], t["sr_number"],
                     t["resolution_code"]))
    return out


async def test_spec_session_examples_against_a_live_server(server: Server, pool: asyncpg.Pool, world: World) -> None:
    examples = spec_examples()
    assert [n for n, _ in examples] == ["PullResponse", "PushRequest", "PushResponse", "PullRequest", "PullResponse",
                                        "ErrorEnvelope"]
    (_, morning), (_, push_body), (_, push_answer), (_, _later_req), (_, later), (_, error) = examples
    async with aiohttp.ClientSession() as http:
        admin = Api(http, server.url, world.admin)
        for crew in ("san-ev", "san-wc"):  # the crews the SPEC's session names
            status, _ = await admin.call("POST", "/v1/crews", {"name": crew, "department": "sanitation"})
            assert status == 201
        status, enrolled = await admin.call("POST", "/v1/devices", {"crew": "san-ev"})
        assert status == 201
        crew_id = await pool.fetchval("SELECT id FROM crews WHERE name = 'san-ev'")
        # The morning's two tickets, as the first example shows them (ids, SR numbers, types, crew).
        async with pool.acquire() as conn, conn.transaction():
            await insert_tickets(conn, [
                NewTicket(id=UUID(c["ticket"]["id"]), sr_number=c["ticket"]["sr_number"],
                          service_type=c["ticket"]["service_type"], address=c["ticket"]["address"],
                          crew_id=crew_id, description=c["ticket"]["description"])
                for c in morning["changes"]], actor_kind="system", actor="test")
            # "last pushed seq 11": the device's earlier work is not part of the example
            await conn.execute("UPDATE devices SET last_seq = 11 WHERE id = $1", enrolled["device_id"])
        # the acknowledged ticket was acknowledged by the crew before the session
        headers = {"Authorization": f"Bearer {enrolled['token']}", VERSION_HEADER: str(PROTOCOL_VERSION)}

        async def post(path: str, body: Any) -> tuple[int, Any]:
            async with http.post(server.url + path, json=body, headers=headers) as r:
                return r.status, await r.json()

        status, page = await post("/v1/sync/pull", {"cursor": None, "limit": 500})
        assert status == 200 and page["reset"] is True and page["has_more"] is False
        want = {("upsert", c["ticket"]["id"], "assigned", "san-ev", c["ticket"]["department"], c["ticket"]["service_type"],
                 c["ticket"]["sr_number"], None) for c in morning["changes"]}
        assert digest(page["changes"]) == want  # statuses: both assigned here; the SPEC's second was acknowledged earlier

        moved = morning["changes"][1]["ticket"]["id"]  # "Meanwhile the supervisor reassigns ticket 1a2b3c4d-…"
        status, _ = await admin.call("POST", f"/v1/tickets/{moved}/assign", {"crew": "san-wc"},
                                     token=world.supervisors["sanitation"])
        assert status == 200

        status, pushed = await post("/v1/sync/push", push_body)
        assert status == 200, pushed
        shape = [(r["seq"], r["status"], r["reason"], r["removed"], [(c["kind"], c["field"], c["kept"], c["discarded"])
                                                                    for c in r["conflicts"]]) for r in push_answer["results"]]
        got = [(r["seq"], r["status"], r["reason"], r["removed"], [(c["kind"], c["field"], c["kept"], c["discarded"])
                                                                  for c in r["conflicts"]]) for r in pushed["results"]]
        assert got == shape
        late = pushed["results"][3]
        assert late["message"].startswith("complete by dev-") and late["message"].endswith("after the ticket became assigned")
        assert pushed["last_seq"] == push_answer["last_seq"] == 16
        assert len({r["server_version"] for r in pushed["results"]}) == 1 == len({r["server_version"] for r in push_answer["results"]})

        # "If this response is lost, resending seqs 12–16 returns the same five results with replayed: true."
        status, again = await post("/v1/sync/push", push_body)
        assert status == 200 and [r["replayed"] for r in again["results"]] == [True] * 5
        assert [(r["seq"], r["status"], r["reason"]) for r in again["results"]] == [(s, st, rs) for s, st, rs, _, _ in shape]

        status, page2 = await post("/v1/sync/pull", {"cursor": page["cursor"], "limit": 500})
        assert status == 200 and page2["reset"] is False
        expected = {d for d in digest(later["changes"])}
        # the example is abridged (the bulky-item ticket is upserted too) and uses the author's device id
        assert expected <= digest(page2["changes"])
        assert page2["watermark"] > pushed["server_version"]  # "the device's own writes are in this snapshot"

        # the error example: a push that skips seq 17
        skip = dict(push_body["mutations"][1], seq=18)
        status, err = await post("/v1/sync/push", {"mutations": [skip]})
        assert status == 409
        assert (err["error"]["code"], err["error"]["details"]["expected_seq"]) == (
            error["error"]["code"], error["error"]["details"]["expected_seq"])

"""GET /v1/catalog and the push engine agree: a code the catalogue does not list for the ticket's service type is
rejected per mutation (invalid_args, seq advances, ticket untouched); a listed one applies."""

from __future__ import annotations

import uuid
import aiohttp
import asyncpg

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient
from tests.test_supervisor_api import Api


async def test_catalog_lists_the_callers_department_codes_and_limits(server: Server, world: World) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.url, world.device("ss-1").token)
        status, cat = await api.call("GET", "/v1/catalog", headers={VERSION_HEADER: str(PROTOCOL_VERSION)})
        assert status == 200, cat
        assert cat["department"] == "street_services"
        assert [s["name"] for s in cat["service_types"]] == ["Pothole Repair"]
        pothole = cat["service_types"][0]
        assert pothole["code"] == "pothole_repair" and pothole["default_priority"] == "normal"
        assert "patched" in pothole["resolution_codes"] and "no_access" in pothole["reason_codes"]
        assert cat["priorities"] == ["low", "normal", "high", "urgent"]
        assert cat["statuses"][:3] == ["unassigned", "assigned", "acknowledged"] and len(cat["statuses"]) == 11
        assert "unassigned" in cat["removal_reasons"]
        assert (cat["limits"]["max_mutations_per_push"], cat["limits"]["max_item_lines"],
                cat["limits"]["max_pull_limit"]) == (500, 10, 1000)
        # a supervisor sees its own department; an admin every department, or one with ?department=
        status, cat = await api.call("GET", "/v1/catalog", token=world.supervisors["sanitation"])
        assert cat["department"] == "sanitation"
        assert {s["name"] for s in cat["service_types"]} == {"Bulky Items", "Illegal Dumping Pickup", "Graffiti Removal"}
        status, cat = await api.call("GET", "/v1/catalog", token=world.admin)
        assert cat["department"] is None and len(cat["service_types"]) == 4
        status, cat = await api.call("GET", "/v1/catalog", token=world.admin, params={"department": "street_services"})
        assert [s["code"] for s in cat["service_types"]] == ["pothole_repair"]
        status, err = await api.call("GET", "/v1/catalog", token="fsd_nope")
        assert (status, err["error"]["code"]) == (401, "unauthorized")


async def test_push_accepts_only_the_catalogues_codes(server: Server, pool: asyncpg.Pool, world: World) -> None:
    async with aiohttp.ClientSession() as http:
        admin = Api(http, server.url, world.admin)
        status, _ = await admin.call("POST", "/v1/service-types", {
            "code": "tree_trimming", "name": "Tree Trimming", "department": "sanitation",
            "resolution_codes": ["trimmed"], "reason_codes": ["no_access"]})
        assert status == 201
        a, b, c = await make_tickets(pool, world, 3, crew="san-1", service_type="Tree Trimming")
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        bad = [
            dev.mutation("complete", a.ticket.id, {"resolution_code": "collected"}),  # valid elsewhere, not here
            dev.mutation("set_resolution", a.ticket.id, {"resolution_code": "bogus"}),
            dev.mutation("unable_to_complete", b.ticket.id, {"reason_code": "items_not_out"}),
            dev.mutation("decline", c.ticket.id, {"reason_code": "bogus"}),
            dev.mutation("self_report", uuid.uuid4(), {"service_type": "Tree Trimming", "address": "1 Elm St",
                                                       "lat": 34.0, "lon": -118.0, "resolution_code": "painted_over"}),
        ]
        good = [
            dev.mutation("set_resolution", a.ticket.id, {"resolution_code": "trimmed"}),
            dev.mutation("complete", a.ticket.id, {"resolution_code": "trimmed"}),
            dev.mutation("unable_to_complete", b.ticket.id, {"reason_code": "no_access"}),
            dev.mutation("self_report", uuid.uuid4(), {"service_type": "tree_trimming", "address": "2 Elm St",
                                                       "lat": 34.0, "lon": -118.0, "resolution_code": "trimmed"}),
        ]
        versions = {r.ticket.id: r.ticket.version for r in (a, b, c)}
        resp = await dev.push(bad)
        assert [(r.status.value, r.reason.value if r.reason else None) for r in resp.results] == [
            ("rejected", "invalid_args")] * 5
        assert "not a resolution code of this service type" in (resp.results[0].message or "")
        assert resp.last_seq == 5  # rejected, never blocking: the seqs advanced (I6)
        rows = await pool.fetch("SELECT id, version, status FROM tickets WHERE id = ANY($1::uuid[])", list(versions))
        assert {r["id"]: r["version"] for r in rows} == versions
        assert await pool.fetchval("SELECT count(*) FROM tickets WHERE address LIKE '% Elm St'") == 0
        resp = await dev.push(good)
        assert [r.status.value for r in resp.results] == ["applied"] * 4
        done = await pool.fetchrow("SELECT status, resolution_code FROM tickets WHERE id = $1", a.ticket.id)
        assert (done["status"], done["resolution_code"]) == ("completed", "trimmed")

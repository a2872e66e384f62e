"""Open311 GeoReport v2 over real HTTP and PostgreSQL: the unmodified PyPI client `georeport` reads services,
definitions and requests in JSON and XML; a form-encoded POST (as a citizen app sends it) creates a ticket the
supervisor sees live and the dispatch rules give to a crew; the crew's completion shows as closed with the public
status note. Every answer is checked against schemas written from the spec's tables (tests/open311_schemas.py)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from georeport import GeoReport

from protocol.live import LiveEvent
from tests import open311_schemas as S
from tests.conftest import Server
from tests.factories import World
from tests.syncclient import DeviceClient
from tests.test_live import Live
from tests.test_supervisor_api import Api

BULKY_ATTRIBUTES = [
    {"code": "item_count", "datatype": "number", "required": True, "description": "How many items?", "order": 1},
    {"code": "item_kind", "datatype": "multivaluelist", "required": False, "description": "What kind of items?",
     "order": 2, "values": [{"key": "mattress", "name": "Mattress"}, {"key": "sofa", "name": "Sofa"}]},
]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def city(server: Server, world: World, http: aiohttp.ClientSession) -> dict[str, Any]:
    """An admin sets the city up through the admin API: attributes for bulky items, a rule, an API key."""
    admin = Api(http, server.url, world.admin)
    status, cfg = await admin.call("PUT", "/v1/service-types/bulky_items/open311", {
        "description": "Pickup of furniture and appliances", "group": "Sanitation", "keywords": ["couch", "mattress"],
        "attributes": BULKY_ATTRIBUTES})
    assert status == 200, cfg
    status, rule = await admin.call("POST", "/v1/dispatch-rules", {"service_type": "bulky_items", "zip": "90012",
                                                                    "crew": "san-1", "position": 10})
    assert status == 201, rule
    assert (rule["area"], rule["crew"]) == ("zip", "san-1")
    status, key = await admin.call("POST", "/v1/api-keys", {"name": "citizen-app", "rate_per_minute": 30})
    assert status == 201, key
    assert key["api_key"].startswith("fsk_") and key["created_requests"] == 0
    return {"key": key["api_key"], "admin": admin}


async def post_form(http: aiohttp.ClientSession, url: str, fields: dict[str, str], fmt: str = "json") -> tuple[int, Any, Any]:
    """POST requests as a citizen app does: application/x-www-form-urlencoded."""
    async with http.post(f"{url}/open311/v2/requests.{fmt}", data=fields) as r:
        body = await r.read()
        parsed = ET.fromstring(body) if fmt == "xml" else (await r.json(content_type=None))
        return r.status, parsed, r.headers


def form(key: str, **extra: str) -> dict[str, str]:
    """A valid bulky-items request in ZIP 90012."""
    return {"api_key": key, "service_code": "bulky_items", "lat": "34.0522", "long": "-118.2437",
            "address_string": "200 N Spring St, Los Angeles, CA 90012", "description": "Old sofa on the curb",
            "email": "resident@example.org", "first_name": "Ana", "last_name": "Lopez", "phone": "555-0100",
            "media_url": "https://photos.example.org/sofa.jpg", "attribute[item_count]": "2",
            "attribute[item_kind]": "sofa", **extra}


async def test_georeport_reads_services_and_definitions_in_both_formats(server: Server, city: dict[str, Any]) -> None:
    for fmt in ("json", "xml"):
        client = GeoReport(server.url + "/open311/v2", output_format=fmt)
        services = await asyncio.to_thread(client.get_service_list)
        codes = sorted(s["service_code"] for s in services)
        assert codes == ["bulky_items", "graffiti_removal", "illegal_dumping", "pothole_repair"]
        bulky = next(s for s in services if s["service_code"] == "bulky_items")
        assert bulky["metadata"] in (True, "true") and bulky["group"] == "Sanitation"
        plain = next(s for s in services if s["service_code"] == "pothole_repair")
        assert plain["metadata"] in (False, "false") and plain["group"] == "Street Services"
        definition = await asyncio.to_thread(client.get_service_definition, "bulky_items")
        assert definition["service_code"] == "bulky_items"
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/open311/v2/services.json") as r:
            assert r.content_type == "application/json"
            for s in await r.json():
                S.check_json(s, S.SERVICE)
        async with http.get(server.url + "/open311/v2/services.xml") as r:
            assert r.content_type == "text/xml"
            assert len(S.parse_list(await r.read(), "services", "service", S.SERVICE)) == 4
        async with http.get(server.url + "/open311/v2/services/bulky_items.json") as r:
            doc = await r.json()
        S.check_definition_json(doc)
        assert [(a["code"], a["datatype"], a["required"]) for a in doc["attributes"]] == [
            ("item_count", "number", True), ("item_kind", "multivaluelist", False)]
        assert doc["attributes"][1]["values"] == [{"key": "mattress", "name": "Mattress"}, {"key": "sofa", "name": "Sofa"}]
        async with http.get(server.url + "/open311/v2/services/bulky_items.xml") as r:
            top = S.check_definition_xml(await r.read())
        assert [v.findtext("key") for v in top.findall("attributes/attribute/values/value")] == ["mattress", "sofa"]
        async with http.get(server.url + "/open311/discovery.json") as r:
            disc = await r.json()
        assert disc["endpoints"][0]["url"] == server.url + "/open311/v2"
        assert disc["endpoints"][0]["formats"] == ["text/xml", "application/json"]
        async with http.get(server.url + "/open311/discovery.xml") as r:
            top = ET.fromstring(await r.read())
        assert [f.text for f in top.findall("endpoints/endpoint/formats/format")] == ["text/xml", "application/json"]


async def test_post_routes_to_crew_supervisor_sees_it_live_and_closure_comes_back(
    server: Server, world: World, pool: asyncpg.Pool, http: aiohttp.ClientSession, city: dict[str, Any]
) -> None:
    sup = await Live.connect(http, server.url, world.supervisors["sanitation"])
    await sup.ready()
    status, body, _ = await post_form(http, server.url, form(city["key"]))
    assert status == 201, body
    S.check_json(body[0], S.POST_RESPONSE)
    sr = body[0]["service_request_id"]

    # The supervisor's live feed carries the new ticket, assigned to san-1 by the ZIP rule.
    (event,) = [m for m in await sup.until(lambda m: isinstance(m, LiveEvent) and m.ticket is not None
                                           and m.ticket.sr_number == sr) if isinstance(m, LiveEvent)
                and m.ticket is not None and m.ticket.sr_number == sr]
    assert event.ticket is not None
    assert (event.ticket.status, event.ticket.crew, event.ticket.zip) == ("assigned", "san-1", "90012")
    assert event.ticket.description == "Old sofa on the curb"
    await sup.close()

    # Token lookup (the spec's batch services; ours are realtime, so POST answers no token, but the lookup works).
    token = await pool.fetchval("SELECT o.token FROM open311_requests o JOIN tickets t ON t.id = o.ticket_id"
                                " WHERE t.sr_number = $1", sr)
    async with http.get(f"{server.url}/open311/v2/tokens/{token}.json") as r:
        tok = await r.json()
    S.check_json(tok[0], S.TOKEN)
    assert tok == [{"service_request_id": sr, "token": token}]

    # The request is open, public fields only: the resident's contact data never appears.
    reader = GeoReport(server.url + "/open311/v2")
    (req,) = await asyncio.to_thread(reader.get_service_requests, service_request_id=sr)
    S.check_json(req, S.REQUEST)
    assert (req["status"], req["status_notes"], req["agency_responsible"], req["media_url"]) == (
        "open", None, "Sanitation", "https://photos.example.org/sofa.jpg")
    async with http.get(f"{server.url}/open311/v2/requests/{sr}.xml") as r:
        raw = await r.read()
    assert b"resident@example.org" not in raw and b"Lopez" not in raw and b"555-0100" not in raw
    S.parse_list(raw, "service_requests", "request", S.REQUEST)
    # ... but staff have it, with the attributes and the key that created it.
    row = await pool.fetchrow("SELECT o.reporter, o.attributes, k.name FROM open311_requests o"
                              " JOIN api_keys k ON k.id = o.api_key_id JOIN tickets t ON t.id = o.ticket_id"
                              " WHERE t.sr_number = $1", sr)
    assert '"email": "resident@example.org"' in row["reporter"] and row["name"] == "citizen-app"
    assert row["attributes"] == '{"item_kind": ["sofa"], "item_count": ["2"]}'
    tid_row = await pool.fetchval("SELECT id FROM tickets WHERE sr_number = $1", sr)
    staff = Api(http, server.url, world.supervisors["sanitation"])
    status, details = await staff.call("GET", f"/v1/tickets/{tid_row}/open311")
    assert status == 200
    assert (details["reporter"], details["api_key"], details["attributes"]) == (
        {"email": "resident@example.org", "first_name": "Ana", "last_name": "Lopez", "phone": "555-0100"},
        "citizen-app", {"item_count": ["2"], "item_kind": ["sofa"]})
    status, _ = await staff.call("GET", f"/v1/tickets/{tid_row}/open311", token=world.supervisors["street_services"])
    assert status == 404  # another department's supervisor learns nothing
    status, _ = await staff.call("GET", f"/v1/tickets/{tid_row}/open311", token=world.device("san-1").token)
    assert status == 403
    audit = await pool.fetchrow("SELECT actor_kind, actor FROM audit_log WHERE action = 'open311_create'")
    assert (audit["actor_kind"], audit["actor"]) == ("api_key", "citizen-app")

    # The crew's device gets it, completes it; GET requests shows it closed with the public note for 'collected'.
    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    (tid,) = [t for t, tk in dev.replica.tickets.items() if tk.sr_number == sr]
    resp = await dev.push([dev.mutation("acknowledge", tid), dev.mutation("start", tid),
                           dev.mutation("complete", tid, {"resolution_code": "collected"})])
    assert [r.status for r in resp.results] == ["applied"] * 3
    for fmt in ("json", "xml"):
        reader = GeoReport(server.url + "/open311/v2", output_format=fmt)
        closed = await asyncio.to_thread(reader.get_service_request, sr)
        assert (closed["status"], closed["status_notes"]) == ("closed", "Items collected.")
    closed_list = await asyncio.to_thread(reader.get_service_requests, status="closed")
    assert closed_list["service_request_id"] == sr  # xmltodict: one <request> is a dict, not a list
    status, keys = await city["admin"].call("GET", "/v1/api-keys")
    assert [(k["name"], k["created_requests"]) for k in keys["api_keys"]] == [("citizen-app", 1)]
    assert isinstance(tid, UUID)


async def test_pages_and_extensions_publish_only_after_photo_derivatives(
    server: Server, world: World, http: aiohttp.ClientSession, city: dict[str, Any]
) -> None:
    import io

    from PIL import Image

    from tests.test_sync_photos import attach
    from tests.test_uploads_support import noise_jpeg, sha, upload

    srs = []
    for n in range(3):
        status, body, _ = await post_form(http, server.url, form(city["key"], description=f"sofa {n}"))
        assert status == 201
        srs.append(body[0]["service_request_id"])
    pages = []
    for page in (1, 2, 3):
        async with http.get(f"{server.url}/open311/v2/requests.json?page_size=2&page={page}") as r:
            pages.append([x["service_request_id"] for x in await r.json()])
    # Newest first (sr numbers come from one sequence, so they sort in creation order); nothing twice or lost.
    assert pages == [[srs[2], srs[1]], [srs[0]], []]

    # georeport with every filter it has, in both formats (xmltodict turns a list of one into a dict, so use 3).
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    window = {"start_date": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "end_date": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    for fmt in ("json", "xml"):
        reader = GeoReport(server.url + "/open311/v2", output_format=fmt)
        got = await asyncio.to_thread(reader.get_service_requests, service_code="bulky_items", status="open", **window)
        assert sorted(r["service_request_id"] for r in got) == sorted(srs)
        got = await asyncio.to_thread(reader.get_service_requests, service_request_id=",".join(srs[:2]))
        assert sorted(r["service_request_id"] for r in got) == sorted(srs[:2])
    reader = GeoReport(server.url + "/open311/v2")
    assert await asyncio.to_thread(reader.get_service_requests, service_code="pothole_repair") == []
    assert await asyncio.to_thread(reader.get_service_requests, status="closed") == []
    assert await asyncio.to_thread(reader.get_service_requests, start_date="2020-01-01T00:00:00Z",
                                   end_date="2020-03-01T00:00:00Z") == []

    dev = DeviceClient(http, server.url, world.device("san-1").token)
    await dev.pull()
    (tid,) = [t for t, tk in dev.replica.tickets.items() if tk.sr_number == srs[0]]
    after, before = noise_jpeg(800, 600, seed=5, gps=True), noise_jpeg(64, 48, seed=6, gps=True)
    resp = await dev.push([attach(dev, tid, after, "after"), attach(dev, tid, before, "before")])
    assert [r.status for r in resp.results] == ["applied", "applied"]
    for data in (after, before):
        assert (await upload(http, server.url, dev.token, data, tid)).status == 204
    async with http.get(f"{server.url}/open311/v2/requests/{srs[0]}.json?extensions=true") as r:
        (rec,) = await r.json()
    S.check_json(rec, S.REQUEST)
    assert rec["extended_attributes"] == {"photos": [f"{server.url}/open311/v2/media/{sha(after)}.jpg"]}
    async with http.get(f"{server.url}/open311/v2/requests/{srs[0]}.xml?extensions=true") as r:
        top = ET.fromstring(await r.read())
    assert [p.text for p in top.findall("request/extended_attributes/photos/photo")] == rec["extended_attributes"]["photos"]
    async with http.get(rec["extended_attributes"]["photos"][0]) as r:
        assert r.status == 200 and r.content_type == "image/jpeg"
        img = Image.open(io.BytesIO(await r.read()))
    assert img.size == (800, 600) and 0x8825 not in img.getexif()  # no GPS IFD in what residents get
    async with http.get(f"{server.url}/open311/v2/media/{sha(before)}.jpg") as r:
        assert r.status == 404  # before-photos may show residents or their property: never public
    async with http.get(f"{server.url}/open311/v2/requests/{srs[1]}.json") as r:
        assert "extended_attributes" not in (await r.json())[0]

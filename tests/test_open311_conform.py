"""GeoReport v2 as its spec text says it, beyond what the georeport client exercises: hostile text is a 400 in the
spec's body (never a 500) and creates nothing; empty optional arguments count as absent; the spec's own
`attribute[code][]` form; a realtime POST answers service_request_id without a token; 1000 requests by default;
XML stays well-formed whatever characters residents typed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from tests import open311_schemas as S
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_open311 import city, form, http, post_form  # noqa: F401 - fixtures
from tests.test_open311_errors import created, spec_error

__all__ = ["city", "http"]

NUL_FIELDS = ["description", "service_code", "address_string", "email", "media_url", "first_name", "jurisdiction_id"]


async def test_hostile_text_is_a_spec_400_and_creates_nothing(
    server: Server, pool: asyncpg.Pool, http: aiohttp.ClientSession, city: dict[str, Any],  # noqa: F811
) -> None:
    """NUL (PostgreSQL text cannot hold it), JSON's lone surrogate and a percent-escape that is not UTF-8 were 500s
    or silently became U+FFFD; dates near year 9999 overflowed the 90-day window arithmetic (a 500)."""
    before = await created(pool)
    url = f"{server.url}/open311/v2/requests.json"
    for name in NUL_FIELDS:
        fields = form(city["key"], **{name: "https://x.org/a\x00b" if name == "media_url" else "a\x00b"})
        status, body, _ = await post_form(http, server.url, fields)
        assert status == 400, (name, body)
        assert spec_error(body, 400) == f"{name} holds a NUL or an invalid character"
    encoded = urlencode({**form(city["key"]), "attribute[item\x00count]": "2"})
    async with http.post(url, data=encoded.encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 400
        assert spec_error(await r.json(), 400) == "a field name holds a NUL or an invalid character"
    for text in ('"\\ud800"', '"a\\u0000b"'):
        raw = json.dumps({**form(city["key"]), "description": "HERE"}).replace('"HERE"', text)
        async with http.post(url, data=raw.encode(), headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400, await r.text()
            assert spec_error(await r.json(), 400) == "description holds a NUL or an invalid character"
    encoded = "&".join(f"{k}={v}" for k, v in form(city["key"]).items() if k != "description") + "&description=%FF%FE"
    async with http.post(url, data=encoded.encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 400
        assert spec_error(await r.json(), 400) == "body is not valid UTF-8 form-urlencoded data"
    for query, description in [
        ("service_code=%00", "service_code holds a NUL or an invalid character"),
        ("service_request_id=a%00", "service_request_id holds a NUL or an invalid character"),
        ("start_date=9999-12-01T00:00:00Z", "start_date must lie between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z"),
        ("end_date=0001-01-02T00:00:00Z", "end_date must lie between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z"),
    ]:
        for fmt in ("json", "xml"):
            async with http.get(f"{server.url}/open311/v2/requests.{fmt}?{query}") as r:
                assert r.status == 400, (query, await r.text())
                body = await r.read()
                got = spec_error(json.loads(body), 400) if fmt == "json" else ET.fromstring(body).findtext("error/description")
                assert got == description
    assert await created(pool) == before


async def test_empty_optional_arguments_are_absent_and_xml_survives_control_characters(
    server: Server, http: aiohttp.ClientSession, city: dict[str, Any],  # noqa: F811
) -> None:
    """The spec: "the response should be the same whether a parameter is passed and is empty or is not passed at
    all" (status= was a 400, service_code= matched nothing). XML 1.0 cannot carry U+0001: it must not reach a body."""
    status, body, _ = await post_form(http, server.url, form(city["key"], description="sofa\x01 and\x1b chair"))
    assert status == 201, body
    sr = body[0]["service_request_id"]
    async with http.get(f"{server.url}/open311/v2/requests.json") as r:
        plain = await r.json()
    assert [x["service_request_id"] for x in plain] == [sr]
    assert plain[0]["description"] == "sofa\x01 and\x1b chair"  # JSON escapes it: kept as typed
    empty = "status=&service_code=&start_date=&end_date=&page=&page_size=&extensions=&jurisdiction_id="
    for fmt in ("json", "xml"):
        async with http.get(f"{server.url}/open311/v2/requests.{fmt}?{empty}") as r:
            assert r.status == 200, await r.text()
            raw = await r.read()
        if fmt == "json":
            assert json.loads(raw) == plain
        else:
            (item,) = S.parse_list(raw, "service_requests", "request", S.REQUEST)
            assert item.findtext("service_request_id") == sr
            assert item.findtext("description") == "sofa\ufffd and\ufffd chair"
    async with http.get(f"{server.url}/open311/v2/requests/{sr}.xml") as r:
        assert ET.fromstring(await r.read()).findtext("request/description") == "sofa\ufffd and\ufffd chair"
    async with http.get(f"{server.url}/open311/v2/services/bulky\x01x.xml") as r:  # echoed in the error description
        assert r.status == 404
        assert ET.fromstring(await r.read()).findtext("error/description") == "service_code bulky\ufffdx not found"


async def test_post_answers_service_request_id_only_and_takes_the_multivaluelist_bracket_form(
    server: Server, pool: asyncpg.Pool, http: aiohttp.ClientSession, city: dict[str, Any],  # noqa: F811
) -> None:
    """The spec's example sends attribute[code][]=v1&attribute[code][]=v2 (it was refused as an unknown attribute
    "item_kind]["); every service is realtime, so a token "should not be returned" beside service_request_id."""
    fields = [(k, v) for k, v in form(city["key"]).items() if k != "attribute[item_kind]"]
    fields += [("attribute[item_kind][]", "mattress"), ("attribute[item_kind][]", "sofa")]
    for fmt in ("json", "xml"):
        async with http.post(f"{server.url}/open311/v2/requests.{fmt}", data=fields) as r:
            assert r.status == 201, await r.text()
            raw = await r.read()
        if fmt == "json":
            (rec,) = json.loads(raw)
            S.check_json(rec, S.POST_RESPONSE)
            assert set(rec) == {"service_request_id", "service_notice", "account_id"}
            sr = rec["service_request_id"]
        else:
            (item,) = S.parse_list(raw, "service_requests", "request", S.POST_RESPONSE)
            assert item.find("token") is None and item.findtext("service_request_id")
    attrs = await pool.fetchval("SELECT o.attributes FROM open311_requests o JOIN tickets t ON t.id = o.ticket_id"
                                " WHERE t.sr_number = $1", sr)
    assert json.loads(attrs) == {"item_count": ["2"], "item_kind": ["mattress", "sofa"]}


async def test_a_plain_client_gets_the_first_1000_requests(server: Server, pool: asyncpg.Pool, world: World,
                                                            http: aiohttp.ClientSession) -> None:
    """"Default query limit is a span of 90 days or first 1000 requests returned": a client that knows nothing of
    the page extension got 50."""
    await make_tickets(pool, world, 120, crew=None)
    async with http.get(f"{server.url}/open311/v2/requests.json") as r:
        assert len(await r.json()) == 120
    async with http.get(f"{server.url}/open311/v2/requests.json?page_size=100&page=2") as r:
        assert len(await r.json()) == 20


async def test_path_ids_with_nul_or_bad_utf8_answer_in_the_spec_format(
    server: Server, http: aiohttp.ClientSession, city: dict[str, Any],  # noqa: F811
) -> None:
    """An id in the path is text the client chose: NUL or a percent-escape that is not UTF-8 must get the spec's error
    body in the requested format (an Open311 client parses nothing else), not FieldSync's own envelope."""
    for path in ("requests/a%00b", "services/%00", "tokens/%00x", "requests/%FF%FE", "services/%C0"):
        async with http.get(f"{server.url}/open311/v2/{path}.json") as r:
            body = await r.text()
            assert r.status in (400, 404), (path, r.status, body)
            assert r.content_type == "application/json", (path, r.content_type)
            assert spec_error(json.loads(body), r.status), (path, body)
        async with http.get(f"{server.url}/open311/v2/{path}.xml") as r:
            body = await r.text()
            assert r.status in (400, 404), (path, r.status, body)
            assert r.content_type in ("text/xml", "application/xml"), (path, r.content_type)
            root = ET.fromstring(body)
            assert root.tag == "errors" and root.find("error/code").text == str(r.status), (path, body)

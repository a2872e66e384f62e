"""/openapi.json is true to the server, checked from the wire: answers the server really gives (tus refusals, Open311
XML and error lists, probes, the rate limit) are documented with their status and media type, and every route the
app serves is documented or is one of the listed non-API pages. Each of these answers was undocumented before."""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp
import asyncpg

from sync_server.api.registry import ROUTES
from sync_server.settings import Settings
from tests.conftest import Server, start_server
from tests.factories import World, make_tickets
from tests.rawhttp import RawResponse, send
from tests.test_openapi import fetch_doc, oa_path

# Served outside the API description on purpose: HTML pages, the crew app's static files, the description itself.
NOT_API = ("/console", "/app", "/openapi.json", "/")


def documented(doc: dict[str, Any], method: str, template: str, r: RawResponse) -> None:
    """The answer's status is documented for the operation, and so is its media type (or no body at all)."""
    op = doc["paths"][template][method.lower()]
    assert str(r.status) in op["responses"], (method, template, r.status, sorted(op["responses"]))
    resp = op["responses"][str(r.status)]
    media = r.headers.get("content-type", "").split(";")[0].strip()
    if r.body:
        assert media in resp.get("content", {}), (method, template, r.status, media, list(resp.get("content", {})))
    else:
        assert method == "HEAD" or r.status in (204, 304) or "content" not in resp or media == "", (method, template)


async def test_refusals_the_server_gives_are_documented(server: Server, world: World, pool: asyncpg.Pool) -> None:
    doc = await fetch_doc(server)
    (t,) = await make_tickets(pool, world, 1)
    dev = {"Authorization": f"Bearer {world.device('san-1').token}", "Accept": "application/json"}
    tus = {**dev, "Tus-Resumable": "1.0.0"}

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    meta = ",".join([f"sha256 {b64('ab' * 32)}", f"ticket_id {b64(str(t.ticket.id))}", f"kind {b64('before')}",
                     f"taken_at {b64('2024-05-01T10:00:00Z')}"])
    url = server.url
    up = "/v1/uploads"
    created = await send(url, "POST", up, {**tus, "Upload-Length": "1000", "Upload-Metadata": meta})
    assert created.status == 201
    one = "/v1/uploads/" + created.headers["location"].rsplit("/", 1)[1]
    item = "/v1/uploads/{upload_id}"
    cases: list[tuple[str, str, str, dict[str, str], bytes, int]] = [
        ("POST", up, up, dev, b"", 412),
        ("POST", up, up, {**tus, "Upload-Length": str(10**12), "Upload-Metadata": meta}, b"", 413),
        ("POST", up, up, {**tus, "Upload-Length": "-1", "Upload-Metadata": meta}, b"", 422),
        ("PATCH", one, item, {**tus, "Upload-Offset": "0", "Content-Type": "text/plain"}, b"abc", 415),
        ("PATCH", one, item, {**tus, "Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"}, b"a", 409),
        ("PATCH", one, item, {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                              "Upload-Checksum": "sha1 " + base64.b64encode(b"\0" * 20).decode()}, b"abc", 460),
        ("HEAD", one, item, dev, b"", 412),
        ("HEAD", one, item, tus, b"", 200),
        ("POST", one, item, tus, b"", 405),
        ("GET", "/open311/v2/requests.xml?status=bogus", "/open311/v2/requests.{fmt}", {}, b"", 400),
        ("GET", "/open311/v2/requests.json?status=bogus", "/open311/v2/requests.{fmt}", {}, b"", 400),
        ("GET", "/open311/v2/services.xml", "/open311/v2/services.{fmt}", {}, b"", 200),
        ("GET", "/open311/v2/services/nope.json", "/open311/v2/services/{code}.{fmt}", {}, b"", 404),
        ("GET", "/open311/discovery.json", "/open311/discovery.{fmt}", {}, b"", 200),
        ("POST", "/open311/v2/requests.xml", "/open311/v2/requests.{fmt}",
         {"Content-Type": "application/x-www-form-urlencoded"}, b"service_code=bulky_items&lat=1&long=1", 403),
        ("GET", "/readyz", "/readyz", {"Accept": "application/msgpack"}, b"", 200),
    ]
    for method, path, template, headers, body, status in cases:
        r = await send(url, method, path, headers, body)
        assert r.status == status, (method, path, r.status, r.body[:200])
        documented(doc, method, template, r)
    # the fmt parameter names the two formats the server speaks, so generated clients cannot build a 404
    fmt = next(p for p in doc["paths"]["/open311/v2/services.{fmt}"]["get"]["parameters"] if p["name"] == "fmt")
    assert fmt["schema"] == {"type": "string", "enum": ["json", "xml"]}


async def test_the_rate_limit_is_documented_where_it_applies(settings: Settings, db_dsn: str, world: World) -> None:
    """Every route but the probes counts against the per-address limit and may answer 429."""
    srv = await start_server(settings.model_copy(update={"rate_limit_loopback": True,
                                                         "rate_limit_address_per_minute": 1}), db_dsn)
    try:
        doc = await fetch_doc(srv)  # the first request spends the budget
        staff = {"Authorization": f"Bearer {world.admin}", "Accept": "application/json"}
        for method, path, template, headers in [("GET", "/v1/crews", "/v1/crews", staff),
                                                ("GET", "/open311/v2/services.json", "/open311/v2/services.{fmt}", {}),
                                                ("OPTIONS", "/v1/uploads", "/v1/uploads", {})]:
            r = await send(srv.url, method, path, headers)
            assert r.status == 429, (path, r.status)
            documented(doc, method, template, r)
        assert (await send(srv.url, "GET", "/healthz", {})).status == 200
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                assert ("429" in op["responses"]) == (path not in ("/healthz", "/readyz")), (method, path)
    finally:
        await srv.runner.cleanup()


async def test_every_served_route_is_documented_or_a_listed_page(server: Server) -> None:
    doc = await fetch_doc(server)
    listed = {(d.method, d.path) for d in server.app[ROUTES]}
    unlisted = []
    for res in server.app.router.resources():
        info = res.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        for r in res:
            if r.method in ("HEAD", "*") and (r.method, oa_path(path)) not in listed:
                continue  # aiohttp adds HEAD beside GET by itself
            if (r.method, oa_path(path)) in listed:
                assert r.method.lower() in doc["paths"][oa_path(path)], (r.method, path)
            elif not any(path == p or path.startswith(p + "/") or (p == "/" and path == "/") for p in NOT_API):
                unlisted.append((r.method, path))
    assert unlisted == []
    assert not [p for p in doc["paths"] if re.search(r"\{[^}]*:", p)]  # no aiohttp regex leaks into a path
    async with aiohttp.ClientSession() as http, http.get(server.url + "/openapi.json") as r:
        assert r.status == 200

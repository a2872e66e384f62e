"""What a client written from protocol/SPEC.md alone, or a third-party HTTP/tus/Open311 tool, finds at the edges: each
test is one probe that once answered wrongly (a 500, a 422 where SPEC promises another code, a header missing), run
against the real server on loopback; every refusal must also leave the database as it was."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import urlsplit

import asyncpg
import msgpack
import pytest

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.rawhttp import RawResponse, send


def device_headers(token: str, media: str = "application/json") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", VERSION_HEADER: str(PROTOCOL_VERSION), "Content-Type": media,
            "Accept": media}


def note(seq: int, ticket: uuid.UUID) -> dict[str, object]:
    return {"seq": seq, "op": "add_note", "ticket_id": str(ticket), "args": {"note_id": str(uuid.uuid4()), "text": "x"},
            "base_version": None, "device_time": datetime.now(timezone.utc).isoformat()}


async def stored_results(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM mutation_results"))


# A float64 NaN and +Infinity as msgpack writes them (0xcb + IEEE 754 big-endian): JSON cannot carry either, and
# SPEC §1 lists both among the malformed_body causes, whatever the encoding.
NAN64 = b"\xcb" + struct.pack(">d", float("nan"))
INF64 = b"\xcb" + struct.pack(">d", float("inf"))


@pytest.mark.parametrize("where", ["gps", "unknown_op_args"])
async def test_msgpack_nan_or_infinity_in_a_push_is_malformed_body_not_500(
        server: Server, pool: asyncpg.Pool, world: World, where: str) -> None:
    (rec,) = await make_tickets(pool, world, 1)
    m = note(1, rec.ticket.id)
    if where == "gps":
        m["gps"] = {"lat": "NAN", "lon": 1.5, "accuracy_m": None}
    else:
        m["op"], m["args"] = "from_the_future", {"x": "NAN"}
    body = msgpack.packb({"mutations": [m]}, use_bin_type=True).replace(msgpack.packb("NAN"), NAN64 if where == "gps" else INF64)
    assert msgpack.unpackb(body)  # still valid msgpack: the float is well-formed, just not finite
    before = await stored_results(pool)
    r = await send(server.url, "POST", "/v1/sync/push", device_headers(world.device("san-1").token, "application/msgpack"),
                   body)
    assert r.status == 400, (r.status, r.body[:200])
    assert msgpack.unpackb(r.body)["error"]["code"] == "malformed_body"
    assert await stored_results(pool) == before


async def test_msgpack_nan_in_a_pull_is_malformed_body_like_json(server: Server, world: World) -> None:
    body = b"\x82\xa6cursor\xc0\xa5limit" + NAN64
    r = await send(server.url, "POST", "/v1/sync/pull", device_headers(world.device("san-1").token, "application/msgpack"),
                   body)
    assert r.status == 400, r.body[:200]
    assert msgpack.unpackb(r.body)["error"]["code"] == "malformed_body"
    r = await send(server.url, "POST", "/v1/sync/pull", device_headers(world.device("san-1").token),
                   b'{"cursor":null,"limit":NaN}')
    assert (r.status, r.json()["error"]["code"]) == (400, "malformed_body")


@pytest.mark.parametrize("media", ["application/json", "application/msgpack"])
async def test_push_of_501_mutations_is_413_too_many_mutations(server: Server, pool: asyncpg.Pool, world: World,
                                                              media: str) -> None:
    """SPEC §3: "more than 500 mutations (`too_many_mutations`, 413)", and the error table; it answered 422."""
    (rec,) = await make_tickets(pool, world, 1)
    muts = [note(i, rec.ticket.id) for i in range(1, 502)]
    body = json.dumps({"mutations": muts}).encode() if media.endswith("json") else msgpack.packb({"mutations": muts})
    r = await send(server.url, "POST", "/v1/sync/push", device_headers(world.device("san-1").token, media), body)
    err = (json.loads(r.body) if media.endswith("json") else msgpack.unpackb(r.body))["error"]
    assert (r.status, err["code"]) == (413, "too_many_mutations"), err
    assert err["details"] == {"max_mutations": 500, "received": 501}
    assert await stored_results(pool) == 0
    ok = await send(server.url, "POST", "/v1/sync/push", device_headers(world.device("san-1").token),
                    json.dumps({"mutations": muts[:500]}).encode())
    assert ok.status == 200 and len(ok.json()["results"]) == 500


async def test_head_is_served_wherever_get_is(server: Server, pool: asyncpg.Pool, world: World) -> None:
    """RFC 9110 §9.1: a server that serves GET serves HEAD (caches, link checkers and monitoring send it); the API
    routes answered 405 while /openapi.json, the console and the crew app served it. Same status and headers, no body."""
    await make_tickets(pool, world, 1)
    device = {"Authorization": f"Bearer {world.device('san-1').token}"}
    staff = {"Authorization": f"Bearer {world.supervisors['sanitation']}"}
    for path, headers in (("/v1/catalog", device), ("/v1/tickets?limit=5", staff), ("/v1/crews", staff),
                          ("/open311/v2/services.json", {}), ("/open311/v2/requests.xml", {})):
        got = await send(server.url, "GET", path, headers)
        head = await send(server.url, "HEAD", path, headers)
        assert got.status == 200, (path, got.status, got.body[:200])
        assert head.status == 200, (path, head.status, head.headers)
        assert head.body == b""
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["content-length"] == str(len(got.body)), path
    # refusals keep their status (and send no body)
    for path, headers, status in (("/v1/catalog", {}, 401), ("/v1/photos/" + "a" * 64, device, 404),
                                  ("/v1/tickets", device, 403)):
        head = await send(server.url, "HEAD", path, headers)
        assert (head.status, head.body) == (status, b""), (path, head.status)


async def test_bearer_scheme_is_case_insensitive(server: Server, pool: asyncpg.Pool, world: World) -> None:
    """RFC 9110 §11.1: the auth scheme is case-insensitive; `bearer <token>` (what some generated clients and proxies
    send) was a 401 "missing bearer token"."""
    await make_tickets(pool, world, 1)
    token = world.device("san-1").token
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = await send(server.url, "GET", "/v1/catalog", {"Authorization": f"{scheme} {token}"})
        assert r.status == 200, (scheme, r.body[:200])
        r = await send(server.url, "POST", "/v1/sync/pull", {**device_headers(token), "Authorization": f"{scheme} {token}"},
                       b'{"cursor":null,"limit":5}')
        assert r.status == 200 and len(r.json()["changes"]) == 1, (scheme, r.body[:200])
        r = await send(server.url, "GET", "/v1/crews", {"Authorization": f"{scheme} {world.supervisors['sanitation']}"})
        assert r.status == 200, (scheme, r.body[:200])
    # rotation keeps the token it was asked with, whatever the scheme's spelling
    r = await send(server.url, "POST", "/v1/devices/self/rotate", {"Authorization": f"bearer {token}"})
    assert r.status == 200, r.body[:200]
    assert (await send(server.url, "GET", "/v1/catalog", {"Authorization": f"Bearer {token}"})).status == 200
    assert (await send(server.url, "GET", "/v1/catalog", {"Authorization": f"Bearer {r.json()['token']}"})).status == 200
    for bad in (f"Basic {token}", f"Bearer{token}", "bearer", "bearer    "):
        r = await send(server.url, "GET", "/v1/catalog", {"Authorization": bad})
        assert (r.status, r.json()["error"]["code"]) == (401, "unauthorized"), bad


def open311_error(r: RawResponse, fmt: str) -> tuple[int, str]:
    """(code, description) of a GeoReport error body, after checking it is the spec's list of one error."""
    if fmt == "json":
        assert r.headers["content-type"].startswith("application/json"), r.headers
        body = r.json()
        assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"code", "description"}, body
        return int(body[0]["code"]), str(body[0]["description"])
    assert r.headers["content-type"].startswith("text/xml"), r.headers
    root = ET.fromstring(r.body)
    assert root.tag == "errors" and [e.tag for e in root] == ["error"], r.body[:300]
    return int(root.findtext("error/code") or 0), str(root.findtext("error/description"))


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_open311_refusals_outside_the_handlers_are_the_spec_error_list(server: Server, pool: asyncpg.Pool,
                                                                            fmt: str) -> None:
    """GeoReport clients parse `[{code, description}]` / `<errors>`; a too-large POST body (413), a method the path does
    not serve (405) and an unknown GeoReport path (404) were refused in FieldSync's own {"error": …} envelope."""
    before = await pool.fetchval("SELECT count(*) FROM tickets")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await send(server.url, "POST", f"/open311/v2/requests.{fmt}", form, b"description=" + b"x" * (300 << 10))
    assert r.status == 413 and open311_error(r, fmt)[0] == 413
    r = await send(server.url, "PUT", f"/open311/v2/requests.{fmt}", form, b"service_code=bulky_items")
    assert r.status == 405 and open311_error(r, fmt)[0] == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    r = await send(server.url, "GET", f"/open311/v2/no_such_thing.{fmt}", {})
    assert r.status == 404 and open311_error(r, fmt)[0] == 404
    assert await pool.fetchval("SELECT count(*) FROM tickets") == before


async def test_tus_resumable_is_on_every_upload_answer_refusals_before_the_handler_included(
        server: Server, world: World) -> None:
    """tus 1.0.0 core: "The Tus-Resumable header MUST be included in every request and response except for OPTIONS
    requests"; answers refused before the tus handler ran (no token, wrong role, wrong method) lacked it."""
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "1000", "Upload-Metadata": ""}
    cases = [("POST", "/v1/uploads", {}, 401), ("POST", "/v1/uploads", {"Authorization": "Bearer nope"}, 401),
             ("POST", "/v1/uploads", {"Authorization": f"Bearer {world.supervisors['sanitation']}"}, 403),
             ("DELETE", "/v1/uploads", {"Authorization": f"Bearer {world.device('san-1').token}"}, 405),
             ("HEAD", "/v1/uploads/abc", {}, 401), ("PATCH", "/v1/uploads/abc", {"Upload-Offset": "0"}, 401)]
    for method, path, extra, status in cases:
        r = await send(server.url, method, path, {**tus, **extra})
        assert r.status == status, (method, path, r.status)
        assert r.headers.get("tus-resumable") == "1.0.0", (method, path, r.headers)


async def test_two_protocol_version_headers_are_protocol_version_invalid(server: Server, world: World) -> None:
    """`FieldSync-Protocol: 1` and `FieldSync-Protocol: 2` in one request: we answered as v1 while a proxy or a log that
    reads the other one sees v2 (the same reason two Authorization headers are refused)."""
    r = await send(server.url, "POST", "/v1/sync/pull",
                   {**device_headers(world.device("san-1").token), "FieldSync-Protocol": "1\r\nFieldSync-Protocol: 2"},
                   b'{"cursor":null,"limit":5}')
    assert (r.status, r.json()["error"]["code"]) == (400, "protocol_version_invalid"), r.body[:200]
    r = await send(server.url, "POST", "/v1/sync/pull",
                   {**device_headers(world.device("san-1").token), "FieldSync-Protocol": "1\r\nFieldSync-Protocol: 1"},
                   b'{"cursor":null,"limit":5}')
    assert (r.status, r.json()["error"]["code"]) == (400, "protocol_version_invalid"), r.body[:200]


async def test_query_escapes_that_are_not_utf8_are_refused_not_replaced(server: Server, world: World) -> None:
    """SPEC §1: a lone surrogate in a query parameter is validation_failed. Percent-encoded (%ED%A0%80, or a Latin-1
    byte %E9) it reached the handler as U+FFFD, and `?crew=` answered 404 "no such crew '\ufffd\ufffd\ufffd'"."""
    staff = {"Authorization": f"Bearer {world.supervisors['sanitation']}"}
    for bad in ("%ED%A0%80", "%E9", "caf%E9"):
        r = await send(server.url, "GET", f"/v1/tickets?crew={bad}", staff)
        assert (r.status, r.json()["error"]["code"]) == (422, "validation_failed"), (bad, r.body[:200])
        r = await send(server.url, "GET", f"/open311/v2/requests.json?service_code={bad}", {})
        assert r.status == 400 and open311_error(r, "json") == (400, "a query parameter is not UTF-8"), bad
    # a real U+FFFD (and any other UTF-8) is text like any other: an unknown crew
    r = await send(server.url, "GET", "/v1/tickets?crew=%EF%BF%BD", staff)
    assert (r.status, r.json()["error"]["code"]) == (404, "not_found"), r.body[:200]
    r = await send(server.url, "GET", "/v1/tickets?crew=san-1&limit=5", staff)
    assert r.status == 200


async def expect_continue(url: str, path: str, headers: dict[str, str], length: int, body: bytes | None) -> bytes:
    """Send a head with `Expect: 100-continue`; read the first answer; send `body` only if told to continue."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        lines = [f"POST {path} HTTP/1.1", "Host: test", "Expect: 100-continue", f"Content-Length: {length}"]
        writer.write(("\r\n".join(lines + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode())
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if first.startswith(b"HTTP/1.1 100"):
            if body is None:
                return first
            writer.write(body)
            await writer.drain()
            return first + await answer(reader)
        return await answer(reader, first)
    finally:
        writer.close()


async def answer(reader: asyncio.StreamReader, head: bytes = b"") -> bytes:
    """One answer with a Content-Length (its head already read, or not yet); bounded waits."""
    if not head:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def test_expect_100_continue_is_refused_at_once_when_the_declared_body_is_too_large(
        server: Server, world: World) -> None:
    """RFC 9110 §10.1.1: a server that will refuse the body answers the final status instead of 100 Continue. A device
    (or curl) announcing a 5 MB pull got 100 Continue, sent every byte and only then read 413."""
    headers = {**device_headers(world.device("san-1").token), "Connection": "close"}
    got = await expect_continue(server.url, "/v1/sync/pull", headers, 5_000_000, None)
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    assert b"100 Continue" not in got
    assert json.loads(got.partition(b"\r\n\r\n")[2])["error"]["code"] == "body_too_large"
    got = await expect_continue(server.url, "/v1/sync/push", headers, (1 << 20) + 1, None)
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    # within the limit: 100 Continue, then the answer
    body = b'{"cursor":null,"limit":5}'
    got = await expect_continue(server.url, "/v1/sync/pull", headers, len(body), body)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), got[:200]


async def test_tus_metadata_optional_keys_with_empty_values_are_absent(server: Server, pool: asyncpg.Pool,
                                                                     world: World) -> None:
    """tus 1.0.0 creation: a metadata value MAY be empty (`key` alone, or `key ` as tus-js-client writes an empty
    string). An app without a GPS fix or a file name sends lat/lon/filename empty: that was 422 ("lat must be a decimal
    number"); those optional keys now count as absent. A required key left empty is still refused."""
    from tests.test_uploads_support import TUS, metadata, noise_jpeg, photo_meta

    (rec,) = await make_tickets(pool, world, 1)
    data = noise_jpeg()
    meta = photo_meta(data, rec.ticket.id)
    required = metadata({k: meta[k] for k in ("sha256", "ticket_id", "kind", "taken_at")})
    headers = {**TUS, "Authorization": f"Bearer {world.device('san-1').token}", "Upload-Length": str(len(data))}
    r = await send(server.url, "POST", "/v1/uploads", {**headers, "Upload-Metadata": required + ",lat ,lon,filename "})
    assert r.status == 201, r.body[:300]
    assert r.headers["location"] and r.headers["upload-offset"] == "0"
    r = await send(server.url, "POST", "/v1/uploads", {**headers, "Upload-Metadata": required.replace(
        "kind " + metadata({"k": "before"})[2:], "kind")})
    assert (r.status, r.json()["error"]["code"]) == (422, "validation_failed"), r.body[:300]


async def test_a_refused_accept_is_answered_in_the_request_encoding(server: Server, world: World) -> None:
    """SPEC §3 Errors: every error is in "the negotiated encoding". When Accept names nothing we produce there is none;
    a msgpack-only client (Content-Type msgpack, Accept e.g. application/cbor) got its 406 in JSON, which it cannot
    read. The envelope now mirrors the request's Content-Type, as the no-Accept rule does."""
    headers = {**device_headers(world.device("san-1").token, "application/msgpack"), "Accept": "application/cbor"}
    r = await send(server.url, "POST", "/v1/sync/pull", headers, msgpack.packb({"cursor": None, "limit": 5}))
    assert r.status == 406 and r.headers["content-type"] == "application/msgpack", (r.status, r.headers)
    assert msgpack.unpackb(r.body)["error"]["code"] == "not_acceptable"
    headers["Content-Type"] = "application/json"
    r = await send(server.url, "POST", "/v1/sync/pull", headers, b'{"cursor":null}')
    assert (r.status, r.headers["content-type"], r.json()["error"]["code"]) == (406, "application/json", "not_acceptable")


async def test_an_empty_status_filter_is_refused_not_an_empty_listing(server: Server, pool: asyncpg.Pool,
                                                                      world: World) -> None:
    """`GET /v1/tickets?status=` (a filter form with nothing ticked) answered 200 with no tickets, as if none existed."""
    await make_tickets(pool, world, 2)
    staff = {"Authorization": f"Bearer {world.supervisors['sanitation']}"}
    for query in ("status=", "status=,", "status=%20,%20"):
        r = await send(server.url, "GET", f"/v1/tickets?{query}", staff)
        assert (r.status, r.json()["error"]["code"]) == (422, "validation_failed"), (query, r.body[:200])
        assert r.json()["error"]["details"]["errors"][0]["loc"] == "status"
    r = await send(server.url, "GET", "/v1/tickets?status=assigned", staff)
    assert r.status == 200 and len(r.json()["tickets"]) == 2


async def test_a_body_whose_content_encoding_does_not_decode_is_malformed_body_not_500(
        server: Server, pool: asyncpg.Pool, world: World) -> None:
    """aiohttp decodes `Content-Encoding: gzip` bodies; one that is not gzip raised RequestPayloadError out of the body
    reader: 500 internal_error on pull, push and Open311 POST, and on a tus PATCH. A real gzip body still works."""
    import gzip

    from tests.test_uploads_support import TUS, metadata, noise_jpeg, photo_meta

    (rec,) = await make_tickets(pool, world, 1)
    token = world.device("san-1").token
    gz = {"Content-Encoding": "gzip"}
    r = await send(server.url, "POST", "/v1/sync/pull", {**device_headers(token), **gz}, b"not gzip at all")
    assert (r.status, r.json()["error"]["code"]) == (400, "malformed_body"), r.body[:200]
    r = await send(server.url, "POST", "/v1/sync/push", {**device_headers(token), **gz}, b"\x1f\x8b\x08\x00garbage")
    assert (r.status, r.json()["error"]["code"]) == (400, "malformed_body"), r.body[:200]
    assert await stored_results(pool) == 0
    r = await send(server.url, "POST", "/open311/v2/requests.json",
                   {"Content-Type": "application/x-www-form-urlencoded", **gz}, b"service_code=bulky_items")
    assert r.status == 400 and open311_error(r, "json")[0] == 400, r.body[:200]
    data = noise_jpeg()
    tus = {**TUS, "Authorization": f"Bearer {token}"}
    r = await send(server.url, "POST", "/v1/uploads", {**tus, "Upload-Length": str(len(data)),
                                                       "Upload-Metadata": metadata(photo_meta(data, rec.ticket.id))})
    assert r.status == 201, r.body[:200]
    path = urlsplit(r.headers["location"]).path
    r = await send(server.url, "PATCH", path, {**tus, **gz, "Upload-Offset": "0",
                                                     "Content-Type": "application/offset+octet-stream"}, b"not gzip")
    assert (r.status, r.json()["error"]["code"]) == (400, "malformed_body"), r.body[:200]
    r = await send(server.url, "HEAD", path, tus)
    assert (r.status, r.headers["upload-offset"]) == (200, "0")
    r = await send(server.url, "POST", "/v1/sync/pull", {**device_headers(token), **gz},
                   gzip.compress(b'{"cursor":null,"limit":5}'))
    assert r.status == 200 and len(r.json()["changes"]) == 1


async def test_console_form_with_an_undecodable_content_encoding_is_400(server: Server, world: World) -> None:
    """The console's form reader caught ValueError (a multipart without boundary) but not aiohttp's
    RequestPayloadError: a login POST with `Content-Encoding: gzip` on plain bytes was a 500."""
    r = await send(server.url, "POST", "/console/login", {"Content-Type": "application/x-www-form-urlencoded",
                                                          "Content-Encoding": "gzip"}, b"token=not-gzip")
    assert r.status == 400, (r.status, r.body[:200])


async def test_the_open311_photo_route_refuses_in_the_documented_xml_error_list(server: Server) -> None:
    """/openapi.json said JSON envelope for this route's 404 while a client asking msgpack got msgpack (schemathesis
    ST105 with Accept: application/msgpack); now both say the GeoReport error list, XML as the path names no .json."""
    doc = (await send(server.url, "GET", "/openapi.json", {})).json()
    op = doc["paths"]["/open311/v2/media/{sha256}.jpg"]["get"]
    assert op["responses"]["404"]["content"] == {"text/xml": {"schema": {"type": "string"}}}
    for accept in ("application/msgpack", "application/json", "*/*"):
        r = await send(server.url, "GET", "/open311/v2/media/" + "0" * 64 + ".jpg", {"Accept": accept})
        assert r.status == 404 and open311_error(r, "xml")[0] == 404, (accept, r.headers)


async def test_push_seqs_beyond_64_bits_are_422_in_msgpack_too(server: Server, world: World) -> None:
    """schemathesis (Accept: application/msgpack): non-consecutive seqs beyond 64 bits were refused with an envelope
    whose details echo them, and msgpack cannot write an integer over 2**64: a 500 instead of the 422."""
    headers = {**device_headers(world.device("san-1").token), "Accept": "application/msgpack"}
    for seqs in ([2**70, 2**70 + 2], [2**63]):
        body = json.dumps({"mutations": [{"seq": s} for s in seqs]}).encode()
        r = await send(server.url, "POST", "/v1/sync/push", headers, body)
        assert r.status == 422, (seqs, r.status, r.body[:200])
        assert msgpack.unpackb(r.body)["error"]["code"] == "validation_failed"


@pytest.mark.parametrize("coding", ["compress", "x-gzip", "gzip, gzip", "zstd-ish"])
async def test_a_content_coding_the_server_cannot_decode_is_415_with_accept_encoding(
        server: Server, pool: asyncpg.Pool, world: World, coding: str) -> None:
    """aiohttp decodes gzip and deflate (one coding); any other Content-Encoding reached the handler as undecoded bytes,
    which were then read as the body (a plain JSON push under `compress` was applied). RFC 9110: 415 with
    Accept-Encoding, before anything is read or written."""
    (rec,) = await make_tickets(pool, world, 1)
    token = world.device("san-1").token
    body = json.dumps({"mutations": [note(1, rec.ticket.id)]}).encode()
    r = await send(server.url, "POST", "/v1/sync/push", {**device_headers(token), "Content-Encoding": coding}, body)
    assert r.status == 415, (r.status, r.body[:200])
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert r.headers["accept-encoding"] == "deflate, gzip"
    assert await stored_results(pool) == 0
    r = await send(server.url, "POST", "/open311/v2/requests.json",
                   {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": coding}, b"service_code=x")
    assert r.status == 415 and open311_error(r, "json")[0] == 415, r.body[:200]
    # the same push with an identity coding named, and with none, is applied once
    r = await send(server.url, "POST", "/v1/sync/push", {**device_headers(token), "Content-Encoding": "Identity"}, body)
    assert r.status == 200 and r.json()["results"][0]["status"] == "applied", r.body[:200]
    assert await stored_results(pool) == 1

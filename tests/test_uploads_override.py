"""tus 1.0.0 core: "The X-HTTP-Method-Override request header MUST be a string which MUST be interpreted as the
request's method by the Server". Clients behind proxies that drop PATCH/DELETE (tus-js-client's overridePatchMethod,
which the crew app's library is built on) send POST with it; the server answered 405."""

from __future__ import annotations

import aiohttp
import asyncpg

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_uploads_support import auth, create, noise_jpeg, sha


async def tunnel(http: aiohttp.ClientSession, location: str, token: str, method: str, body: bytes = b"",
                 **extra: str) -> aiohttp.ClientResponse:
    """POST standing for `method`."""
    async with http.post(location, data=body, headers=auth(token, **{"X-HTTP-Method-Override": method, **extra})) as r:
        await r.read()
        return r


async def test_patch_head_and_delete_tunnelled_through_post(server: Server, world: World, pool: asyncpg.Pool) -> None:
    (t,) = await make_tickets(pool, world, 1)
    token = world.device("san-1").token
    data = noise_jpeg(200, 150, seed=9)
    octets = {"Content-Type": "application/offset+octet-stream"}
    async with aiohttp.ClientSession() as http:
        resp = await create(http, server.url, token, data, t.ticket.id)
        assert resp.status == 201
        location = resp.headers["Location"]
        half = len(data) // 2
        r = await tunnel(http, location, token, "PATCH", data[:half], **{"Upload-Offset": "0", **octets})
        assert (r.status, r.headers["Upload-Offset"], r.headers["Tus-Resumable"]) == (204, str(half), "1.0.0")
        r = await tunnel(http, location, token, "head")  # a method name in any case
        assert (r.status, r.headers["Upload-Offset"], r.headers["Upload-Length"]) == (200, str(half), str(len(data)))
        r = await tunnel(http, location, token, "PATCH", data[:10], **{"Upload-Offset": "0", **octets})
        assert r.status == 409 and r.headers["Upload-Offset"] == str(half)  # the PATCH rules apply as they are
        r = await tunnel(http, location, token, "PATCH", data[half:], **{"Upload-Offset": str(half), **octets})
        assert (r.status, r.headers["Upload-Offset"]) == (204, str(len(data)))
        assert await pool.fetchval("SELECT size FROM blobs WHERE sha256 = $1", sha(data)) == len(data)

        other = noise_jpeg(64, 48, seed=10)
        resp = await create(http, server.url, token, other, t.ticket.id)
        second = resp.headers["Location"]
        r = await tunnel(http, second, token, "DELETE")
        assert r.status == 204
        async with http.head(second, headers=auth(token)) as h:
            assert h.status == 404
        # POST on an upload without an override is a method the URL does not serve (nothing changes)
        async with http.post(location, headers=auth(token)) as r2:
            assert r2.status == 405 and (await r2.json())["error"]["code"] == "method_not_allowed"
            assert set(r2.headers["Allow"].split(", ")) == {"DELETE", "HEAD", "OPTIONS", "PATCH"}
        r = await tunnel(http, location, token, "GET")
        assert r.status == 405
    assert await pool.fetchval("SELECT count(*) FROM upload_sessions WHERE state = 'complete'") == 1

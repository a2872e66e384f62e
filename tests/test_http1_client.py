"""The load generators' lean HTTP/1.1 client (clients/sim/http1.py) against real servers on 127.0.0.1.

aiohttp's server for what a well-behaved server does (keep-alive, chunked, HEAD, 204, Connection: close, a slow
handler), and a raw asyncio server for what only a byte-level server can do (answers dribbled one byte at a time,
a close mid-body or before answering, an EOF-delimited body, bytes that are not HTTP). Expected values are written
here by hand; nothing is read back from the client under test.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from clients.sim.http1 import BadResponse, Client, ConnectionLost, RequestTimeout, header_block

HB = header_block({"Authorization": "Bearer t0k", "Accept": "application/msgpack"})
BIG = bytes(range(256)) * (5 * 4096)  # 5 MiB, a pattern whose every byte position matters


async def _peer(request: web.Request) -> web.Response:
    """The client's port as the server sees it: equal ports mean one reused connection."""
    return web.Response(text=str(request.transport.get_extra_info("peername")[1]))  # type: ignore[union-attr]


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b"alpha", b"beta", b"gamma"):
        await resp.write(part)
        await asyncio.sleep(0.005)
    await resp.write_eof()
    return resp


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=BIG)


async def _digest(request: web.Request) -> web.Response:
    return web.Response(text=hashlib.sha256(await request.read()).hexdigest() + " " + request.headers["Authorization"])


async def _doc(request: web.Request) -> web.Response:
    return web.Response(body=b"d" * 1234, content_type="application/octet-stream")


async def _empty(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _close(request: web.Request) -> web.Response:
    resp = web.Response(text="bye")
    resp.force_close()  # aiohttp answers with Connection: close and closes after the answer
    return resp


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1)
    return web.Response(text="late")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """A real aiohttp server on a free loopback port."""
    app = web.Application(client_max_size=8 << 20)
    app.router.add_get("/peer", _peer)
    app.router.add_get("/chunked", _chunked)
    app.router.add_get("/big", _big)
    app.router.add_post("/digest", _digest)
    app.router.add_get("/doc", _doc)  # aiohttp answers HEAD for a GET route
    app.router.add_get("/empty", _empty)
    app.router.add_get("/close", _close)
    app.router.add_get("/slow", _slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Script = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    """Start a byte-level server whose answer to each request head is the given script's writes."""
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    await script(head.split(b" ", 2)[1], writer)
                    if writer.is_closing():
                        return
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def test_keep_alive_reuses_one_connection(url: str) -> None:
    async with Client(url) as c:
        ports = [(await c.request("GET", "/peer", headers=HB)).body for _ in range(20)]
        assert len(set(ports)) == 1 and c.opened == 1


async def test_chunked_answer_is_reassembled(url: str) -> None:
    async with Client(url) as c:
        r = await c.request("GET", "/chunked")
        assert (r.status, r.body, r.headers.get("Transfer-Encoding")) == (200, b"alphabetagamma", "chunked")
        assert (await c.request("GET", "/chunked")).body == b"alphabetagamma" and c.opened == 1


async def test_answers_dribbled_one_byte_at_a_time(raw: Callable[[Script], Awaitable[str]]) -> None:
    answers = {b"/len": b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Test: yes\r\n\r\nhello world",
               b"/chunks": b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"}

    async def dribble(path: bytes, w: asyncio.StreamWriter) -> None:
        for i in range(len(answers[path])):
            w.write(answers[path][i:i + 1])
            await w.drain()
            await asyncio.sleep(0.0005)

    async with Client(await raw(dribble)) as c:
        r = await c.request("GET", "/len")
        assert (r.status, r.body, r.headers["x-test"]) == (200, b"hello world", "yes")
        r = await c.request("GET", "/chunks")
        assert (r.status, r.body) == (201, b"hello world")
        assert c.opened == 1


async def test_several_megabytes_each_way(url: str) -> None:
    sent = b"\x07\x00\xff" * 700_000  # 2.1 MB request body
    async with Client(url) as c:
        r = await c.request("GET", "/big")
        assert r.status == 200 and len(r.body) == 5 * 1024 * 1024 and r.body == BIG
        r = await c.request("POST", "/digest", body=sent, headers=HB)
        assert r.body.decode() == hashlib.sha256(sent).hexdigest() + " Bearer t0k"
        assert c.opened == 1


async def test_head_and_204_have_no_body_and_keep_the_connection(url: str) -> None:
    async with Client(url) as c:
        r = await c.request("HEAD", "/doc")
        assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "1234")
        r = await c.request("GET", "/empty")
        assert (r.status, r.body) == (204, b"")
        r = await c.request("GET", "/doc")  # the stream is still in step after both
        assert (r.status, r.body) == (200, b"d" * 1234)
        assert c.opened == 1


async def test_connection_close_is_honoured(url: str) -> None:
    async with Client(url) as c:
        r = await c.request("GET", "/close")
        assert (r.status, r.body, r.headers["Connection"].lower()) == (200, b"bye", "close")
        a = (await c.request("GET", "/peer")).body
        b = (await c.request("GET", "/peer")).body
        assert c.opened == 2 and a == b  # a new connection after the close, then that one is kept


async def test_close_mid_body_is_a_typed_error_and_the_next_request_works(raw: Callable[[Script], Awaitable[str]]) -> None:
    async def script(path: bytes, w: asyncio.StreamWriter) -> None:
        if path == b"/cut":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            await w.drain()
            w.close()
        elif path == b"/silent":
            w.close()
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with Client(await raw(script)) as c:
        with pytest.raises(ConnectionLost) as cut:
            await c.request("GET", "/cut")
        assert cut.value.answered and cut.value.sent
        assert (await c.request("GET", "/fine")).body == b"ok"
        with pytest.raises(ConnectionLost) as silent:
            await c.request("POST", "/silent", body=b"{}")
        assert not silent.value.answered and silent.value.sent
        assert (await c.request("GET", "/fine")).body == b"ok"
        assert c.opened == 3  # each close cost a new connection; nothing was re-sent behind the caller's back


async def test_body_until_close_and_bytes_that_are_not_http(raw: Callable[[Script], Awaitable[str]]) -> None:
    async def script(path: bytes, w: asyncio.StreamWriter) -> None:
        if path == b"/eof":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        else:
            w.write(b"SMTP is ready\r\n\r\n")
        await w.drain()
        w.close()

    async with Client(await raw(script)) as c:
        r = await c.request("GET", "/eof")
        assert (r.status, r.body) == (200, b"until the end")
        with pytest.raises(BadResponse):
            await c.request("GET", "/junk")


async def test_timeout_is_typed_and_the_next_request_works(url: str) -> None:
    async with Client(url, timeout=5.0) as c:
        with pytest.raises(RequestTimeout) as exc:
            await c.request("GET", "/slow", timeout=0.2)
        assert isinstance(exc.value, TimeoutError)
        assert (await c.request("GET", "/doc")).body == b"d" * 1234
        assert c.opened == 2  # the timed-out connection was not put back


async def test_the_pool_bounds_concurrent_connections(url: str) -> None:
    async with Client(url, limit=2) as c:
        answers = await asyncio.gather(*(c.request("GET", "/chunked") for _ in range(6)))
        assert [a.body for a in answers] == [b"alphabetagamma"] * 6
        assert c.opened == 2

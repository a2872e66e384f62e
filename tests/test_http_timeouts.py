"""Slow clients cannot hold connections: request heads and bodies are read within bounds (issue 10.13)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from sync_server.settings import Settings
from tests.conftest import Server, start_server
from tests.factories import World
from tests.rawhttp import parse

# A generous ceiling for "the server closed it": far above the 0.5 s bounds set below, far below pytest's timeout.
WAIT = 15.0


@pytest.fixture
async def slow_server(tmp_path: Path, db_dsn: str) -> AsyncIterator[Server]:
    """A server with head and body bounds set low, so the test does not wait for production defaults."""
    settings = Settings(data_dir=tmp_path / "data", demo_data=False, port=0, pool_min_size=1, pool_max_size=4,
                        header_timeout_s=0.5, body_timeout_s=0.5)
    srv = await start_server(settings, db_dsn)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    u = urlsplit(server.url)
    return await asyncio.open_connection(u.hostname, u.port)


async def test_half_a_request_line_is_closed_by_the_server(slow_server: Server) -> None:
    reader, writer = await connect(slow_server)
    writer.write(b"GET /healthz HT")
    await writer.drain()
    try:
        rest = await asyncio.wait_for(reader.read(), WAIT)  # EOF: the server hung up
    finally:
        writer.close()
    assert rest == b""


async def test_connection_that_never_sends_is_closed(slow_server: Server) -> None:
    reader, writer = await connect(slow_server)
    try:
        rest = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    assert rest == b""


async def test_half_a_second_request_on_a_kept_alive_connection_is_closed(slow_server: Server) -> None:
    reader, writer = await connect(slow_server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert first.startswith(b"HTTP/1.1 200")
    length = int(parse(first).headers["content-length"])
    assert b"ok" in await asyncio.wait_for(reader.readexactly(length), WAIT)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: ")
    await writer.drain()
    try:
        rest = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    assert rest == b""


async def test_stalled_body_is_408_and_the_connection_closed(slow_server: Server, world: World) -> None:
    reader, writer = await connect(slow_server)
    head = ("POST /v1/sync/pull HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            f"Authorization: Bearer {world.device('san-1').token}\r\n{VERSION_HEADER}: {PROTOCOL_VERSION}\r\n\r\n")
    writer.write(head.encode() + b'{"cursor":')
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    resp = parse(raw)
    assert resp.status == 408
    assert resp.json()["error"]["code"] == "request_timeout"
    assert resp.headers.get("connection") == "close"

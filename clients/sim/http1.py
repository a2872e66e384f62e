"""A lean asyncio HTTP/1.1 client for load generators (the simulator's devices and ops/bench).

Why not aiohttp here: on a 2-core machine the load generator shares the CPU with the server it measures, and
aiohttp's client spends ~1 ms of CPU per small request (request/response objects, cookie jar, tracing hooks,
timers, a StreamReader per body) -- more than the server's own work per empty poll. A phone's CPU is not the
server's, so the benchmark and the simulated fleet should cost as little as a client can while still doing
everything a real client must: full HTTP/1.1 response parsing (status line, headers, Content-Length, chunked and
EOF-delimited bodies) by llhttp through `httptools` (no hand-written parsing), a status check by the caller, the
whole body read. What is left out is only what these callers never use: redirects, cookies, proxies, TLS,
compression, streaming bodies.

Model: one `Client` per origin, a bounded pool of keep-alive connections (at most `limit`, like aiohttp's
TCPConnector(limit=...)), request headers pre-built as bytes by the caller (`header_block`), a request sent as
one transport.write, one response awaited at a time per connection (no pipelining). Every transport failure is a
`TransportError` subclass the callers classify: `ConnectError`, `ConnectionLost` (closed before or mid answer),
`BadResponse` (bytes llhttp refuses), `RequestTimeout` (also a TimeoutError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # methods that always state a length (0 when empty), like aiohttp


class TransportError(Exception):
    """The exchange failed below HTTP semantics; retrying on a new connection may succeed."""


class ConnectError(TransportError):
    """The TCP connection could not be opened (refused, unreachable)."""


class ConnectionLost(TransportError):
    """The server closed the connection before the whole answer arrived.

    `sent`: the request was written (False: found closed first, so the server never saw it); `answered`: some of
    the answer had arrived; `reused`: the connection had served an earlier request (an idle-close race).
    """

    def __init__(self, message: str, *, sent: bool = True, answered: bool = False, reused: bool = False) -> None:
        super().__init__(message)
        self.sent, self.answered, self.reused = sent, answered, reused


class BadResponse(TransportError):
    """The server's bytes are not valid HTTP/1.1 (llhttp refused them); the connection is closed."""


class RequestTimeout(TransportError, TimeoutError):
    """No complete answer within the request's timeout (pool wait, connect, send and receive together)."""


def header_block(headers: Mapping[str, str]) -> bytes:
    """Pre-build 'Name: value\\r\\n' lines once (per device or per request kind), so a request costs one join."""
    out = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n") or ":" in name:
            raise ValueError(f"header {name!r} would split the request head")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")


class Headers:
    """Response headers, read case-insensitively; the dict is built on first read (most answers are never asked)."""

    __slots__ = ("_raw", "_map")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._map is None:
            m: dict[str, str] = {}
            for k, v in self._raw:
                key, val = k.decode("latin-1").lower(), v.decode("latin-1")
                m[key] = f"{m[key]}, {val}" if key in m else val  # RFC 9110 5.3: repeated fields join with commas
            self._map = m
        return self._map

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value (repeated fields comma-joined), or `default`."""
        return self._dict().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._dict()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._dict()

    def items(self) -> list[tuple[str, str]]:
        """Every (lower-case name, value)."""
        return list(self._dict().items())


class Response:
    """A complete answer: status, headers and the whole body (already read)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class _Conn(asyncio.Protocol):
    """One keep-alive connection: feeds llhttp and resolves the one outstanding request's future."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep = True
        self.idle_since = 0.0
        self.requests = 0
        self.fut: asyncio.Future[Response] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.head = False
        self.raw: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.got_bytes = False
        self.headers_done = False
        self.eof_body = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.fut is None or self.parser is None:  # bytes nobody asked for: the stream is out of step
            self._close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid HTTP response: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.fut is None or self.fut.done():
            return
        if self.eof_body:  # no Content-Length, not chunked: the body is what came before the close
            self.on_message_complete()
            return
        what = "mid-body" if self.headers_done else ("mid-head" if self.got_bytes else "before answering")
        self._fail(ConnectionLost(f"server closed the connection {what}", answered=self.got_bytes,
                                  reused=self.requests > 1))

    # -- llhttp callbacks (httptools)
    def on_message_begin(self) -> None:
        if self.fut is None:  # an answer nobody asked for: the stream is out of step
            self._close()
        self.raw, self.chunks, self.headers_done, self.eof_body = [], [], False, False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        status = self.parser.get_status_code()  # type: ignore[union-attr]
        if self.head and status >= 200:  # llhttp cannot know the request was HEAD: there is no body, whatever it says
            self.keep = self.parser.should_keep_alive()  # type: ignore[union-attr]
            self._complete(status)
            return
        if status >= 200 and status not in (204, 304):
            names = {k.lower() for k, _ in self.raw}
            self.eof_body = b"content-length" not in names and b"transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        if parser is None or self.fut is None or self.fut.done():
            return
        status = parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows on the same stream
            return
        self.keep = (not self.eof_body) and parser.should_keep_alive()
        self._complete(status)

    # -- request side
    def _complete(self, status: int) -> None:
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        fut = self.fut
        self.fut, self.parser, self.eof_body = None, None, False
        if not self.keep:
            self._close()
        if fut is not None and not fut.done():
            fut.set_result(Response(status, Headers(self.raw), body))

    def _fail(self, exc: TransportError) -> None:
        fut, self.fut, self.parser = self.fut, None, None
        self.keep = False
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _close(self) -> None:
        self.keep = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def send(self, data: bytes, head: bool) -> asyncio.Future[Response]:
        """Write one whole request and return the future of its answer."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionLost("connection closed before sending", sent=False, reused=self.requests > 0)
        self.requests += 1
        self.head, self.got_bytes, self.headers_done, self.eof_body = head, False, False, False
        self.raw, self.chunks = [], []
        self.parser = httptools.HttpResponseParser(self)
        self.fut = self.loop.create_future()
        self.transport.write(data)
        return self.fut


class Client:
    """A bounded pool of keep-alive HTTP/1.1 connections to one origin (http:// only: loopback load generation)."""

    def __init__(self, base_url: str, *, limit: int | None = 100, timeout: float | None = 30.0,
                 keepalive_s: float = 15.0) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"http1.Client speaks plain http to a host, not {base_url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.base = f"http://{u.netloc}{self.prefix}"
        self.timeout, self.keepalive_s = timeout, keepalive_s
        self._host_line = f"Host: {u.netloc}\r\n".encode("latin-1")
        self._sem = asyncio.Semaphore(limit) if limit else None
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self.opened = 0  # connections opened so far (keep-alive reuse shows as few)
        self.closed = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; the client cannot be used afterwards."""
        self.closed = True
        for conn in list(self._all):
            conn._close()
        self._idle.clear()
        self._all.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost

    def head_bytes(self, method: str, path: str, headers: bytes, body_len: int) -> bytes:
        """The request head: request line, Host, the caller's pre-built lines, Content-Length when there is a body."""
        length = b"Content-Length: %d\r\n" % body_len if body_len or method in _WITH_BODY else b""
        return b"".join((f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_line, headers,
                         length, b"\r\n"))

    async def request(self, method: str, path: str, *, body: bytes | None = None, headers: bytes = b"",
                      timeout: float | None = -1.0) -> Response:
        """Send one request (`headers` from header_block) and return the whole answer; raises TransportError."""
        if self.closed:
            raise ConnectError("client is closed")
        data = self.head_bytes(method, path, headers, len(body) if body else 0)
        if body:
            data += body
        limit = self.timeout if timeout is not None and timeout < 0 else timeout
        try:
            async with asyncio.timeout(limit):
                try:
                    return await self._exchange(method, data)
                except ConnectionLost as exc:
                    # A pooled connection the server closed while idle: re-sent once on a new connection if the
                    # server cannot have seen it (never written), or if it got no answer byte and the method is
                    # idempotent (aiohttp's rule). Anything else is the caller's to classify.
                    if exc.reused and (not exc.sent or (not exc.answered and method in _IDEMPOTENT)):
                        return await self._exchange(method, data)
                    raise
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeout):
                raise
            raise RequestTimeout(f"{method} {path}: no complete answer within {limit} s") from None

    async def _exchange(self, method: str, data: bytes) -> Response:
        sem = self._sem
        if sem is not None:
            await sem.acquire()
        conn: _Conn | None = None
        ok = False
        try:
            conn = await self._conn()
            resp = await conn.send(data, method == "HEAD")
            ok = True
            return resp
        finally:
            if conn is not None:
                if ok and conn.keep and not conn.closed and not self.closed:
                    conn.idle_since = conn.loop.time()
                    self._idle.append(conn)
                else:  # failed, cancelled or timed out mid-exchange: the stream is in an unknown state
                    if conn.fut is not None and not conn.fut.done():
                        conn.fut.cancel()
                    conn.fut = None
                    conn._close()
                    self._all.discard(conn)
            if sem is not None:
                sem.release()

    async def _conn(self) -> _Conn:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the others age out
            if conn.keep and not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn._close()  # expired before the server's own idle close can race a request
            self._all.discard(conn)
        try:
            _, conn = await loop.create_connection(lambda: _Conn(loop), self.host, self.port)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self.opened += 1
        self._all.add(conn)
        return conn

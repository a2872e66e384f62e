"""A TCP relay in front of the test server that a browser test can cut: a mobile network that drops a push's answer
after the server committed it, then refuses connections for a while, without the browser ever reporting offline."""

from __future__ import annotations

import asyncio
import contextlib


class Relay:
    """Loopback relay to `upstream_port`; `drop_answer_to(prefix)` loses the answer to the next request starting so."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.answers_dropped = 0
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._drop_prefix: bytes | None = None
        self.cut_event = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Relay:
        """Listen (on the same port again after a cut, so the app's origin stays the same)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_answer_to(self, request_prefix: bytes) -> None:
        """Arm: the next request whose first bytes are `request_prefix` reaches the server, its answer does not, and
        the relay then refuses every connection until `start()` is called again."""
        self._drop_prefix = request_prefix
        self.cut_event.clear()

    async def cut(self) -> None:
        """Stop listening and reset every open connection (a dead spot)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._open):
            w.transport.abort()
        self._open.clear()
        self.cut_event.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_w))
        armed = asyncio.Event()  # this connection carried the request whose answer is to be lost

        async def to_server() -> None:
            while data := await reader.read(65536):
                if self._drop_prefix is not None and data.startswith(self._drop_prefix):
                    self._drop_prefix = None
                    armed.set()
                up_w.write(data)
                await up_w.drain()

        async def to_phone() -> None:
            while data := await up_r.read(65536):
                if armed.is_set():  # the server committed and answered: the phone never hears it
                    self.answers_dropped += 1
                    await self.cut()
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_phone())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (writer, up_w):
            self._open.discard(w)
            w.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)

"""A raw-socket HTTP/1.1 client for tests that need control over TCP segmenting, pauses and half-sent requests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    """Status, lower-cased headers and body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (error envelopes and JSON answers)."""
        return json.loads(self.body)


def head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    """Request line and headers; Connection: close so the answer ends at EOF."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send(url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"", *,
               parts: int = 1, pause: float = 0.0, timeout: float = 30.0) -> RawResponse:
    """Send the body in `parts` separate writes with `pause` seconds between them (bounded by the caller)."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(head(method, path, headers, len(body) if body or method in ("POST", "PATCH", "PUT") else None))
        await writer.drain()
        size = -(-len(body) // parts) if body else 0
        for i in range(parts):
            chunk = body[i * size:(i + 1) * size]
            if not chunk:
                break
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(chunk)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return parse(raw)


def parse(raw: bytes) -> RawResponse:
    """Split a full answer read to EOF (chunked bodies are decoded)."""
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        out, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line, 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        body = bytes(out)
    return RawResponse(status, headers, body)

"""The benchmark's HTTP client, two ways: the lean one (clients/sim/http1.py, the default) and aiohttp (the old one).

Why two: the benchmark runs on the 2 cores it measures, and aiohttp's client spent more CPU per empty poll and per
pull page than the server did, so part of every p99 was the load generator. The lean client does the same work a
real client must (whole HTTP/1.1 answer parsed, status checked by the caller, whole body read and decoded) with
less overhead; `--client aiohttp` keeps the old path so before/after figures stay comparable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

try:
    from clients.sim import http1  # noqa: E402
except ModuleNotFoundError as exc:  # a venv made before pyproject gained httptools
    raise SystemExit(f"{exc}: refresh the venv (bash ops/test.sh does it, or .venv/bin/pip install -e .)") from exc

CLIENTS = ("lean", "aiohttp")


class LeanClient:
    """Keep-alive pool of `limit` connections; per-device header bytes built once."""

    name = "lean"

    def __init__(self, url: str, limit: int = 200) -> None:
        self.http = http1.Client(url, limit=limit, timeout=300.0)  # aiohttp's default total timeout, as before

    def prepare(self, headers: dict[str, str]) -> Any:
        """Headers in the form call() takes: pre-built bytes."""
        return http1.header_block(headers)

    async def call(self, method: str, path: str, body: bytes | None, headers: Any) -> tuple[int, bytes]:
        """(status, whole body)."""
        r = await self.http.request(method, path, body=body, headers=headers)
        return r.status, r.body

    async def close(self) -> None:
        """Close the pool."""
        await self.http.close()


class AiohttpClient:
    """The benchmark's original client: one aiohttp session, TCPConnector(limit=200)."""

    name = "aiohttp"

    def __init__(self, url: str, limit: int = 200) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))

    def prepare(self, headers: dict[str, str]) -> Any:
        """Headers in the form call() takes: a dict."""
        return headers

    async def call(self, method: str, path: str, body: bytes | None, headers: Any) -> tuple[int, bytes]:
        """(status, whole body)."""
        async with self.http.request(method, self.url + path, data=body, headers=headers) as r:
            return r.status, await r.read()

    async def close(self) -> None:
        """Close the session."""
        await self.http.close()


def make(name: str, url: str) -> LeanClient | AiohttpClient:
    """The client named on the command line."""
    return LeanClient(url) if name == "lean" else AiohttpClient(url)

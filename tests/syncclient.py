"""A small real-HTTP device client for tests: speaks the protocol package over aiohttp like a phone."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import aiohttp

from clients.sim.replica import Replica
from protocol import JSON, MSGPACK, PROTOCOL_VERSION, VERSION_HEADER, PullResponse, PushResponse, decode, encode
from protocol import PullRequest


class DeviceClient:
    """One device: token, replica, seq counter."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, media: str = MSGPACK) -> None:
        self.http, self.url, self.token, self.media = http, url, token, media
        self.replica = Replica()
        self.seq = 0

    def headers(self) -> dict[str, str]:
        """Auth, version and media headers for every request."""
        return {"Authorization": f"Bearer {self.token}", VERSION_HEADER: str(PROTOCOL_VERSION),
                "Content-Type": self.media, "Accept": self.media}

    async def raw(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST raw bytes, return (status, body)."""
        async with self.http.post(self.url + path, data=body, headers=self.headers()) as r:
            return r.status, await r.read()

    async def pull_once(self, cursor: str | None, limit: int = 500) -> PullResponse:
        """One page."""
        status, body = await self.raw("/v1/sync/pull", encode(PullRequest(cursor=cursor, limit=limit), self.media))
        assert status == 200, body[:500]
        return decode(body, self.media, PullResponse)

    async def pull(self, limit: int = 500) -> list[PullResponse]:
        """Pull to the head and apply the page set."""
        pages = [await self.pull_once(self.replica.cursor, limit)]
        while pages[-1].has_more:
            pages.append(await self.pull_once(pages[-1].cursor, limit))
        self.replica.apply_pages(pages)
        return pages

    def mutation(self, op: str, ticket_id: UUID, args: dict[str, Any] | None = None, *, base_version: int | None = None,
                 seq: int | None = None) -> dict[str, Any]:
        """Build the next mutation dict (allocates a seq unless given)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        if base_version is None and ticket_id in self.replica.tickets:
            base_version = self.replica.tickets[ticket_id].version
        return {"seq": seq, "op": op, "ticket_id": str(ticket_id), "args": args or {}, "base_version": base_version,
                "device_time": datetime.now(timezone.utc).isoformat()}

    async def push_raw(self, mutations: list[dict[str, Any]]) -> tuple[int, Any]:
        """Push; returns (status, PushResponse or decoded error dict)."""
        import json

        import msgpack

        body = msgpack.packb({"mutations": mutations}) if self.media == MSGPACK else json.dumps({"mutations": mutations}).encode()
        status, resp = await self.raw("/v1/sync/push", body)
        if status == 200:
            return status, decode(resp, self.media, PushResponse)
        return status, (msgpack.unpackb(resp) if self.media == MSGPACK else json.loads(resp))

    async def push(self, mutations: list[dict[str, Any]]) -> PushResponse:
        """Push and insist on 200."""
        status, resp = await self.push_raw(mutations)
        assert status == 200, resp
        return resp


__all__ = ["DeviceClient", "JSON", "MSGPACK"]


class SupervisorClient:
    """Supervisor actions over the real JSON API."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token

    async def call(self, method: str, path: str, body: Any = None, expect: int | None = 200) -> Any:
        """JSON request; asserts the status when `expect` is given."""
        async with self.http.request(method, self.url + path, json=body,
                                     headers={"Authorization": f"Bearer {self.token}"}) as r:
            data = await r.json()
            if expect is not None:
                assert r.status == expect, (r.status, data)
            return data

    async def assign(self, ticket_id: UUID, crew: str) -> Any:
        """Reassign one ticket."""
        return await self.call("POST", f"/v1/tickets/{ticket_id}/assign", {"crew": crew})

    async def cancel(self, ticket_id: UUID, reason: str = "resident cancelled") -> Any:
        """Cancel one ticket."""
        return await self.call("POST", f"/v1/tickets/{ticket_id}/cancel", {"reason": reason})

    async def duplicate(self, ticket_id: UUID, of: UUID) -> Any:
        """Mark a duplicate."""
        return await self.call("POST", f"/v1/tickets/{ticket_id}/duplicate", {"of": str(of)})

    async def close(self, ticket_id: UUID) -> Any:
        """Close a finished ticket."""
        return await self.call("POST", f"/v1/tickets/{ticket_id}/close", {})

    async def conflicts(self, **query: str) -> list[dict[str, Any]]:
        """Open conflicts of the supervisor's department."""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return (await self.call("GET", "/v1/conflicts" + (f"?{qs}" if qs else "")))["conflicts"]

"""protocol/SPEC.md §9, as a client written from it reads it: "the server refuses [a cursor] longer than [2048
characters] with `cursor_invalid` and accepts one of exactly 2048". The model's max_length answered 422
validation_failed instead, which a SPEC client does not treat as "pull again with cursor null"."""

from __future__ import annotations

import aiohttp

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from tests.conftest import Server
from tests.factories import World


async def test_an_overlong_cursor_is_cursor_invalid_like_any_forged_one(server: Server, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.device('san-1').token}", VERSION_HEADER: str(PROTOCOL_VERSION)}
    async with aiohttp.ClientSession() as http:
        for length in (2048, 2049, 60_000):
            async with http.post(server.url + "/v1/sync/pull", json={"cursor": "a" * length, "limit": 10},
                                 headers=headers) as r:
                body = await r.json()
                assert (r.status, body["error"]["code"]) == (400, "cursor_invalid"), (length, body)
        async with http.post(server.url + "/v1/sync/pull", json={"cursor": None, "limit": 10}, headers=headers) as r:
            assert r.status == 200  # and the recovery the code asks for works

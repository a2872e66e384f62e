"""Shared partial uploads: which stored pieces rebuild an upload (pure), a rebuild through a real filesystem store, and
no acknowledgement for bytes the shared store did not take."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg
from pydantic import SecretStr

from sync_server.blobs.fs import FsBlobStore
from sync_server.engine.upload_parts import _chain, _parse, forget, piece_key, restore, save_piece
from sync_server.settings import Settings
from tests.conftest import start_server
from tests.factories import World, make_tickets
from tests.infra import free_port
from tests.test_uploads_support import create, head_offset, noise_jpeg, patch


def test_piece_names_carry_their_range() -> None:
    assert piece_key("abc", 0, 1500) == "partials/abc/000000000000-000000001500"


def test_chain_lays_pieces_end_to_end() -> None:
    assert _chain({0: [100], 100: [250], 250: [400]}, 400) == [(0, 100), (100, 250), (250, 400)]


def test_chain_skips_a_piece_whose_acknowledgement_was_lost() -> None:
    # [100, 300) was stored but its host died before the offset moved; the retry from 100 sent a shorter chunk
    assert _chain({0: [100], 100: [300, 180], 180: [260]}, 260) == [(0, 100), (100, 180), (180, 260)]


def test_chain_stops_at_a_gap_with_the_longest_run() -> None:
    assert _chain({0: [100], 100: [200], 300: [400]}, 400) == [(0, 100), (100, 200)]
    assert _chain({}, 50) == []


def test_pieces_whose_size_disagrees_with_their_name_are_ignored() -> None:
    keys = {"partials/u1/000000000000-000000000010": 10, "partials/u1/000000000010-000000000020": 7,
            "partials/u1/junk": 3}
    assert _parse("u1", keys) == {0: [10]}


async def test_rebuild_from_pieces_in_a_store(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path / "store")
    data = bytes(range(256)) * 4
    here = tmp_path / "host-a.part"
    here.write_bytes(data)
    await save_piece(store, here, "u1", 0, 300)
    await save_piece(store, here, "u1", 300, 1000)
    there = tmp_path / "host-b" / "u1.part"
    assert await restore(store, "u1", there, 1000) == 1000
    assert there.read_bytes() == data[:1000]
    # asked for more than was stored: rebuilt up to the last piece, the caller resumes the client from there
    assert await restore(store, "u1", there, 1024) == 1000
    await forget(store, "u1")
    assert await store.list_keys("partials/") == {}
    assert await restore(store, "u1", there, 1000) == 0
    assert there.read_bytes() == b""


async def test_a_piece_the_store_refuses_is_not_acknowledged(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World
) -> None:
    # an S3 endpoint where nothing listens: every PUT fails, like a bucket outage
    down = settings.model_copy(update={
        "upload_partials": "store", "blob_backend": "s3", "s3_bucket": "photos", "s3_access_key_id": SecretStr("x"),
        "s3_secret_access_key": SecretStr("x"), "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
    })
    srv = await start_server(down, db_dsn)
    try:
        (t,) = await make_tickets(pool, world, 1)
        token = world.device("san-1").token
        photo = noise_jpeg(64, 48, seed=3)
        async with aiohttp.ClientSession() as http:
            created = await create(http, srv.url, token, photo, t.ticket.id)
            location = created.headers["Location"]
            r = await patch(http, location, token, 0, photo[:100])
            assert r.status == 503 and r.headers.get("Retry-After") == "2"
            # the 100 bytes are on this host's disk but not in the shared store, so the offset did not move
            assert await head_offset(http, location, token) == (200, 0)
    finally:
        await srv.runner.cleanup()

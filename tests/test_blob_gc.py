"""Photo collection: unattached photos and bytes left by a failed commit are deleted after their grace period; a photo
a ticket shows, or that an open upload may complete with, never is. Real server, real PostgreSQL, real S3 (moto)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from sync_server.blobs import Variant, blob_key
from sync_server.blobs.fs import FsBlobStore
from sync_server.blobs.s3 import S3BlobStore
from sync_server.engine.blob_gc import collect
from sync_server.engine.upload_parts import piece_key
from sync_server.settings import Settings
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.test_blobs import _bucket, moto_url  # noqa: F401 - the module-scoped moto server fixture
from tests.test_uploads_support import create, noise_jpeg, sha, upload

_POISON = """
CREATE TABLE gc_poison (sha256 text PRIMARY KEY);
CREATE FUNCTION gc_poison_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM gc_poison WHERE sha256 = NEW.sha256) THEN
        RAISE EXCEPTION 'simulated failure of the verification commit';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gc_poison BEFORE INSERT ON blobs FOR EACH ROW EXECUTE FUNCTION gc_poison_check();
"""


def _age_files(root: Path, seconds: float) -> None:
    """Make every stored object look written `seconds` ago."""
    then = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (then, then))


async def test_collects_unattached_and_failed_commit_bytes_never_shown_or_pending(
    server: Server, pool: asyncpg.Pool, world: World, settings: Settings,
) -> None:
    (rec,) = await make_tickets(pool, world, 1)
    tid = rec.ticket.id
    shown, unattached, pending, failed = (noise_jpeg(96, 64, seed=s) for s in (1, 2, 3, 4))
    store = FsBlobStore(settings.data_dir / "blobs")
    dev, stranger = world.device("san-1"), world.device("san-2")
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                           " VALUES ($1, $2, 'after', now(), $3)", tid, sha(shown), dev.device_id)
        await conn.execute(_POISON)
        await conn.execute("INSERT INTO gc_poison VALUES ($1)", sha(failed))
    async with aiohttp.ClientSession() as http:
        for data in (shown, unattached, pending):
            assert (await upload(http, server.url, dev.token, data, tid)).status == 204
        # Another crew's device starts uploading `pending`: it must send the bytes, so its session stays open.
        (other,) = await make_tickets(pool, world, 1, crew="san-2")
        assert (await create(http, server.url, stranger.token, pending, other.ticket.id)).status == 201
        # The last PATCH of `failed` publishes the bytes, then its verification transaction rolls back.
        resp = await upload(http, server.url, dev.token, failed, tid)
        assert resp.status == 500
    assert store.path(blob_key(Variant.ORIGINAL, sha(failed))).is_file()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", sha(failed)) == 0

    young = await collect(pool, store, settings)  # nothing is old enough yet
    assert (young.unattached, young.orphans) == (0, 0)

    # Time passes: a month for the rows, days for the bytes; the expiry sweep ended the failed upload's session.
    # (The server's own collector ran at start-up and remembered where it stopped: a month before then.)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE blobs SET verified_at = now() - interval '30 days 1 hour'")
        await conn.execute("UPDATE upload_sessions SET updated_at = now() - interval '30 days 1 hour'")
        await conn.execute("UPDATE upload_sessions SET state = 'expired' WHERE sha256 = $1", sha(failed))
    _age_files(store.root, 3 * 86400)
    report = await collect(pool, store, settings)
    assert (report.unattached, report.orphans) == (1, 1)
    for data, kept in ((shown, True), (pending, True), (unattached, False), (failed, False)):
        assert store.path(blob_key(Variant.ORIGINAL, sha(data))).is_file() is kept, data is shown
    async with pool.acquire() as conn:
        rows = {r["sha256"] for r in await conn.fetch("SELECT sha256 FROM blobs")}
        possessed = {r["sha256"] for r in await conn.fetch("SELECT sha256 FROM photo_possession")}
    assert rows == possessed == {sha(shown), sha(pending)}
    # The photo the ticket shows is still served.
    async with aiohttp.ClientSession() as http:
        sup = {"Authorization": f"Bearer {world.supervisors['sanitation']}"}
        async with http.get(f"{server.url}/v1/photos/{sha(shown)}?variant=original", headers=sup) as r:
            assert r.status == 200 and await r.read() == shown


async def test_stored_partials_of_ended_uploads_are_collected(pool: asyncpg.Pool, world: World, settings: Settings
                                                              ) -> None:
    (rec,) = await make_tickets(pool, world, 1)
    store = FsBlobStore(settings.data_dir / "blobs")
    async with pool.acquire() as conn:
        for upload_id, state in (("live-upload", "open"), ("ended-upload", "expired")):
            await conn.execute(
                "INSERT INTO upload_sessions (id, device_id, sha256, ticket_id, kind, taken_at, length, state,"
                " expires_at) VALUES ($1, $2, $3, $4, 'after', now(), 100, $5, now() + interval '1 day')",
                upload_id, world.device("san-1").device_id, "ab" * 32, rec.ticket.id, state)
    for upload_id in ("live-upload", "ended-upload", "crashed-before-row"):
        await store.put_bytes(piece_key(upload_id, 0, 10), b"0123456789", "application/octet-stream")
    _age_files(store.root, 3 * 86400)
    report = await collect(pool, store, settings)
    assert report.partials == 2
    assert sorted(await store.list_keys("partials/")) == [piece_key("live-upload", 0, 10)]


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_s3_orphans_without_row_are_deleted_and_rows_kept(
    moto_url: str, pool: asyncpg.Pool, world: World, settings: Settings,  # noqa: F811
) -> None:
    bucket = f"gc-{os.urandom(4).hex()}"
    _bucket(moto_url, bucket)
    store = S3BlobStore(bucket=bucket, endpoint_url=moto_url, region="us-east-1", access_key_id="test",
                        secret_access_key="test")
    (rec,) = await make_tickets(pool, world, 1)
    kept, orphan = "1" * 64, "2" * 64
    try:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO blobs (sha256, size, media_type) VALUES ($1, 5, 'image/jpeg')", kept)
            await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by, verified)"
                               " VALUES ($1, $2, 'after', now(), 'x', true)", rec.ticket.id, kept)
        for digest in (kept, orphan):
            await store.put_bytes(blob_key(Variant.ORIGINAL, digest), b"bytes", "image/jpeg")
        await store.put_bytes(f"thumb/v2/22/22/{orphan}", b"t", "image/jpeg")
        await asyncio.sleep(0.05)
        quick = settings.model_copy(update={"blob_orphan_grace_hours": 0.00001})  # S3 keeps its own LastModified
        report = await collect(pool, store, quick)
        assert report.orphans == 2
        assert sorted(await store.list_keys("")) == [blob_key(Variant.ORIGINAL, kept)]
    finally:
        await store.close()

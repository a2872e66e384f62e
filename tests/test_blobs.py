"""Blob stores: filesystem crash safety (a real crashed process), and the S3 store against a real moto S3 server."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from PIL import Image

from sync_server.blobs import Variant, blob_key
from sync_server.blobs.fs import FsBlobStore
from sync_server.blobs.s3 import S3BlobStore
from sync_server.settings import Settings
from tests.conftest import start_server
from tests.factories import World, make_tickets
from tests.test_uploads_support import noise_jpeg, sha, upload

KEY = blob_key(Variant.ORIGINAL, "ab" * 32)


async def _read_all(store: FsBlobStore | S3BlobStore, key: str, start: int, end: int) -> bytes:
    return b"".join([c async for c in store.read_range(key, start, end)])


async def test_fs_store_publishes_atomically(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path / "blobs")
    assert await store.stat(KEY) is None
    src = tmp_path / "src"
    src.write_bytes(b"x" * 300_000)
    await store.put_file(KEY, src, "image/jpeg", consume=True)
    assert not src.exists()  # moved, not copied
    stat = await store.stat(KEY)
    assert stat is not None and stat.size == 300_000
    assert await _read_all(store, KEY, 1000, 1010) == b"x" * 10
    assert (tmp_path / "blobs" / "original" / "ab" / "ab" / ("ab" * 32)).is_file()
    await store.delete(KEY)
    assert await store.stat(KEY) is None


_CRASH = """
import os, sys
from pathlib import Path
from sync_server.blobs.fs import FsBlobStore
store = FsBlobStore(Path(sys.argv[1]))
tmp = store.write_temp(sys.argv[2], b"torn photo bytes")  # synced temp file, rename not yet done
os._exit(9)  # the process dies exactly between write and rename
"""


def test_fs_store_crash_before_rename_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(root), KEY], cwd=Path(__file__).parent.parent, timeout=60)
    assert proc.returncode == 9
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")  # the crash really left a temp file
    store = FsBlobStore(root)
    assert store._stat_sync(KEY) is None and not store.path(KEY).exists()
    # A new writer publishes the whole object; the sweep removes the stale temp file, never a published one.
    store._put_bytes_sync(KEY, b"whole photo")
    os.utime(leftovers[0], (time.time() - 7200, time.time() - 7200))
    assert store.sweep_temp(older_than=3600) == 1
    assert store.path(KEY).read_bytes() == b"whole photo"
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["ab" * 32]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on loopback, in its own process."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    raise RuntimeError("moto_server exited") from None
                time.sleep(0.05)
        else:
            raise RuntimeError("moto_server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _bucket(moto_url: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=name)


@pytest.fixture
async def s3_store(moto_url: str) -> AsyncIterator[S3BlobStore]:
    name = f"photos-{os.urandom(4).hex()}"
    _bucket(moto_url, name)
    store = S3BlobStore(bucket=name, endpoint_url=moto_url, region="us-east-1", access_key_id="test",
                        secret_access_key="test")
    yield store
    await store.close()


async def test_s3_store_round_trip(s3_store: S3BlobStore, tmp_path: Path) -> None:
    assert await s3_store.stat(KEY) is None
    data = os.urandom(700_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    await s3_store.put_file(KEY, src, "image/jpeg")
    stat = await s3_store.stat(KEY)
    assert stat is not None and stat.size == len(data)
    assert await _read_all(s3_store, KEY, 0, len(data)) == data
    assert await _read_all(s3_store, KEY, 5, 300_005) == data[5:300_005]
    dest = tmp_path / "dest"
    await s3_store.fetch_to(KEY, dest)
    assert dest.read_bytes() == data
    await s3_store.put_bytes(blob_key(Variant.THUMB, "ab" * 32), b"thumb", "image/jpeg")
    assert (await s3_store.stat(blob_key(Variant.THUMB, "ab" * 32))).size == 5  # type: ignore[union-attr]
    await s3_store.delete(KEY)
    assert await s3_store.stat(KEY) is None


async def test_upload_and_download_with_s3_backend(moto_url: str, world: World, pool: asyncpg.Pool, db_dsn: str,
                                                   settings: Settings) -> None:
    bucket = f"fs-{os.urandom(4).hex()}"
    _bucket(moto_url, bucket)
    s3 = settings.model_copy(update={
        "blob_backend": "s3", "s3_bucket": bucket, "s3_endpoint_url": moto_url, "s3_region": "us-east-1",
        "s3_access_key_id": "test", "s3_secret_access_key": "test",
    })
    srv = await start_server(Settings.model_validate(s3.model_dump()), db_dsn)
    try:
        (t,) = await make_tickets(pool, world, 1)
        dev = world.device("san-1")
        data = noise_jpeg(900, 700, seed=77)
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                               " VALUES ($1, $2, 'after', now(), 'x')", t.ticket.id, sha(data))
        async with aiohttp.ClientSession() as http:
            assert (await upload(http, srv.url, dev.token, data, t.ticket.id, chunk=50_000)).status == 204
            sup = {"Authorization": f"Bearer {world.supervisors['sanitation']}"}
            async with http.get(f"{srv.url}/v1/photos/{sha(data)}?variant=original", headers=sup) as r:
                assert r.status == 200 and await r.read() == data
            async with http.get(f"{srv.url}/v1/photos/{sha(data)}?variant=original", headers={**sup, "Range": "bytes=10-19"}) as r:
                assert r.status == 206 and await r.read() == data[10:20]
                assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
            async with http.get(f"{srv.url}/v1/photos/{sha(data)}?variant=thumb", headers=sup) as r:
                assert r.status == 200 and max(Image.open(io.BytesIO(await r.read())).size) == 320
        import boto3

        keys = [o["Key"] for o in boto3.client(
            "s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
        ).list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert sorted(keys) == sorted([f"photos/{blob_key(Variant.ORIGINAL, sha(data))}",
                                       f"photos/thumb/v2/{sha(data)[:2]}/{sha(data)[2:4]}/{sha(data)}"])
        assert not any((settings.data_dir / "blobs").rglob("*")) if (settings.data_dir / "blobs").exists() else True
    finally:
        await srv.runner.cleanup()

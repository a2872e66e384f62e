"""S3-compatible blob store (AWS, MinIO, Ceph): boto3 calls in the executor, objects published by single PUTs (atomic)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from sync_server.blobs.base import CHUNK, BlobStat, BlobStore, BlobStoreUnavailable, ObjectInfo

log = structlog.get_logger(__name__)


@contextmanager
def _unavailable() -> Iterator[None]:
    """botocore's errors (endpoint down, throttled, refused) become the store's typed retryable error."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise BlobStoreUnavailable(str(exc)) from exc


class S3BlobStore(BlobStore):
    """One boto3 client (thread-safe) driven from a small private pool, so slow S3 never starves the default executor."""

    def __init__(
        self, *, bucket: str, endpoint_url: str | None = None, region: str | None = None,
        access_key_id: str | None = None, secret_access_key: str | None = None, prefix: str = "photos/",
        max_threads: int = 8,
    ) -> None:
        import boto3  # optional extra `s3`: imported only when this backend is chosen
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=max_threads,
                          connect_timeout=5, read_timeout=30),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="fieldsync-s3")

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def stat(self, key: str) -> BlobStat | None:
        """HEAD the object; S3 shows an object only after its PUT (or multipart completion) succeeded."""
        from botocore.exceptions import ClientError

        try:
            head = await self._run(self._client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return BlobStat(int(head["ContentLength"]), head["LastModified"].timestamp())

    async def put_file(self, key: str, src: Path, media_type: str, *, consume: bool = False) -> None:
        """Upload a local file; large ones go multipart, which S3 makes visible only on completion."""
        await self._run(self._client.upload_file, str(src), self.bucket, self._key(key),
                        ExtraArgs={"ContentType": media_type})
        if consume:
            Path(src).unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        """One PUT."""
        with _unavailable():
            await self._run(self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data,
                            ContentType=media_type)

    async def read_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Ranged GET streamed in chunks; the body is read in the executor piece by piece."""
        if end <= start:
            return
        with _unavailable():
            obj = await self._run(self._client.get_object, Bucket=self.bucket, Key=self._key(key),
                                  Range=f"bytes={start}-{end - 1}")
        body = obj["Body"]
        try:
            while True:
                chunk = await self._run(body.read, CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            await self._run(body.close)

    async def fetch_to(self, key: str, dest: Path) -> None:
        """Download to a local file (derivative generation needs random access)."""
        await self._run(self._client.download_file, self.bucket, self._key(key), str(dest))

    async def delete(self, key: str) -> None:
        """Delete the object (S3 treats a missing key as success)."""
        with _unavailable():
            await self._run(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    async def list_keys(self, prefix: str) -> dict[str, int]:
        """ListObjectsV2 pages under the prefix (S3 lists only completed PUTs)."""
        return {k: v.size for k, v in (await self.list_objects(prefix)).items()}

    async def list_objects(self, prefix: str) -> dict[str, ObjectInfo]:
        """ListObjectsV2 pages under the prefix with size and LastModified (S3 lists only completed PUTs)."""
        out: dict[str, ObjectInfo] = {}
        token: str | None = None
        with _unavailable():
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
                if token:
                    kwargs["ContinuationToken"] = token
                page = await self._run(self._client.list_objects_v2, **kwargs)
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(self.prefix):]] = ObjectInfo(int(obj["Size"]), obj["LastModified"].timestamp())
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return out

    async def close(self) -> None:
        """Stop the private threads."""
        self._pool.shutdown(wait=False)

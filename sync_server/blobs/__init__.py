"""Content-addressed photo store (I8): one interface, a local filesystem default and an S3-compatible option."""

from __future__ import annotations

from sync_server.blobs.base import BlobStat, BlobStore, BlobStoreUnavailable, Variant, blob_key, derivative_key
from sync_server.settings import Settings

__all__ = ["BlobStat", "BlobStore", "BlobStoreUnavailable", "Variant", "blob_key", "derivative_key", "open_store"]


def open_store(settings: Settings) -> BlobStore:
    """The store the settings choose; S3 is imported only when configured, so boto3 stays an optional extra."""
    if settings.blob_backend == "s3":
        from sync_server.blobs.s3 import S3BlobStore

        if not settings.s3_bucket:
            raise RuntimeError("blob_backend is s3 but FIELDSYNC_S3_BUCKET is not set")
        return S3BlobStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
            secret_access_key=settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None,
            prefix=settings.s3_prefix,
        )
    from sync_server.blobs.fs import FsBlobStore

    return FsBlobStore(settings.data_dir / "blobs")

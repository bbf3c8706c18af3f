"""Build the configured :class:`~core.storage.base.ObjectStore` from plain settings values."""

from __future__ import annotations

from pathlib import Path

from core.storage.base import ObjectStore
from core.storage.local import LocalObjectStore
from core.storage.s3 import S3ObjectStore

__all__ = ["BACKENDS", "make_store"]

#: The accepted values of ``backend``.
BACKENDS = ("local", "s3")


def make_store(
    *,
    backend: str,
    local_root: Path | None,
    s3_endpoint_url: str | None,
    s3_bucket: str | None,
    s3_region: str | None,
    s3_access_key_id: str | None,
    s3_secret_access_key: str | None,
    s3_presign_endpoint_url: str | None,
) -> ObjectStore:
    """Return a new object store for ``backend``; no I/O happens until it is first used.

    Parameters
    ----------
    backend : {"local", "s3"}
        Which store to build.
    local_root : Path or None
        Root directory of the local store (required for ``"local"``).
    s3_endpoint_url : str or None
        S3 API URL (``http://minio:9000``); None for AWS S3.
    s3_bucket : str or None
        Bucket name (required for ``"s3"``).
    s3_region : str or None
        Signing region; None means ``"us-east-1"``.
    s3_access_key_id, s3_secret_access_key : str or None
        Static credentials, or None for boto3's default chain.
    s3_presign_endpoint_url : str or None
        Public S3 URL for presigned URLs, or None to presign against ``s3_endpoint_url``.

    Returns
    -------
    ObjectStore
        A :class:`LocalObjectStore` or an :class:`S3ObjectStore` (its client is created lazily,
        per process: build the store after ``fork`` or call ``reset()`` in the child).

    Raises
    ------
    ValueError
        On an unknown backend or a missing required argument.
    """
    if backend == "local":
        if local_root is None:
            raise ValueError("the local storage backend needs local_root")
        return LocalObjectStore(Path(local_root))
    if backend == "s3":
        if not s3_bucket:
            raise ValueError("the s3 storage backend needs s3_bucket")
        return S3ObjectStore(
            endpoint_url=s3_endpoint_url,
            bucket=s3_bucket,
            region=s3_region or "us-east-1",
            access_key_id=s3_access_key_id,
            secret_access_key=s3_secret_access_key,
            presign_endpoint_url=s3_presign_endpoint_url,
        )
    raise ValueError(f"unknown storage backend {backend!r}; expected one of {BACKENDS}")

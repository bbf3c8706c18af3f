"""Build the service's dependencies from the settings (one place for the API and the worker)."""

from __future__ import annotations

from core.config import Settings
from core.storage import ObjectStore, make_store

__all__ = ["store_from_settings"]


def store_from_settings(settings: Settings) -> ObjectStore:
    """The configured object store (no I/O until first used; build it per process).

    Parameters
    ----------
    settings
        ``settings.storage`` selects the backend (local directory or S3) and its options.

    Returns
    -------
    ObjectStore
        A ``LocalObjectStore`` rooted at ``storage.local_dir`` or an ``S3ObjectStore``.
    """
    storage = settings.storage
    return make_store(
        backend=storage.backend,
        local_root=storage.local_dir,
        s3_endpoint_url=storage.s3_endpoint_url,
        s3_bucket=storage.s3_bucket,
        s3_region=storage.s3_region,
        s3_access_key_id=(
            storage.s3_access_key_id.get_secret_value() if storage.s3_access_key_id else None
        ),
        s3_secret_access_key=(
            storage.s3_secret_access_key.get_secret_value()
            if storage.s3_secret_access_key
            else None
        ),
        s3_presign_endpoint_url=storage.s3_presign_endpoint_url,
    )

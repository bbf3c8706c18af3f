"""Object storage: the :class:`ObjectStore` protocol, its S3 and local-directory backends.

Only this package touches boto3 / botocore; callers see :class:`StorageError` and its subclasses
(:class:`ObjectNotFound`, :class:`StorageUnavailable`, which is transient and worth a retry).
"""

from core.storage.base import (
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    validate_key,
)
from core.storage.factory import make_store
from core.storage.local import LocalObjectStore
from core.storage.s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "make_store",
    "validate_key",
]

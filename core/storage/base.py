"""The object store protocol, key validation and the storage error types.

Everything above ``core.storage`` talks to an :class:`ObjectStore` and sees only the errors defined
here; backend exceptions (botocore, ``OSError``) are translated inside the backends.
"""

from __future__ import annotations

import re
from typing import BinaryIO, ClassVar, Protocol, runtime_checkable

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PRESIGN_EXPIRES_S",
    "ObjectNotFound",
    "ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "validate_expires",
    "validate_key",
]

#: Longest key accepted, in characters (S3's limit is 1024 bytes; keys here are ASCII).
MAX_KEY_LENGTH = 1024

#: Longest lifetime of a presigned URL, in seconds (SigV4's limit: 7 days).
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600

# One or more segments of [A-Za-z0-9._-], separated by single slashes: no leading or trailing
# slash (so no absolute path), no empty segment.
_KEY_RE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


class StorageError(Exception):
    """A storage operation failed; permanent unless it is a :class:`StorageUnavailable`.

    Attributes
    ----------
    code : str
        Stable, machine-readable error code (``"storage_error"`` here, overridden by subclasses).
    """

    code: ClassVar[str] = "storage_error"


class ObjectNotFound(StorageError):
    """No object is stored under the key.

    Parameters
    ----------
    key : str
        The key that was looked up.
    """

    code: ClassVar[str] = "object_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"no object stored under key {key!r}")
        self.key = key


class StorageUnavailable(StorageError):
    """The backend cannot be reached or is overloaded right now; retrying later may succeed."""

    code: ClassVar[str] = "storage_unavailable"


def validate_key(key: str) -> str:
    """Check that ``key`` is a safe object key and return it unchanged.

    A key is one or more segments of ``[A-Za-z0-9._-]`` joined by single ``/``; it may not start
    or end with ``/``, contain ``..`` anywhere, have a segment ``.``, or exceed
    :data:`MAX_KEY_LENGTH` characters. Examples: ``images/<sha256>``, ``heatmaps/<uuid>.png``.

    Parameters
    ----------
    key : str
        The candidate key.

    Returns
    -------
    str
        ``key`` itself.

    Raises
    ------
    ValueError
        If the key is not acceptable.
    """
    if not isinstance(key, str):
        raise ValueError(f"object key must be a str, not {type(key).__name__}")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"object key is longer than {MAX_KEY_LENGTH} characters")
    if _KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"invalid object key {key!r}: use segments of [A-Za-z0-9._-] joined by single '/'"
        )
    if ".." in key or "." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}: '.' and '..' segments are not allowed")
    return key


def validate_expires(expires_s: int) -> int:
    """Check the lifetime of a presigned URL and return it unchanged.

    Parameters
    ----------
    expires_s : int
        Lifetime in seconds, 1 ..= :data:`MAX_PRESIGN_EXPIRES_S` (7 days).

    Returns
    -------
    int
        ``expires_s`` itself.

    Raises
    ------
    ValueError
        If it is not an int in range.
    """
    if isinstance(expires_s, bool) or not isinstance(expires_s, int):
        raise ValueError(f"expires_s must be an int, not {type(expires_s).__name__}")
    if not 1 <= expires_s <= MAX_PRESIGN_EXPIRES_S:
        raise ValueError(f"expires_s must be in 1..{MAX_PRESIGN_EXPIRES_S}, got {expires_s}")
    return expires_s


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key → bytes store (S3 and compatibles, or a local directory).

    Keys are validated with :func:`validate_key` (``ValueError`` otherwise). Writes replace any
    previous object atomically: a reader sees the old bytes or the new ones, never a mix.
    Every method may raise :class:`StorageUnavailable` (transient) or :class:`StorageError`.
    """

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key``, replacing any existing object.

        Parameters
        ----------
        key : str
            Object key.
        data : bytes
            The whole object (held in memory).
        content_type : str
            MIME type recorded with the object where the backend can (S3; ignored locally).
        """
        ...

    def put_file(
        self, key: str, file: BinaryIO, *, content_type: str = "application/octet-stream"
    ) -> None:
        """Store the contents of ``file`` (read from its start, in pieces: never held in
        memory whole) under ``key``, replacing any existing object."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``; raise :class:`ObjectNotFound` if none."""
        ...

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""
        ...

    def size(self, key: str) -> int:
        """Return the object's size in bytes (>= 0); raise :class:`ObjectNotFound` if none."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object under ``key``; deleting a missing key does nothing."""
        ...

    def presign_put(self, key: str, *, expires_s: int, content_type: str) -> str | None:
        """Return a URL accepting one HTTP PUT of the object, or None if unsupported.

        The uploader must send the header ``Content-Type: <content_type>`` exactly.
        ``expires_s`` is the URL's lifetime in seconds, 1 ..= 604800.
        """
        ...

    def presign_get(self, key: str, *, expires_s: int) -> str | None:
        """Return a URL serving an HTTP GET of the object, or None if unsupported.

        ``expires_s`` is the URL's lifetime in seconds, 1 ..= 604800.
        """
        ...

    def check(self) -> None:
        """Readiness probe: raise :class:`StorageUnavailable` if the store cannot be used now."""
        ...

"""An :class:`~core.storage.base.ObjectStore` on the S3 API (AWS S3, MinIO, moto).

botocore's exceptions stop here: :func:`map_botocore_exceptions` (the one translation point)
turns them into :class:`~core.storage.base.ObjectNotFound`,
:class:`~core.storage.base.StorageUnavailable` or :class:`~core.storage.base.StorageError`.

Clients are per process. A boto3 client must not be shared across ``fork``: create the store in
the child (after fork), or call :meth:`S3ObjectStore.reset` in a process-init hook (Celery's
``worker_process_init``). As a safety net the store also drops its clients in a forked child by
itself (an ``os.register_at_fork`` hook and a PID check).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import weakref
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from core.storage.base import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    validate_expires,
    validate_key,
)

__all__ = ["S3ObjectStore", "map_botocore_exceptions", "translate_botocore_error"]

# S3 error codes meaning "no such object". HEAD responses have no body, so botocore reports the
# bare status ("404"); a missing bucket is then indistinguishable from a missing key.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})

# S3 error codes that describe a transient condition (throttling, overload, the backend's own
# trouble) or a bucket that is not there (yet): retrying later may succeed.
_UNAVAILABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
        "NoSuchBucket",
    }
)

_BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{3,255}")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return int(status or 0)


def translate_botocore_error(exc: Exception, *, key: str | None = None) -> StorageError:
    """Return the storage error standing for a botocore / boto3 exception.

    Parameters
    ----------
    exc : Exception
        A ``botocore.exceptions.ClientError`` or ``BotoCoreError`` (anything else becomes a
        plain :class:`StorageError`).
    key : str or None
        The object key the operation was about, if any (used for :class:`ObjectNotFound`).

    Returns
    -------
    StorageError
        :class:`ObjectNotFound` for a missing key (HTTP 404 / ``NoSuchKey``);
        :class:`StorageUnavailable` for connection failures, timeouts, HTTP 5xx, HTTP 429,
        throttling codes and a missing bucket; :class:`StorageError` otherwise (access denied,
        bad credentials, invalid requests: retrying will not help).
    """
    if isinstance(exc, ClientError):
        code, status = _error_code(exc), _http_status(exc)
        if code in _UNAVAILABLE_CODES or status >= 500 or status == 429:
            return StorageUnavailable(f"S3 is unavailable: {code or 'HTTP ' + str(status)}")
        if key is not None and (code in _NOT_FOUND_CODES or status == 404):
            return ObjectNotFound(key)
        return StorageError(f"S3 refused the request: {code or 'HTTP ' + str(status)}")
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        # Connection refused, DNS, TLS, proxy, connect / read timeouts, a body cut short.
        return StorageUnavailable(f"S3 is unreachable: {exc}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(f"S3 credentials are missing: {exc}")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"S3 client error: {exc}")
    return StorageError(f"S3 client error: {exc!r}")


@contextlib.contextmanager
def map_botocore_exceptions(*, key: str | None = None) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block (see :func:`translate_botocore_error`).

    Parameters
    ----------
    key : str or None
        The object key the block operates on, if any.

    Raises
    ------
    StorageError
        Or a subclass, chained to the original exception (``__cause__``).
    """
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate_botocore_error(exc, key=key) from exc


# One boto3 session per process, shared by the stores: building a session loads the service
# models again (tens of milliseconds), while a client from an existing session is cheap. Sessions
# are not thread-safe, so clients are created under _SESSION_LOCK.
_SESSION_LOCK = threading.Lock()
_SESSION: boto3.session.Session | None = None
_SESSION_PID = 0

# Every live store, so that a forked child can drop the clients it inherited.
_LIVE_STORES: weakref.WeakSet[S3ObjectStore] = weakref.WeakSet()


def _new_client(**kwargs: Any) -> Any:
    """Create a boto3 S3 client from this process's shared session."""
    global _SESSION, _SESSION_PID
    with _SESSION_LOCK:
        if _SESSION is None or os.getpid() != _SESSION_PID:
            _SESSION = boto3.session.Session()
            _SESSION_PID = os.getpid()
        return _SESSION.client("s3", **kwargs)


def _forget_clients_after_fork() -> None:
    global _SESSION, _SESSION_LOCK
    _SESSION_LOCK = threading.Lock()  # it may have been copied while held
    _SESSION = None
    for store in list(_LIVE_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_clients_after_fork)


class S3ObjectStore:
    """Objects in one S3 bucket, through a plain boto3 client.

    The client uses SigV4, path-style addressing when ``endpoint_url`` is set (MinIO, moto),
    bounded connect / read timeouts and botocore's "standard" retry mode with few attempts. It
    is created on first use (so constructing a store does no I/O) and is per process; see the
    module docstring about ``fork``. Methods are thread-safe.

    Parameters
    ----------
    endpoint_url : str or None
        URL of the S3 API (``http://minio:9000``); None for AWS S3 itself.
    bucket : str
        Bucket name (3..255 characters of ``[A-Za-z0-9._-]``).
    region : str
        Region name used for signing (``us-east-1`` for MinIO unless configured otherwise).
    access_key_id, secret_access_key : str or None
        Static credentials; None to use boto3's default chain (environment, IAM role...).
    presign_endpoint_url : str or None
        Public URL of the same S3 API for presigned URLs, when clients reach it under another
        host than this process does (compose: ``http://localhost:9000`` vs ``http://minio:9000``).
        A second client, used only for presigning, is configured with it. None: same endpoint.
    create_bucket : bool
        If True, :meth:`ensure_bucket` runs once per process before the first operation.
    connect_timeout_s, read_timeout_s : float
        Socket timeouts in seconds (> 0).
    max_attempts : int
        Total attempts per call, including the first (>= 1); 1 disables retries.

    Raises
    ------
    ValueError
        On an invalid bucket name or option.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        bucket: str,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        presign_endpoint_url: str | None = None,
        create_bucket: bool = False,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        if _BUCKET_RE.fullmatch(bucket) is None:
            raise ValueError(f"invalid bucket name {bucket!r}: 3..255 of [A-Za-z0-9._-]")
        if not region:
            raise ValueError("region must not be empty")
        if connect_timeout_s <= 0 or read_timeout_s <= 0:
            raise ValueError("timeouts must be > 0 seconds")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.endpoint_url = endpoint_url or None
        self.bucket = bucket
        self.region = region
        self.presign_endpoint_url = presign_endpoint_url or None
        self.create_bucket = create_bucket
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._client: Any = None
        self._presign_client: Any = None
        self._bucket_ready = False
        _LIVE_STORES.add(self)

    def __repr__(self) -> str:
        return (
            f"S3ObjectStore(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, "
            f"region={self.region!r}, presign_endpoint_url={self.presign_endpoint_url!r})"
        )

    # -- clients ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop this process's boto3 clients; the next operation creates new ones.

        Call it in a process-init hook (Celery's ``worker_process_init``) when the store was
        created before ``fork``. It is cheap and safe to call at any time.
        """
        with self._lock:
            self._client = None
            self._presign_client = None
            self._bucket_ready = False
            self._pid = os.getpid()

    def _after_fork(self) -> None:
        # In a fresh child only one thread runs; the lock may have been copied while held.
        self._lock = threading.Lock()
        self._client = None
        self._presign_client = None
        self._bucket_ready = False
        self._pid = os.getpid()

    def _make_client(self, endpoint_url: str | None) -> Any:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            connect_timeout=self._connect_timeout_s,
            read_timeout=self._read_timeout_s,
            # "total_max_attempts" counts the first call; botocore's "max_attempts" means retries.
            retries={"mode": "standard", "total_max_attempts": self._max_attempts},
            # Checksums only where S3 requires them: S3-compatible servers vary in support.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        with map_botocore_exceptions():
            return _new_client(
                endpoint_url=endpoint_url,
                region_name=self.region,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=config,
            )

    def _get_client(self, *, presign: bool = False) -> Any:
        """Return this process's client (``presign``: the one that signs URLs), creating it.

        With ``create_bucket``, the first call in a process (either kind) ensures the bucket.
        """
        pid = os.getpid()
        client = self._presign_client if presign else self._client
        if client is not None and self._pid == pid and not self._needs_bucket():
            return client
        with self._lock:
            if self._pid != pid:  # forked without the at-fork hook running
                self._client = self._presign_client = None
                self._bucket_ready = False
                self._pid = pid
            if self._client is None:
                self._client = self._make_client(self.endpoint_url)
            if self._needs_bucket():
                self._ensure_bucket_with(self._client)
                self._bucket_ready = True
            if not presign:
                return self._client
            if self._presign_client is None:
                self._presign_client = (
                    self._client
                    if self.presign_endpoint_url is None
                    else self._make_client(self.presign_endpoint_url)
                )
            return self._presign_client

    def _needs_bucket(self) -> bool:
        return self.create_bucket and not self._bucket_ready

    # -- bucket ----------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent, safe under concurrent calls).

        Raises
        ------
        StorageUnavailable
            If S3 cannot be reached.
        StorageError
            If the bucket cannot be created or used (for example it belongs to someone else).
        """
        self._ensure_bucket_with(self._get_client())

    def _ensure_bucket_with(self, client: Any) -> None:
        with map_botocore_exceptions():
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _http_status(exc) != 404:
                    raise
            params: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                client.create_bucket(**params)
            except ClientError as exc:
                if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise
                client.head_bucket(Bucket=self.bucket)  # created meanwhile: is it usable?

    # -- ObjectStore -----------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` with the given ``Content-Type``, replacing any object
        (as :meth:`put_file`, which raises the same errors)."""
        self.put_file(key, io.BytesIO(data), content_type=content_type)

    def put_file(
        self, key: str, file: BinaryIO, *, content_type: str = "application/octet-stream"
    ) -> None:
        """Store the contents of ``file`` (read from its start) under ``key``, streamed: the
        body is read from the file in pieces, never held in memory whole.

        Raises
        ------
        StorageUnavailable
            If S3 cannot be reached, is overloaded, or the bucket is missing.
        StorageError
            If S3 refuses the request.
        """
        validate_key(key)
        client = self._get_client()
        file.seek(0)
        with map_botocore_exceptions(key=key):
            client.put_object(Bucket=self.bucket, Key=key, Body=file, ContentType=content_type)

    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``.

        Raises
        ------
        ObjectNotFound
            If there is no such object.
        StorageUnavailable
            If S3 cannot be reached (also when the body breaks off mid-download).
        """
        validate_key(key)
        client = self._get_client()
        with map_botocore_exceptions(key=key):
            response = client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key`` (one HEAD request)."""
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """Return the object's size in bytes (one HEAD request).

        Raises
        ------
        ObjectNotFound
            If there is no such object.
        """
        return int(self._head(key)["ContentLength"])

    def _head(self, key: str) -> dict[str, Any]:
        validate_key(key)
        client = self._get_client()
        with map_botocore_exceptions(key=key):
            response: dict[str, Any] = client.head_object(Bucket=self.bucket, Key=key)
        return response

    def delete(self, key: str) -> None:
        """Delete the object under ``key``; a missing key is not an error."""
        validate_key(key)
        client = self._get_client()
        try:
            with map_botocore_exceptions(key=key):
                client.delete_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            pass

    def presign_put(self, key: str, *, expires_s: int, content_type: str) -> str | None:
        """Return a presigned URL for one ``PUT`` of the object (signed locally).

        Parameters
        ----------
        key : str
            Object key.
        expires_s : int
            Lifetime of the URL in seconds, 1 ..= 604800.
        content_type : str
            The ``Content-Type`` the uploader must send (it is part of the signature).

        Returns
        -------
        str
            The URL, on ``presign_endpoint_url`` when set.
        """
        validate_key(key)
        validate_expires(expires_s)
        client = self._get_client(presign=True)
        with map_botocore_exceptions(key=key):
            url: str = client.generate_presigned_url(
                ClientMethod="put_object",
                Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
                ExpiresIn=expires_s,
                HttpMethod="PUT",
            )
        return url

    def presign_get(self, key: str, *, expires_s: int) -> str | None:
        """Return a presigned URL for a ``GET`` of the object (signed locally).

        Parameters
        ----------
        key : str
            Object key.
        expires_s : int
            Lifetime of the URL in seconds, 1 ..= 604800.

        Returns
        -------
        str
            The URL, on ``presign_endpoint_url`` when set.
        """
        validate_key(key)
        validate_expires(expires_s)
        client = self._get_client(presign=True)
        with map_botocore_exceptions(key=key):
            url: str = client.generate_presigned_url(
                ClientMethod="get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=expires_s,
                HttpMethod="GET",
            )
        return url

    def check(self) -> None:
        """Readiness probe: ``HEAD`` the bucket.

        Raises
        ------
        StorageUnavailable
            If S3 cannot be reached, the bucket is missing, or access to it is refused.
        """
        try:
            client = self._get_client()
            with map_botocore_exceptions():
                client.head_bucket(Bucket=self.bucket)
        except StorageUnavailable:
            raise
        except StorageError as exc:
            raise StorageUnavailable(f"bucket {self.bucket!r} is not usable: {exc}") from exc

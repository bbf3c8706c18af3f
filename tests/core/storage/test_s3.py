"""S3ObjectStore against moto's S3 server (a real HTTP server in a thread; no mocks of S3)."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from core.storage import (
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    StorageError,
    StorageUnavailable,
)
from core.storage.s3 import translate_botocore_error
from tests.s3server import TEST_SECRET_ACCESS_KEY, S3Server, free_port
from tests.support.storage import ObjectStoreContract, S3StoreFactory, random_bytes


class TestS3Contract(ObjectStoreContract):
    @pytest.fixture
    def store(self, s3_store: S3ObjectStore) -> ObjectStore:
        return s3_store


# -- presigned URLs ----------------------------------------------------------------------------


def sigv4_query_signature_is_valid(
    url: str, *, method: str, host: str, headers: dict[str, str], secret: str
) -> bool:
    """Check a SigV4 presigned S3 URL as S3 would, for a request sent to ``host``.

    An independent implementation of AWS's documented algorithm ("Authenticating requests:
    using query parameters"), written from the spec with hashlib/hmac only; moto does not
    verify signatures, so this is what shows a URL was signed for the host it names.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    amz_date = query["X-Amz-Date"]
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    date, region, service, _ = scope.split("/")
    signed_names = query["X-Amz-SignedHeaders"].split(";")
    all_headers = {"host": host, **{k.lower(): v.strip() for k, v in headers.items()}}
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical_headers = "".join(f"{name}:{all_headers[name]}\n" for name in signed_names)
    canonical_request = "\n".join(
        [
            method,
            quote(parts.path, safe="/-_.~"),
            canonical_query,
            canonical_headers,
            ";".join(signed_names),
            "UNSIGNED-PAYLOAD",
        ]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def test_presigned_put_uploads_an_object(s3_store: S3ObjectStore) -> None:
    data = random_bytes(50_000, seed=3)
    url = s3_store.presign_put(
        "images/upload", expires_s=300, content_type="application/octet-stream"
    )
    assert url is not None
    response = httpx.put(
        url, content=data, headers={"Content-Type": "application/octet-stream"}, timeout=10.0
    )
    assert response.status_code == 200, response.text
    assert s3_store.get("images/upload") == data
    assert s3_store.size("images/upload") == len(data)


def test_presigned_get_downloads_the_object_with_its_content_type(s3_store: S3ObjectStore) -> None:
    data = random_bytes(20_000, seed=4)
    s3_store.put("heatmaps/h.png", data, content_type="image/png")
    url = s3_store.presign_get("heatmaps/h.png", expires_s=60)
    assert url is not None
    response = httpx.get(url, timeout=10.0)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert "X-Amz-Expires=60" in url


def test_presigned_urls_default_to_the_client_endpoint(
    s3_server: S3Server, s3_store: S3ObjectStore
) -> None:
    url = s3_store.presign_put("images/a", expires_s=60, content_type="image/png")
    assert url is not None
    host = urlsplit(s3_server.endpoint_url).netloc
    assert urlsplit(url).netloc == host
    assert urlsplit(url).path == f"/{s3_store.bucket}/images/a"  # path-style addressing
    headers = {"Content-Type": "image/png"}
    assert sigv4_query_signature_is_valid(
        url, method="PUT", host=host, headers=headers, secret=TEST_SECRET_ACCESS_KEY
    )
    # The verifier is not blind: another content type or host breaks the signature.
    gif = {"Content-Type": "image/gif"}
    assert not sigv4_query_signature_is_valid(
        url, method="PUT", host=host, headers=gif, secret=TEST_SECRET_ACCESS_KEY
    )
    assert not sigv4_query_signature_is_valid(
        url, method="PUT", host="example.com", headers=headers, secret=TEST_SECRET_ACCESS_KEY
    )


def test_presign_endpoint_url_changes_the_host(
    s3_server: S3Server, make_s3_store: S3StoreFactory
) -> None:
    public = f"localhost:{s3_server.port}"  # the same server under another name
    store = make_s3_store(presign_endpoint_url=f"http://{public}", create_bucket=True)
    data = b"uploaded through the public name"
    url = store.presign_put("images/p", expires_s=60, content_type="application/octet-stream")
    get_url = store.presign_get("images/p", expires_s=60)
    assert url is not None and get_url is not None
    assert urlsplit(url).netloc == public
    assert urlsplit(get_url).netloc == public
    # Signed for the public host (what the uploader's Host header will be), not the internal one.
    headers = {"Content-Type": "application/octet-stream"}
    secret = TEST_SECRET_ACCESS_KEY
    assert sigv4_query_signature_is_valid(
        url, method="PUT", host=public, headers=headers, secret=secret
    )
    internal = urlsplit(s3_server.endpoint_url).netloc
    assert not sigv4_query_signature_is_valid(
        url, method="PUT", host=internal, headers=headers, secret=secret
    )
    assert sigv4_query_signature_is_valid(
        get_url, method="GET", host=public, headers={}, secret=secret
    )
    response = httpx.put(url, content=data, headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    assert store.get("images/p") == data  # read back through the internal endpoint
    assert httpx.get(get_url, timeout=10.0).content == data


# -- buckets -----------------------------------------------------------------------------------


def test_ensure_bucket_is_idempotent(make_s3_store: S3StoreFactory) -> None:
    store = make_s3_store()
    with pytest.raises(StorageUnavailable):
        store.check()
    store.ensure_bucket()
    store.ensure_bucket()
    store.check()
    store.put("k", b"v")
    assert make_s3_store(bucket=store.bucket).get("k") == b"v"  # a second store, same bucket


def test_ensure_bucket_outside_us_east_1(make_s3_store: S3StoreFactory) -> None:
    store = make_s3_store(region="eu-west-1")
    store.ensure_bucket()
    store.ensure_bucket()
    store.put("k", b"v")
    assert store.get("k") == b"v"


def test_create_bucket_on_first_use(make_s3_store: S3StoreFactory) -> None:
    store = make_s3_store(create_bucket=True)
    url = store.presign_put("k", expires_s=60, content_type="application/octet-stream")
    assert url is not None
    response = httpx.put(
        url, content=b"v", headers={"Content-Type": "application/octet-stream"}, timeout=10.0
    )
    assert response.status_code == 200, response.text
    assert store.get("k") == b"v"


def test_missing_bucket(make_s3_store: S3StoreFactory) -> None:
    store = make_s3_store()
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):  # NoSuchBucket: the storage is not usable (yet)
        store.put("k", b"v")
    with pytest.raises(StorageUnavailable):
        store.get("k")


# -- unreachable or slow backends ---------------------------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_unreachable_endpoint_is_unavailable_quickly(make_s3_store: S3StoreFactory) -> None:
    store = make_s3_store(endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    calls = [
        store.check,
        lambda: store.put("k", b"v"),
        lambda: store.get("k"),
        lambda: store.exists("k"),
        lambda: store.size("k"),
        lambda: store.delete("k"),
        store.ensure_bucket,
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            call()
        assert time.monotonic() - start < 2.0
        assert info.value.code == "storage_unavailable"
        assert isinstance(info.value.__cause__, BotoCoreError)  # chained, for the logs


def test_a_backend_that_never_answers_times_out(
    make_s3_store: S3StoreFactory, silent_endpoint: str
) -> None:
    store = make_s3_store(endpoint_url=silent_endpoint, read_timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        store.get("k")
    assert time.monotonic() - start < 3.0
    assert isinstance(info.value.__cause__, ReadTimeoutError)
    with pytest.raises(StorageUnavailable):
        store.check()


class _OverloadedS3(BaseHTTPRequestHandler):
    """Answers every request like an overloaded S3: 503 SlowDown."""

    requests = 0

    def _slow_down(self) -> None:
        type(self).requests += 1
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _slow_down

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def overloaded_endpoint() -> Iterator[tuple[str, type[_OverloadedS3]]]:
    """An HTTP server answering 503 SlowDown to everything; yields its URL and request counter."""
    handler = type("Handler", (_OverloadedS3,), {"requests": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_throttling_is_unavailable_after_max_attempts(
    make_s3_store: S3StoreFactory,
    overloaded_endpoint: tuple[str, type[_OverloadedS3]],
    max_attempts: int,
) -> None:
    url, handler = overloaded_endpoint
    store = make_s3_store(endpoint_url=url, max_attempts=max_attempts)
    with pytest.raises(StorageUnavailable) as info:
        store.put("k", b"v")
    assert isinstance(info.value.__cause__, ClientError)
    assert handler.requests == max_attempts  # max_attempts counts the first call


def test_presigning_needs_no_server(make_s3_store: S3StoreFactory) -> None:
    store = make_s3_store(endpoint_url=f"http://127.0.0.1:{free_port()}")
    url = store.presign_get("images/a", expires_s=60)
    assert url is not None and "X-Amz-Signature=" in url


# -- error translation -------------------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    """A ClientError as botocore builds it from an S3 error response."""
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("404", 404, ObjectNotFound),  # HEAD: no body, the code is the status
        ("NoSuchBucket", 404, StorageUnavailable),
        ("SlowDown", 503, StorageUnavailable),
        ("ServiceUnavailable", 503, StorageUnavailable),
        ("InternalError", 500, StorageUnavailable),
        ("", 502, StorageUnavailable),
        ("TooManyRequests", 429, StorageUnavailable),
        ("Throttling", 400, StorageUnavailable),
        ("RequestTimeout", 400, StorageUnavailable),
        ("AccessDenied", 403, StorageError),
        ("SignatureDoesNotMatch", 403, StorageError),
        ("InvalidArgument", 400, StorageError),
    ],
)
def test_client_errors_are_translated(code: str, status: int, expected: type) -> None:
    error = translate_botocore_error(client_error(code, status), key="images/a")
    assert type(error) is expected


def test_not_found_without_a_key_is_not_object_not_found() -> None:
    error = translate_botocore_error(client_error("404", 404), key=None)
    assert type(error) is StorageError


# -- processes ---------------------------------------------------------------------------------


def test_reset_recreates_the_client(s3_store: S3ObjectStore) -> None:
    s3_store.put("k", b"v")
    s3_store.reset()
    s3_store.reset()
    assert s3_store.get("k") == b"v"


def test_a_forked_child_uses_its_own_client(s3_store: S3ObjectStore) -> None:
    s3_store.put("parent", b"p")
    parent_client = s3_store._get_client()
    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a multi-threaded process (moto's server) may
        # deadlock; the child here only talks HTTP and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        code = 1
        try:
            fresh = s3_store._get_client() is not parent_client
            s3_store.put("child", b"c")
            code = 0 if fresh and s3_store.get("parent") == b"p" else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s3_store.get("child") == b"c"
    assert s3_store._get_client() is parent_client  # the parent keeps its client

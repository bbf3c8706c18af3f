"""Errors are RFC 9457 problem+json with stable codes: mapping, HTTP errors, limits, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError

from api.errors import CODE_STATUS, PayloadTooLarge, problem_for_exception
from api.middleware import JSON_BODY_MAX_BYTES, MULTIPART_OVERHEAD_BYTES, body_limit_for
from api.ratelimit import TokenBucketLimiter, retry_after
from core.services import comparisons
from core.services.errors import (
    Conflict,
    IdempotencyInProgress,
    IdempotencyMismatch,
    ImageRejected,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from core.storage import ObjectNotFound, StorageUnavailable
from tests.support.api import Api, ApiFactory, assert_problem
from tests.support.images import noise_png

# -- the mapping, exception by exception --------------------------------------------------------

MAPPING: list[tuple[BaseException, int, str]] = [
    (Unauthorized("no key"), 401, "unauthorized"),
    (NotFound("gone"), 404, "not_found"),
    (NotFound("later", code="heatmap_not_ready"), 404, "heatmap_not_ready"),
    (InvalidRequest("bad"), 422, "invalid_request"),
    (InvalidRequest("bad options", code="invalid_options"), 422, "invalid_options"),
    (ImageRejected("big", code="image_too_large"), 413, "image_too_large"),
    (ImageRejected("empty", code="empty_file"), 422, "empty_file"),
    (ImageRejected("what", code="unsupported_format"), 422, "unsupported_format"),
    (ImageRejected("cut", code="corrupt_image"), 422, "corrupt_image"),
    (Conflict("not yet"), 409, "conflict"),
    (LimitExceeded("too many", code="batch_too_large"), 413, "batch_too_large"),
    (RateLimited("slow down", retry_after_s=7), 429, "rate_limited"),
    (IdempotencyMismatch("other body"), 422, "idempotency_key_reused"),
    (IdempotencyInProgress("wait"), 409, "idempotency_key_in_progress"),
    (Unavailable("db down"), 503, "service_unavailable"),
    (ServiceError("generic"), 500, "service_error"),
    (ServiceError("disk full", code="storage_error"), 500, "storage_error"),
    (Conflict("no bytes", code="upload_missing"), 409, "upload_missing"),
    (StorageUnavailable("s3 down"), 503, "storage_unavailable"),
    (ObjectNotFound("heatmaps/x.png"), 404, "not_found"),
    (OperationalError("SELECT 1", {}, Exception("down")), 503, "database_unavailable"),
    (PayloadTooLarge(10), 413, "payload_too_large"),
    (RequestValidationError([{"loc": ("query", "limit"), "msg": "bad", "type": "x"}]), 422,
     "validation_error"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "status", "code"), MAPPING, ids=[m[2] for m in MAPPING])
def test_every_known_exception_maps_to_a_status_and_stable_code(
    exc: BaseException, status: int, code: str
) -> None:
    problem = problem_for_exception(exc)
    assert problem is not None
    assert (problem.status, problem.code) == (status, code)
    if code in CODE_STATUS:
        assert CODE_STATUS[code] == status  # the documented table agrees with the mapping


def test_headers_of_401_429_503() -> None:
    unauthorized = problem_for_exception(Unauthorized("x"))
    rate = problem_for_exception(RateLimited("x", retry_after_s=7))
    unavailable = problem_for_exception(Unavailable("x"))
    assert unauthorized is not None and unauthorized.headers == {"WWW-Authenticate": "Bearer"}
    assert rate is not None and rate.headers["Retry-After"] == "7"
    assert rate.extras["retry_after_s"] == 7
    assert unavailable is not None and int(unavailable.headers["Retry-After"]) >= 1


def test_unexpected_exceptions_are_not_mapped() -> None:
    assert problem_for_exception(RuntimeError("bug")) is None
    assert problem_for_exception(KeyError("x")) is None


def test_validation_errors_never_echo_the_input() -> None:
    exc = RequestValidationError(
        [{"loc": ("body", "a"), "msg": "bad", "type": "uuid_parsing", "input": "SECRET"}]
    )
    problem = problem_for_exception(exc)
    assert problem is not None
    expected = [{"loc": ["body", "a"], "msg": "bad", "type": "uuid_parsing"}]
    assert problem.extras["errors"] == expected
    assert "SECRET" not in repr(problem)


# -- body limits and the rate limiter (pure) -----------------------------------------------------


def test_body_limit_per_route() -> None:
    m = 1000
    assert body_limit_for("PUT", f"/v1/images/{'x' * 8}/content", "", m) == m
    assert body_limit_for("POST", "/v1/images", "multipart/form-data; b=1", m) == (
        m + MULTIPART_OVERHEAD_BYTES
    )
    assert body_limit_for("POST", "/v1/comparisons", "multipart/form-data; b=1", m) == (
        2 * m + MULTIPART_OVERHEAD_BYTES
    )
    assert body_limit_for("POST", "/v1/comparisons", "application/json", m) == JSON_BODY_MAX_BYTES
    assert body_limit_for("POST", "/v1/batches", "application/json", m) == JSON_BODY_MAX_BYTES


def test_token_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    now = [1000.0]
    limiter = TokenBucketLimiter(rate_per_minute=60, clock=lambda: now[0])  # 1 token per second
    assert [limiter.acquire("k") for _ in range(60)] == [0.0] * 60
    wait = limiter.acquire("k")
    assert wait == pytest.approx(1.0)
    assert limiter.acquire("other") == 0.0  # buckets are per key
    now[0] += 0.5
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0
    now[0] += 3600  # refills up to the capacity only
    assert [limiter.acquire("k") for _ in range(60)] == [0.0] * 60
    assert limiter.acquire("k") > 0
    assert retry_after(0.01) == 1
    assert retry_after(2.2) == 3


def test_token_bucket_forgets_least_recently_used_keys() -> None:
    limiter = TokenBucketLimiter(rate_per_minute=1, max_keys=2, clock=lambda: 0.0)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    limiter.acquire("b")
    limiter.acquire("c")  # evicts "a"
    assert limiter.acquire("a") == 0.0


# -- over HTTP -----------------------------------------------------------------------------------


def test_unknown_route_and_wrong_method_are_problems(sqlite_api: Api) -> None:
    client = sqlite_api.client
    body = assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    assert body["instance"] == "/v1/nothing-here"
    response = client.patch("/v1/comparisons", headers=sqlite_api.auth())
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"]  # the methods of the first route matching the path


def test_validation_errors_are_422_with_field_errors(sqlite_api: Api) -> None:
    client = sqlite_api.client
    headers = sqlite_api.auth()
    body = assert_problem(
        client.get("/v1/comparisons", params={"limit": 0}, headers=headers), 422, "validation_error"
    )
    assert body["errors"][0]["loc"] == ["query", "limit"]
    bad_state = client.get("/v1/comparisons?state=nope", headers=headers)
    assert_problem(bad_state, 422, "validation_error")
    body = assert_problem(
        client.post("/v1/comparisons", json={"a": "not-a-uuid"}, headers=headers),
        422,
        "validation_error",
    )
    locs = {tuple(error["loc"]) for error in body["errors"]}
    assert ("body", "a") in locs and ("body", "b") in locs
    body = assert_problem(
        client.post(
            "/v1/comparisons",
            content=b"{not json",
            headers={**headers, "Content-Type": "application/json"},
        ),
        422,
        "validation_error",
    )
    assert_problem(
        client.post("/v1/batches", json={"pairs": "nope"}, headers=headers), 422, "validation_error"
    )


def test_unsupported_media_type_is_415(sqlite_api: Api) -> None:
    headers = {**sqlite_api.auth(), "Content-Type": "text/plain"}
    assert_problem(
        sqlite_api.client.post("/v1/comparisons", content=b"a,b", headers=headers),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        sqlite_api.client.post("/v1/images", content=b"hello", headers=headers),
        415,
        "unsupported_media_type",
    )


def test_unexpected_error_is_500_internal_error_without_details(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(comparisons, "list_comparisons", explode)
    key = sqlite_api.key()
    with structlog.testing.capture_logs() as logs:
        response = sqlite_api.client.get(
            "/v1/comparisons", headers={**sqlite_api.auth(), "X-Request-ID": "req-123"}
        )
    # The traceback goes to the log (with the request id), never to the client; keys never.
    crash = [entry for entry in logs if entry["event"] == "unhandled_exception"]
    assert len(crash) == 1 and crash[0]["exc_info"] is True
    assert any(e["event"] == "request" and e["status"] == 500 for e in logs)
    assert key not in repr(logs)
    body = assert_problem(response, 500, "internal_error")
    assert "secret internal detail" not in response.text
    assert "RuntimeError" not in response.text
    assert body["request_id"] == "req-123"
    assert response.headers["x-request-id"] == "req-123"


def test_request_id_is_generated_when_absent_or_unsafe(sqlite_api: Api) -> None:
    first = sqlite_api.client.get("/healthz")
    second = sqlite_api.client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(first.headers["x-request-id"]) == 32
    generated = second.headers["x-request-id"]
    assert generated not in ("bad id\twith spaces", first.headers["x-request-id"])


def _chunks(chunk: bytes, count: int) -> Iterator[bytes]:
    """A request body sent in chunks (no Content-Length)."""
    for _ in range(count):
        yield chunk


def test_body_over_the_limit_is_413_before_reading_it(
    make_api: ApiFactory, sqlite_url: str
) -> None:
    api = make_api(sqlite_url, max_upload_bytes=4096)
    limit = 4096 + MULTIPART_OVERHEAD_BYTES
    # Content-Length says too much: refused without reading the body.
    body = _chunks(b"x" * 65536, 40)
    response = api.client.post(
        "/v1/images",
        content=body,
        headers={
            **api.auth(),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(limit + 1),
        },
    )
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["limit_bytes"] == limit
    # Chunked (no Content-Length): cut off once the limit is crossed.
    chunked = _chunks(b"x" * 65536, 40)
    response = api.client.put(
        f"/v1/images/{'0' * 32}/content",
        content=chunked,
        headers={**api.auth(), "Content-Type": "application/octet-stream"},
    )
    assert_problem(response, 413, "payload_too_large")


def test_image_over_the_byte_limit_is_413(make_api: ApiFactory, sqlite_url: str) -> None:
    api = make_api(sqlite_url, max_upload_bytes=2000)
    big = noise_png(64, 64, seed=3)
    assert len(big) > 2000
    response = api.client.post(
        "/v1/images", files={"file": ("big.png", big, "image/png")}, headers=api.auth()
    )
    assert_problem(response, 413, "image_too_large")


def test_openapi_documents_routes_security_and_problems(sqlite_api: Api) -> None:
    client = sqlite_api.client
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "DiffALL"
    paths = spec["paths"]
    for path, method in [
        ("/v1/images", "post"),
        ("/v1/images/presign", "post"),
        ("/v1/images/{image_id}/content", "put"),
        ("/v1/images/{image_id}/finalize", "post"),
        ("/v1/images/{image_id}", "get"),
        ("/v1/comparisons", "post"),
        ("/v1/comparisons", "get"),
        ("/v1/comparisons/{comparison_id}", "get"),
        ("/v1/comparisons/{comparison_id}", "delete"),
        ("/v1/comparisons/{comparison_id}/heatmap", "get"),
        ("/v1/batches", "post"),
        ("/v1/batches/{batch_id}", "get"),
        ("/v1/batches/{batch_id}/comparisons", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    create = paths["/v1/comparisons"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert "application/json" not in create["responses"]["422"]["content"]
    assert "ComparisonCreate" in spec["components"]["schemas"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())
    limit = next(p for p in paths["/v1/comparisons"]["get"]["parameters"] if p["name"] == "limit")
    bounds = [s for s in limit["schema"].get("anyOf", [limit["schema"]]) if "minimum" in s]
    assert [(s["minimum"], s["maximum"]) for s in bounds] == [(1, 100)]


def test_problem_types_are_served(sqlite_api: Api) -> None:
    listing = sqlite_api.client.get("/problems").json()
    assert {"code": "rate_limited", "status": 429, "title": "Too many requests"} in listing
    one = sqlite_api.client.get("/problems/batch_too_large")
    assert one.json()["status"] == 413
    assert_problem(sqlite_api.client.get("/problems/nope"), 404, "not_found")

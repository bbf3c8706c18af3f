"""``Idempotency-Key`` on POSTs: replay, 422 on another body, 409 while in progress, per tenant."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from api.idempotency import REPLAYED_HEADER, request_hash
from core.db.models import Comparison
from core.services import comparisons, idempotency, keys
from core.services.errors import Unavailable
from tests.support.api import Api, assert_problem
from tests.support.brokers import messages_for
from tests.support.images import noise_png

JSON = {"Content-Type": "application/json"}


def _count_comparisons(api: Api) -> int:
    with api.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Comparison)) or 0)


def test_same_key_and_body_replays_the_first_response(api: Api) -> None:
    a, b = api.upload(noise_png(seed=1)), api.upload(noise_png(seed=2))
    body = json.dumps({"a": a["id"], "b": b["id"], "metadata": {"x": 1}}).encode()
    headers = api.auth(**JSON, **{"Idempotency-Key": "order-1"})
    first = api.client.post("/v1/comparisons", content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert REPLAYED_HEADER.lower() not in first.headers
    second = api.client.post("/v1/comparisons", content=body, headers=headers)
    assert second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers[REPLAYED_HEADER] == "true"
    assert second.headers["content-type"] == first.headers["content-type"]
    assert _count_comparisons(api) == 1
    assert len(messages_for(api.broker, first.json()["id"])) == 1
    # The same key with another body is refused; the first response stays the one replayed.
    other = json.dumps({"a": b["id"], "b": a["id"]}).encode()
    reused = api.client.post("/v1/comparisons", content=other, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")
    # The same key on another path is another request, too.
    assert_problem(
        api.client.post("/v1/batches", content=body, headers=headers), 422, "idempotency_key_reused"
    )
    assert _count_comparisons(api) == 1


def test_keys_are_scoped_to_the_tenant(api: Api) -> None:
    mine = [api.upload(noise_png(seed=s))["id"] for s in (3, 4)]
    theirs = [api.upload(noise_png(seed=s), tenant="other")["id"] for s in (3, 4)]
    key = {"Idempotency-Key": "shared-key"}
    first = api.client.post(
        "/v1/comparisons", json={"a": mine[0], "b": mine[1]}, headers=api.auth(**key)
    )
    second = api.client.post(
        "/v1/comparisons",
        json={"a": theirs[0], "b": theirs[1]},
        headers=api.auth("other", **key),
    )
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] != second.json()["id"]
    assert REPLAYED_HEADER.lower() not in second.headers


def test_concurrent_duplicate_is_409(sqlite_api: Api) -> None:
    api = sqlite_api
    a, b = api.upload(noise_png(seed=5)), api.upload(noise_png(seed=6))
    body = json.dumps({"a": a["id"], "b": b["id"]}).encode()
    # A first request with this key and body is still running (its claim is in the table).
    with api.sessions() as session:
        tenant = keys.authenticate(session, api.key())
        claimed = idempotency.begin(
            session,
            tenant_id=tenant.id,
            key="in-flight",
            request_hash=request_hash("POST", "/v1/comparisons", body),
        )
        assert claimed is None
    headers = api.auth(**JSON, **{"Idempotency-Key": "in-flight"})
    response = api.client.post("/v1/comparisons", content=body, headers=headers)
    problem = assert_problem(response, 409, "idempotency_key_in_progress")
    assert problem["detail"]
    assert _count_comparisons(api) == 0


def test_client_errors_are_replayed_and_statuses_kept(sqlite_api: Api) -> None:
    api = sqlite_api
    bad = api.auth(**{"Content-Type": "application/octet-stream", "Idempotency-Key": "bad-1"})
    first = api.client.post("/v1/images", content=b"not an image", headers=bad)
    assert_problem(first, 422, "unsupported_format")
    again = api.client.post("/v1/images", content=b"not an image", headers=bad)
    assert_problem(again, 422, "unsupported_format")
    assert again.headers[REPLAYED_HEADER] == "true"
    # A first upload answered 201; replaying it answers 201 again (a new request would be 200).
    data = noise_png(seed=7)
    good = api.auth(**{"Content-Type": "application/octet-stream", "Idempotency-Key": "up-1"})
    created = api.client.post("/v1/images", content=data, headers=good)
    assert created.status_code == 201
    replayed = api.client.post("/v1/images", content=data, headers=good)
    assert replayed.status_code == 201 and replayed.json() == created.json()
    fresh = api.client.post("/v1/images", content=data, headers={**good, "Idempotency-Key": "up-2"})
    assert fresh.status_code == 200


def test_server_errors_release_the_key(sqlite_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = sqlite_api
    a, b = api.upload(noise_png(seed=8)), api.upload(noise_png(seed=9))
    headers = api.auth(**{"Idempotency-Key": "retry-me"})
    real = comparisons.create_comparison

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("the database is unavailable (create comparison)")

    monkeypatch.setattr(comparisons, "create_comparison", unavailable)
    failed = api.client.post("/v1/comparisons", json={"a": a["id"], "b": b["id"]}, headers=headers)
    assert_problem(failed, 503, "service_unavailable")
    assert int(failed.headers["retry-after"]) >= 1
    monkeypatch.setattr(comparisons, "create_comparison", real)
    retried = api.client.post("/v1/comparisons", json={"a": a["id"], "b": b["id"]}, headers=headers)
    assert retried.status_code == 202, retried.text
    assert REPLAYED_HEADER.lower() not in retried.headers


def test_batches_and_presign_are_idempotent_too(sqlite_api: Api) -> None:
    api = sqlite_api
    a, b = api.upload(noise_png(seed=10)), api.upload(noise_png(seed=11))
    payload = {"pairs": [{"a": a["id"], "b": b["id"]}]}
    headers = api.auth(**{"Idempotency-Key": "batch-1"})
    first = api.client.post("/v1/batches", json=payload, headers=headers)
    second = api.client.post("/v1/batches", json=payload, headers=headers)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] == second.json()["id"]
    assert _count_comparisons(api) == 1
    presign = api.auth(**{"Idempotency-Key": "presign-1"})
    one = api.client.post("/v1/images/presign", headers=presign)
    two = api.client.post("/v1/images/presign", headers=presign)
    assert one.json()["image"]["id"] == two.json()["image"]["id"]


def test_malformed_keys_and_missing_auth(sqlite_api: Api) -> None:
    api = sqlite_api
    too_long = api.auth(**{"Idempotency-Key": "k" * 256})
    assert_problem(
        api.client.post("/v1/images/presign", headers=too_long), 422, "invalid_idempotency_key"
    )
    anonymous = api.client.post("/v1/images/presign", headers={"Idempotency-Key": "k"})
    assert_problem(anonymous, 401, "unauthorized")


def _multipart(fields: dict[str, tuple[str, bytes, str]], boundary: str) -> bytes:
    """A multipart/form-data body with a fixed boundary (so a retry sends the same bytes)."""
    parts = []
    for name, (filename, data, content_type) in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def test_multipart_retry_with_the_same_bytes_is_replayed(sqlite_api: Api) -> None:
    api = sqlite_api
    boundary = "diffall-test-boundary"
    body = _multipart(
        {
            "a": ("a.png", noise_png(seed=12), "image/png"),
            "b": ("b.png", noise_png(seed=13), "image/png"),
        },
        boundary,
    )
    headers = api.auth(
        **{
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Idempotency-Key": "multi-1",
        }
    )
    first = api.client.post("/v1/comparisons", content=body, headers=headers)
    assert first.status_code == 202, first.text
    second = api.client.post("/v1/comparisons", content=body, headers=headers)
    assert second.status_code == 202 and second.json()["id"] == first.json()["id"]
    assert second.headers[REPLAYED_HEADER] == "true"
    assert _count_comparisons(api) == 1

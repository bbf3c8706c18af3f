"""The Python SDK (diffall.client) against a scripted fake of the HTTP API (httpx.MockTransport).

What the real API answers is covered end to end in tests/e2e; here each request the client sends
and each answer it must interpret is checked exactly, including the awkward ones (errors without
a problem body, redirects to another host, Retry-After, several pages).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from diffall import client as client_module
from diffall.client import DiffallClient, DiffallError, DiffallTimeoutError
from diffall.polling import POLL_JITTER

BASE = "http://api.test"
KEY = "dfa_test_key"
PNG = b"\x89PNG\r\n\x1a\n" + b"fake"

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler) -> DiffallClient:
    # exact delays (poll_jitter=0); test_poll_delays_are_jittered_upwards checks the jitter
    return DiffallClient(
        BASE, KEY, timeout=5.0, transport=httpx.MockTransport(handler), poll_jitter=0.0
    )


def problem(status: int, code: str, detail: str, **headers: str) -> httpx.Response:
    body = {"type": f"{BASE}/problems/{code}", "title": "x", "status": status, "code": code}
    body["detail"] = detail
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **headers}
    )


class FakeClock:
    """Replaces time.monotonic/time.sleep in diffall.client: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(client_module.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(client_module.time, "sleep", fake.sleep)
    return fake


class FakeImages:
    """POST /v1/images: ids by content, like the real API; records every upload."""

    def __init__(self) -> None:
        self.ids: dict[bytes, str] = {}
        self.uploads: list[tuple[str, bytes]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers["content-type"]
        assert content_type.startswith("multipart/form-data; boundary=")
        boundary = content_type.split("boundary=", 1)[1].encode()
        body = request.read()
        parts = [p for p in body.split(b"--" + boundary) if p.strip(b"-\r\n")]
        assert len(parts) == 1, "one file per upload"
        head, data = parts[0].split(b"\r\n\r\n", 1)
        assert b'name="file"' in head
        filename = head.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
        data = data[: -len(b"\r\n")]
        self.uploads.append((filename, data))
        image_id = self.ids.setdefault(data, str(uuid.uuid4()))
        return httpx.Response(201, json={"id": image_id, "size_bytes": len(data)})


def test_requests_carry_the_key_and_errors_carry_the_problem() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return problem(404, "not_found", "no comparison with this id")

    with make_client(handler) as client, pytest.raises(DiffallError) as info:
        client.get_comparison("3b0f4e5e-8d4c-4a5e-9d7e-5b1c1e0e6a11")
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].url == f"{BASE}/v1/comparisons/3b0f4e5e-8d4c-4a5e-9d7e-5b1c1e0e6a11"
    error = info.value
    assert (error.status, error.code, error.detail) == (
        404,
        "not_found",
        "no comparison with this id",
    )
    assert error.problem["type"].endswith("/problems/not_found")


def test_error_without_a_problem_body_and_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/images/x":
            return httpx.Response(502, text="<html>bad gateway</html>")
        return problem(429, "rate_limited", "slow down", **{"Retry-After": "7"})

    with make_client(handler) as client:
        with pytest.raises(DiffallError) as info:
            client.get_image("x")
        assert (info.value.status, info.value.code, info.value.problem) == (502, "http_502", {})
        with pytest.raises(DiffallError) as info:
            client.get_batch("b")
        assert (info.value.code, info.value.retry_after_s) == ("rate_limited", 7.0)


def test_transport_failure_is_a_diffall_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with make_client(handler) as client, pytest.raises(DiffallError) as info:
        client.get_comparison("c")
    assert (info.value.status, info.value.code) == (0, "transport_error")


def test_upload_path_and_bytes(tmp_path: Path) -> None:
    images = FakeImages()
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    with make_client(images.handle) as client:
        by_path = client.upload_image(path)
        by_bytes = client.upload_image(bytearray(PNG + b"2"))
    assert images.uploads == [("a.png", PNG), ("image", PNG + b"2")]
    assert by_path["size_bytes"] == len(PNG) and by_bytes["id"] != by_path["id"]


def test_compare_uploads_each_distinct_file_once_and_sends_json(tmp_path: Path) -> None:
    images = FakeImages()
    posted: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/images":
            return images.handle(request)
        posted.append(request)
        return httpx.Response(202, json={"id": "c1", "state": "queued"})

    path = tmp_path / "same.png"
    path.write_bytes(PNG)
    with make_client(handler) as client:
        # The same file given twice (once by a str path): uploaded once.
        answer = client.compare(
            path,
            str(path),
            options={"mode": "pixel", "ignore": [[0, 0, 4, 4]]},
            metadata={"build": 7},
            webhook_url="https://example.test/hook",
            idempotency_key="k-1",
        )
    assert answer == {"id": "c1", "state": "queued"}
    assert len(images.uploads) == 1
    (request,) = posted
    assert (request.method, request.url.path) == ("POST", "/v1/comparisons")
    assert request.headers["idempotency-key"] == "k-1"
    image_id = images.ids[PNG]
    assert json.loads(request.content) == {
        "a": image_id,
        "b": image_id,
        "options": {"mode": "pixel", "ignore": [[0, 0, 4, 4]]},
        "metadata": {"build": 7},
        "webhook_url": "https://example.test/hook",
    }


def test_compare_with_image_ids_uploads_nothing() -> None:
    posted: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/comparisons", "no upload expected"
        assert "idempotency-key" not in request.headers
        posted.append(json.loads(request.content))
        return httpx.Response(202, json={"id": "c2", "state": "queued"})

    a, b = uuid.uuid4(), uuid.uuid4()
    with make_client(handler) as client:
        client.compare(a, str(b).upper())
    assert posted == [{"a": str(a), "b": str(b)}]


def test_wait_honours_retry_after(clock: FakeClock) -> None:
    states = iter(["queued", "running", "running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        state = next(states)
        headers = {} if state == "succeeded" else {"Retry-After": "2"}
        return httpx.Response(200, json={"id": "c", "state": state}, headers=headers)

    with make_client(handler) as client:
        done = client.wait("c", timeout_s=60, poll_s=0.25)
    assert done["state"] == "succeeded"
    assert clock.sleeps == [2.0, 2.0, 2.0]  # the server's delay, not poll_s


def test_poll_delays_are_jittered_upwards(clock: FakeClock) -> None:
    # By default each delay is stretched by up to POLL_JITTER, never below Retry-After, so that
    # pollers started together spread out.
    states = iter(["queued"] * 40 + ["succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        state = next(states)
        headers = {} if state == "succeeded" else {"Retry-After": "1"}
        return httpx.Response(200, json={"id": "c", "state": state}, headers=headers)

    with DiffallClient(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
        client.wait("c", timeout_s=600, poll_s=1.0, max_poll_s=1.0)
    assert len(clock.sleeps) == 40
    assert all(1.0 <= s <= 1.0 + POLL_JITTER for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 30  # spread out, not one delay for all
    with pytest.raises(ValueError, match="poll_jitter"):
        DiffallClient(BASE, KEY, poll_jitter=-0.1)


def test_wait_backs_off_without_retry_after_and_times_out(clock: FakeClock) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now)
        return httpx.Response(200, json={"id": "c", "state": "queued"})

    with make_client(handler) as client, pytest.raises(DiffallTimeoutError) as info:
        client.wait("c", timeout_s=2.0, poll_s=0.4, max_poll_s=0.6)
    assert info.value.code == "wait_timeout" and info.value.last["state"] == "queued"
    assert isinstance(info.value, TimeoutError) and "last seen queued" in info.value.detail
    # 0.4, then x1.5 capped at 0.6, never beyond the deadline; then one last look.
    assert clock.sleeps == pytest.approx([0.4, 0.6, 0.6, 0.4])
    assert len(calls) == 5


def test_wait_polls_fast_again_after_a_change(clock: FakeClock) -> None:
    states = iter(["queued", "queued", "queued", "running", "running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "c", "state": next(states)})

    with make_client(handler) as client:
        done = client.wait({"id": "c", "state": "queued"}, timeout_s=60, poll_s=1.0)
    assert done["state"] == "succeeded"
    assert clock.sleeps == pytest.approx([1.0, 1.5, 2.25, 1.0, 1.5])


def test_wait_rides_out_429_and_503_with_their_retry_after(clock: FakeClock) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"id": "c", "state": "running"}),
            problem(429, "rate_limited", "slow down", **{"Retry-After": "7"}),
            problem(503, "database_unavailable", "down", **{"Retry-After": "5"}),
            httpx.Response(200, json={"id": "c", "state": "succeeded"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    with make_client(handler) as client:
        assert client.wait("c", timeout_s=60, poll_s=0.5)["state"] == "succeeded"
    assert clock.sleeps == pytest.approx([0.5, 7.0, 5.0])


def test_wait_raises_refusals_and_an_unreachable_server_at_once(clock: FakeClock) -> None:
    def not_found(request: httpx.Request) -> httpx.Response:
        return problem(404, "not_found", "comparison c not found")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with make_client(not_found) as client, pytest.raises(DiffallError) as info:
        client.wait("c")
    assert info.value.code == "not_found"
    with make_client(unreachable) as client, pytest.raises(DiffallError) as info:
        client.wait("c")
    assert info.value.code == "transport_error" and clock.sleeps == []


def test_wait_rides_out_a_restart_once_the_server_answered(clock: FakeClock) -> None:
    answers: list[httpx.Response | None] = [
        httpx.Response(200, json={"id": "c", "state": "running"}),
        None,  # the API restarts: connection refused
        httpx.Response(200, json={"id": "c", "state": "succeeded"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if answer is None:
            raise httpx.ConnectError("connection refused", request=request)
        return answer

    with make_client(handler) as client:
        assert client.wait("c", timeout_s=30, poll_s=1.0)["state"] == "succeeded"
    assert clock.sleeps == pytest.approx([1.0, 1.5])


def _batch(done: int, failed: int = 0, total: int = 4) -> dict[str, Any]:
    counts = {"queued": total - done, "running": 0, "succeeded": done - failed}
    counts.update({"failed": failed, "canceled": 0})
    completed = "2026-01-01T00:00:00Z" if done == total else None
    return {"id": "b1", "total": total, "counts": counts, "completed_at": completed}


def test_wait_batch_polls_until_completed(clock: FakeClock) -> None:
    pages = iter([_batch(0), _batch(0), _batch(2, 1), _batch(4, 1)])
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=next(pages))

    with make_client(handler) as client:
        done = client.wait_batch({"id": "b1"}, timeout_s=60, poll_s=1.0, progress=False)
    assert done["counts"]["failed"] == 1 and done["completed_at"] is not None
    assert paths == ["/v1/batches/b1"] * 4
    assert clock.sleeps == pytest.approx([1.0, 1.5, 1.0])  # reset when more were done


def test_wait_batch_times_out_with_the_batch_as_last_seen(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_batch(1))

    with make_client(handler) as client, pytest.raises(DiffallTimeoutError) as info:
        client.wait_batch("b1", timeout_s=5, progress=False)
    assert info.value.code == "wait_timeout" and info.value.last["total"] == 4
    assert "batch b1 not finished after 5 s (last seen 1/4 done)" in str(info.value)


def test_wait_refuses_bad_arguments() -> None:
    with make_client(lambda r: httpx.Response(500)) as client:
        with pytest.raises(ValueError, match="timeout_s"):
            client.wait("c", timeout_s=0)
        with pytest.raises(ValueError, match="poll_s"):
            client.wait("c", poll_s=0)
        with pytest.raises(ValueError, match="max_poll_s"):
            client.wait_batch("b", poll_s=5, max_poll_s=1)
        with pytest.raises(ValueError, match="'id'"):
            client.wait({"state": "queued"})


def test_wait_returns_failed_comparisons() -> None:
    body = {"id": "c", "state": "failed", "error": {"code": "corrupt_image", "message": "bad"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    with make_client(handler) as client:
        assert client.wait("c", timeout_s=5)["error"]["code"] == "corrupt_image"


def test_heatmap_follows_a_redirect_without_the_api_key() -> None:
    storage_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.test":
            assert request.url.path == "/v1/comparisons/c/heatmap"
            return httpx.Response(307, headers={"Location": "http://s3.test/b/heatmaps/c.png?X=1"})
        storage_requests.append(request)
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    with make_client(handler) as client:
        assert client.heatmap("c") == PNG
    (request,) = storage_requests
    assert str(request.url) == "http://s3.test/b/heatmaps/c.png?X=1"
    assert "authorization" not in request.headers


def test_heatmap_streamed_by_the_api_and_expired_storage_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/comparisons/local/heatmap":
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        if request.url.host == "api.test":
            return httpx.Response(302, headers={"Location": "http://s3.test/expired"})
        return httpx.Response(403, text="<Error>expired</Error>")

    with make_client(handler) as client:
        assert client.heatmap("local") == PNG
        with pytest.raises(DiffallError) as info:
            client.heatmap("remote")
    assert (info.value.status, info.value.code) == (403, "heatmap_unavailable")


def test_iter_comparisons_follows_cursors_and_sends_filters() -> None:
    pages = {
        None: (["c1", "c2"], "cur-1"),
        "cur-1": (["c3", "c4"], "cur-2"),
        "cur-2": (["c5"], None),
    }
    queries: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/comparisons"
        query = dict(request.url.params)
        queries.append(query)
        ids, next_cursor = pages[query.get("cursor")]
        return httpx.Response(
            200, json={"items": [{"id": i} for i in ids], "next_cursor": next_cursor}
        )

    since = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with make_client(handler) as client:
        found = [
            c["id"]
            for c in client.iter_comparisons(
                state="succeeded", created_after=since, limit=2, batch_id=None
            )
        ]
    assert found == ["c1", "c2", "c3", "c4", "c5"]
    base = {"state": "succeeded", "created_after": "2025-01-02T03:04:05+00:00", "limit": "2"}
    assert queries == [base, {**base, "cursor": "cur-1"}, {**base, "cursor": "cur-2"}]


def test_iter_comparisons_is_lazy() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(
            200, json={"items": [{"id": "a"}, {"id": "b"}], "next_cursor": "more"}
        )

    with make_client(handler) as client:
        iterator = client.iter_comparisons()
        assert next(iterator)["id"] == "a" and len(requests) == 1


def test_create_batch_uploads_once_and_keeps_per_pair_fields(tmp_path: Path) -> None:
    images = FakeImages()
    posted: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/images":
            return images.handle(request)
        posted.append(request)
        return httpx.Response(201, json={"id": "batch-1", "items": []})

    ref = tmp_path / "ref.png"
    ref.write_bytes(PNG)
    known = str(uuid.uuid4())
    with make_client(handler) as client:
        answer = client.create_batch(
            [
                (ref, PNG + b"1"),
                (ref, PNG + b"2"),
                {"a": known, "b": PNG + b"1", "options": {"mode": "align"}, "metadata": {"n": 3}},
            ],
            metadata={"run": "nightly"},
            idempotency_key="batch-key",
        )
    assert answer["id"] == "batch-1"
    assert sorted(data for _, data in images.uploads) == [PNG, PNG + b"1", PNG + b"2"]
    (request,) = posted
    assert request.headers["idempotency-key"] == "batch-key"
    ids = images.ids
    assert json.loads(request.content) == {
        "pairs": [
            {"a": ids[PNG], "b": ids[PNG + b"1"]},
            {"a": ids[PNG], "b": ids[PNG + b"2"]},
            {"a": known, "b": ids[PNG + b"1"], "options": {"mode": "align"}, "metadata": {"n": 3}},
        ],
        "metadata": {"run": "nightly"},
    }


def test_constructor_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="api_key"):
        DiffallClient(BASE, "")
    with pytest.raises(ValueError, match="timeout"):
        DiffallClient(BASE, KEY, timeout=0)


def test_webhook_delivery_log_methods() -> None:
    delivery_id = str(uuid.uuid4())
    pages = {None: ([delivery_id], "cur-1"), "cur-1": (["d2"], None)}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path, query = request.url.path, dict(request.url.params)
        if path == "/v1/webhook-deliveries":
            ids, next_cursor = pages[query.get("cursor")]
            return httpx.Response(
                200, json={"items": [{"id": i} for i in ids], "next_cursor": next_cursor}
            )
        if path == "/v1/webhook-deliveries/recover":
            return httpx.Response(202, json={"recovered": 1, "delivery_ids": [delivery_id]})
        if path == f"/v1/webhook-deliveries/{delivery_id}/retry":
            return problem(409, "delivery_in_progress", "being sent")
        return httpx.Response(200, json={"id": path.rsplit("/", 1)[1], "state": "failed"})

    batch_id = uuid.uuid4()
    since = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with make_client(handler) as client:
        found = [
            d["id"]
            for d in client.iter_webhook_deliveries(
                target="ad_hoc", subject_id=batch_id, state=None, limit=50
            )
        ]
        assert found == [delivery_id, "d2"]
        assert client.get_webhook_delivery(delivery_id)["state"] == "failed"
        with pytest.raises(DiffallError) as info:
            client.retry_webhook_delivery(delivery_id, idempotency_key="retry-1")
        assert (info.value.status, info.value.code) == (409, "delivery_in_progress")
        answer = client.recover_webhook_deliveries(since, subject_id=batch_id)
        assert answer == {"recovered": 1, "delivery_ids": [delivery_id]}
        with pytest.raises(ValueError, match="time zone"):
            client.recover_webhook_deliveries(datetime(2025, 1, 2))
    filters = {"target": "ad_hoc", "subject_id": str(batch_id), "limit": "50"}
    assert [(r.method, r.url.path, dict(r.url.params)) for r in seen] == [
        ("GET", "/v1/webhook-deliveries", filters),
        ("GET", "/v1/webhook-deliveries", {**filters, "cursor": "cur-1"}),
        ("GET", f"/v1/webhook-deliveries/{delivery_id}", {}),
        ("POST", f"/v1/webhook-deliveries/{delivery_id}/retry", {}),
        (
            "POST",
            "/v1/webhook-deliveries/recover",
            {"since": "2025-01-02T03:04:05+00:00", "subject_id": str(batch_id)},
        ),
    ]
    assert seen[3].headers["idempotency-key"] == "retry-1"


def test_from_env_reads_the_url_and_the_key() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers["authorization"]))
        return httpx.Response(200, json={"id": "b", "completed_at": "2026-01-01T00:00:00Z"})

    env = {"DIFFALL_URL": "http://diffall.test:9000/", "DIFFALL_API_KEY": "dfa_env"}
    transport = httpx.MockTransport(handler)
    with DiffallClient.from_env(environ=env, transport=transport) as client:
        client.wait_batch("b", progress=False)
    with DiffallClient.from_env(environ={"DIFFALL_API_KEY": "k"}, transport=transport) as client:
        client.get_batch("b")
    assert seen == [
        ("http://diffall.test:9000/v1/batches/b", "Bearer dfa_env"),
        ("http://127.0.0.1:8000/v1/batches/b", "Bearer k"),
    ]
    with pytest.raises(ValueError, match="DIFFALL_API_KEY"):
        DiffallClient.from_env(environ={"DIFFALL_URL": "http://x"})


class ETagServer:
    """A resource whose versions come from ``bodies``; answers 304 to a current If-None-Match,
    the way the API does (``ETag`` on every answer, ``Retry-After`` while not final)."""

    def __init__(self, bodies: list[dict[str, Any]], repeats: int) -> None:
        self.versions = [body for body in bodies for _ in range(repeats)]
        self.polls = 0
        self.sent: list[str | None] = []
        self.statuses: list[int] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = self.versions[min(self.polls, len(self.versions) - 1)]
        self.polls += 1
        version = self.versions.index(body)
        etag = f'"v{version}"'
        self.sent.append(request.headers.get("if-none-match"))
        headers = {"ETag": etag}
        if body.get("state") not in ("succeeded", "failed", "canceled"):
            headers["Retry-After"] = "1"
        status = 304 if request.headers.get("if-none-match") == etag else 200
        self.statuses.append(status)
        if status == 304:
            return httpx.Response(304, headers=headers)
        return httpx.Response(200, json=body, headers=headers)


def test_wait_sends_if_none_match_and_reads_304_as_unchanged(clock: FakeClock) -> None:
    server = ETagServer(
        [
            {"id": "c", "state": "queued"},
            {"id": "c", "state": "running"},
            {"id": "c", "state": "succeeded", "result": {"ssim": 0.5}},
        ],
        repeats=3,
    )
    with make_client(server.handle) as client:
        done = client.wait("c", timeout_s=60, poll_s=1.0)
    assert done == {"id": "c", "state": "succeeded", "result": {"ssim": 0.5}}
    # The first poll has no copy; each later one sends the ETag of the last 200.
    assert server.sent == [None, '"v0"', '"v0"', '"v0"', '"v3"', '"v3"', '"v3"']
    assert server.statuses == [200, 304, 304, 200, 304, 304, 200]
    # A 304 is "no change": the delay grows as for an unchanged 200, Retry-After a floor.
    assert clock.sleeps == pytest.approx([1.0, 1.5, 2.25, 1.0, 1.5, 2.25])


def test_wait_batch_sends_if_none_match(clock: FakeClock) -> None:
    server = ETagServer([_batch(0), _batch(2, 1), _batch(4, 1)], repeats=2)
    with make_client(server.handle) as client:
        done = client.wait_batch("b1", timeout_s=60, poll_s=1.0, progress=False)
    assert done["completed_at"] is not None and done["counts"]["failed"] == 1
    assert server.sent == [None, '"v0"', '"v0"', '"v2"', '"v2"']
    assert server.statuses == [200, 304, 200, 304, 200]


def test_a_304_without_a_copy_is_an_unexpected_response(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(304, headers={"ETag": '"x"'})

    with make_client(handler) as client, pytest.raises(DiffallError) as info:
        client.wait("c", timeout_s=60)
    assert info.value.code == "unexpected_response" and info.value.status == 304

"""``/v1/comparisons``: submit (JSON and multipart), 202 + Location, polling, heatmap, DELETE."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core.db.models import Comparison, ComparisonState, utcnow
from core.services.comparisons import HEATMAP_KEY
from core.services.tasknames import QUEUE_INTERACTIVE, RUN_COMPARISON
from tests.support.api import Api, ApiFactory, assert_problem, s3_storage
from tests.support.brokers import messages_for
from tests.support.images import noise_png

RESULT = {"ssim": 0.5, "verdict": "different", "engine_version": "test"}


def _row(api: Api, comparison_id: str) -> Comparison:
    with api.sessions() as session:
        row = session.get(Comparison, uuid.UUID(comparison_id))
        assert row is not None
        session.expunge(row)
        return row


def _finish(api: Api, comparison_id: str, *, heatmap: bytes | None = None) -> None:
    """Make a comparison ``succeeded`` as a worker would (result row + heatmap object)."""
    key = HEATMAP_KEY.format(comparison_id=comparison_id)
    if heatmap is not None:
        api.app.state.store.put(key, heatmap, content_type="image/png")
    now = utcnow()
    with api.sessions() as session, session.begin():
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == uuid.UUID(comparison_id))
            .values(
                state=ComparisonState.SUCCEEDED,
                attempt=1,
                result=RESULT,
                heatmap_key=key if heatmap is not None else None,
                started_at=now,
                finished_at=now,
                updated_at=now,
            )
        )


def test_json_comparison_is_queued_with_location(api: Api) -> None:
    a = api.upload(noise_png(seed=1))
    b = api.upload(noise_png(seed=2))
    response = api.client.post(
        "/v1/comparisons",
        json={
            "a": a["id"],
            "b": b["id"],
            "options": {"mode": "pixel", "tolerance": 0.05, "ignore": [[0, 0, 4, 4]]},
            "metadata": {"build": 42, "ref": "main"},
            "webhook_url": "https://example.com/hook",
        },
        headers=api.auth(),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == body["links"]["self"]
    assert httpx.URL(response.headers["location"]).path == f"/v1/comparisons/{body['id']}"
    assert body["state"] == "queued" and body["attempts"] == 0
    assert (body["a"], body["b"]) == (a["id"], b["id"])
    assert body["metadata"] == {"build": 42, "ref": "main"}
    assert body["webhook_url"] == "https://example.com/hook"
    assert body["options"]["mode"] == "pixel" and body["options"]["ignore"] == [[0, 0, 4, 4]]
    assert body["result"] is None and body["error"] is None and body["batch_id"] is None
    assert body["links"]["heatmap"] is None
    for stamp in ("created_at", "updated_at"):
        assert body[stamp].endswith("Z") or body[stamp].endswith("+00:00")
    # The row is queued, and the task was sent by name on the interactive queue.
    assert _row(api, body["id"]).state == ComparisonState.QUEUED
    messages = messages_for(api.broker, body["id"])
    assert len(messages) == 1, messages
    assert messages[0]["task"] == RUN_COMPARISON
    assert messages[0]["routing_key"] == QUEUE_INTERACTIVE


def test_multipart_comparison_with_files_and_fields(api: Api) -> None:
    data_a, data_b = noise_png(seed=3), noise_png(seed=4)
    response = api.client.post(
        "/v1/comparisons",
        files={"a": ("a.png", data_a, "image/png"), "b": ("b.png", data_b, "image/png")},
        data={
            "options": json.dumps({"mode": "auto"}),
            "metadata": json.dumps({"ticket": "QA-1"}),
            "webhook_url": "https://example.com/done",
        },
        headers=api.auth(),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "queued" and body["metadata"] == {"ticket": "QA-1"}
    assert body["webhook_url"] == "https://example.com/done"
    image_a = api.client.get(f"/v1/images/{body['a']}", headers=api.auth()).json()
    assert image_a["sha256"] == hashlib.sha256(data_a).hexdigest()
    assert len(messages_for(api.broker, body["id"])) == 1
    # The uploaded files are ordinary images: uploading A again gives the same id, and a
    # multipart request may name an existing image by id instead of sending a file.
    assert api.upload(data_a)["id"] == body["a"]
    mixed = api.client.post(
        "/v1/comparisons",
        files={"a": ("a.png", data_a, "image/png")},
        data={"b": body["b"]},
        headers=api.auth(),
    )
    assert mixed.status_code == 202, mixed.text
    assert (mixed.json()["a"], mixed.json()["b"]) == (body["a"], body["b"])


def test_multipart_field_errors(sqlite_api: Api) -> None:
    api = sqlite_api
    good = noise_png(seed=5)
    bad_json = api.client.post(
        "/v1/comparisons",
        files={"a": ("a.png", good, "image/png"), "b": ("b.png", good, "image/png")},
        data={"options": "{not json"},
        headers=api.auth(),
    )
    body = assert_problem(bad_json, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "options"]
    missing = api.client.post(
        "/v1/comparisons", files={"a": ("a.png", good, "image/png")}, headers=api.auth()
    )
    body = assert_problem(missing, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["body", "b"]
    corrupt = api.client.post(
        "/v1/comparisons",
        files={"a": ("a.png", good, "image/png"), "b": ("b.png", good[:200], "image/png")},
        headers=api.auth(),
    )
    body = assert_problem(corrupt, 422, "corrupt_image")
    assert body["field"] == "b"


def test_invalid_options_unknown_images_and_pending_images(sqlite_api: Api) -> None:
    api = sqlite_api
    a = api.upload(noise_png(seed=6))
    b = api.upload(noise_png(seed=7))
    bad = api.client.post(
        "/v1/comparisons",
        json={"a": a["id"], "b": b["id"], "options": {"mode": "sideways"}},
        headers=api.auth(),
    )
    assert_problem(bad, 422, {"invalid_request", "invalid_options"})
    unknown = api.client.post(
        "/v1/comparisons", json={"a": a["id"], "b": str(uuid.uuid4())}, headers=api.auth()
    )
    assert_problem(unknown, 404, "not_found")
    pending = api.client.post("/v1/images/presign", headers=api.auth()).json()["image"]
    not_ready = api.client.post(
        "/v1/comparisons", json={"a": a["id"], "b": pending["id"]}, headers=api.auth()
    )
    assert_problem(not_ready, 409, "image_not_ready")
    theirs = api.upload(noise_png(seed=8), tenant="other")
    foreign = api.client.post(
        "/v1/comparisons", json={"a": a["id"], "b": theirs["id"]}, headers=api.auth()
    )
    assert_problem(foreign, 404, "not_found")


def test_polling_says_retry_after_until_final(api: Api) -> None:
    a, b = api.upload(noise_png(seed=9)), api.upload(noise_png(seed=10))
    created = api.compare(a["id"], b["id"])
    path = f"/v1/comparisons/{created['id']}"
    queued = api.client.get(path, headers=api.auth())
    assert queued.status_code == 200 and queued.headers["retry-after"] == "1"
    assert queued.json()["state"] == "queued"
    _finish(api, created["id"], heatmap=noise_png(8, 8, seed=99))
    done = api.client.get(path, headers=api.auth())
    assert done.status_code == 200 and "retry-after" not in done.headers
    body = done.json()
    assert body["state"] == "succeeded" and body["result"] == RESULT
    assert body["attempts"] == 1 and body["finished_at"] is not None
    assert httpx.URL(body["links"]["heatmap"]).path == f"{path}/heatmap"


def test_heatmap_streamed_from_local_storage(sqlite_api: Api) -> None:
    api = sqlite_api
    a, b = api.upload(noise_png(seed=11)), api.upload(noise_png(seed=12))
    created = api.compare(a["id"], b["id"])
    path = f"/v1/comparisons/{created['id']}/heatmap"
    assert_problem(api.client.get(path, headers=api.auth()), 404, "heatmap_not_ready")
    heatmap = noise_png(8, 8, seed=98)
    _finish(api, created["id"], heatmap=heatmap)
    response = api.client.get(path, headers=api.auth())
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png" and response.content == heatmap
    assert_problem(api.client.get(path, headers=api.auth("other")), 404, "not_found")


def test_heatmap_redirects_to_s3(
    make_api: ApiFactory,
    sqlite_url: str,
    s3_endpoint: str,
    s3_bucket_factory: Callable[[], str],
) -> None:
    api = make_api(sqlite_url, storage=s3_storage(s3_endpoint, s3_bucket_factory()))
    a, b = api.upload(noise_png(seed=13)), api.upload(noise_png(seed=14))
    created = api.compare(a["id"], b["id"])
    heatmap = noise_png(8, 8, seed=97)
    _finish(api, created["id"], heatmap=heatmap)
    response = api.client.get(
        f"/v1/comparisons/{created['id']}/heatmap", headers=api.auth(), follow_redirects=False
    )
    assert response.status_code == 307
    location = response.headers["location"]
    assert location.startswith(s3_endpoint) and "Signature" in location
    fetched = httpx.get(location, timeout=10.0)
    assert fetched.status_code == 200 and fetched.content == heatmap


def test_delete_cancels_a_queued_comparison(api: Api) -> None:
    a, b = api.upload(noise_png(seed=15)), api.upload(noise_png(seed=16))
    created = api.compare(a["id"], b["id"])
    path = f"/v1/comparisons/{created['id']}"
    assert_problem(api.client.delete(path, headers=api.auth("other")), 404, "not_found")
    deleted = api.client.delete(path, headers=api.auth())
    assert deleted.status_code == 200 and deleted.json()["state"] == "canceled"
    polled = api.client.get(path, headers=api.auth())
    assert polled.json()["state"] == "canceled" and "retry-after" not in polled.headers
    again = api.client.delete(path, headers=api.auth())  # idempotent
    assert again.status_code == 200 and again.json()["state"] == "canceled"
    assert_problem(
        api.client.delete(f"/v1/comparisons/{uuid.uuid4()}", headers=api.auth()), 404, "not_found"
    )


def test_delete_removes_the_result_and_heatmap_of_a_finished_comparison(sqlite_api: Api) -> None:
    api = sqlite_api
    a, b = api.upload(noise_png(seed=17)), api.upload(noise_png(seed=18))
    created = api.compare(a["id"], b["id"])
    _finish(api, created["id"], heatmap=noise_png(8, 8, seed=96))
    key = HEATMAP_KEY.format(comparison_id=created["id"])
    assert api.app.state.store.exists(key)
    deleted = api.client.delete(f"/v1/comparisons/{created['id']}", headers=api.auth())
    body: dict[str, Any] = deleted.json()
    assert deleted.status_code == 200
    assert body["state"] == "canceled" and body["result"] is None
    assert body["links"]["heatmap"] is None
    assert not api.app.state.store.exists(key)
    assert_problem(
        api.client.get(f"/v1/comparisons/{created['id']}/heatmap", headers=api.auth()),
        404,
        "heatmap_not_ready",
    )


def test_comparisons_are_invisible_to_other_tenants(api: Api) -> None:
    a, b = api.upload(noise_png(seed=19)), api.upload(noise_png(seed=20))
    created = api.compare(a["id"], b["id"])
    other = api.auth("other")
    assert_problem(
        api.client.get(f"/v1/comparisons/{created['id']}", headers=other), 404, "not_found"
    )
    listing = api.client.get("/v1/comparisons", headers=other)
    assert listing.status_code == 200 and listing.json()["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://10.1.2.3/hook",  # private
        "http://2130706433/hook",  # 127.0.0.1 in decimal
        "http://localhost:8080/hook",  # loopback by name, decided without DNS
    ],
)
def test_forbidden_per_comparison_and_batch_webhook_urls_are_refused(api: Api, url: str) -> None:
    a = api.upload(noise_png(seed=1))
    b = api.upload(noise_png(seed=2))
    response = api.client.post(
        "/v1/comparisons",
        json={"a": a["id"], "b": b["id"], "webhook_url": url},
        headers=api.auth(),
    )
    body = assert_problem(response, 422, "webhook_url_forbidden")
    # The message says which setting an operator would change to allow such a receiver.
    assert "DIFFALL_WEBHOOK_ALLOWED_NETWORKS" in body["detail"]
    assert body["setting"] == "DIFFALL_WEBHOOK_ALLOWED_NETWORKS"
    batch = api.client.post(
        "/v1/batches",
        json={"pairs": [{"a": a["id"], "b": b["id"]}], "webhook_url": url},
        headers=api.auth(),
    )
    body = assert_problem(batch, 422, "webhook_url_forbidden")
    assert "DIFFALL_WEBHOOK_ALLOWED_NETWORKS" in body["detail"]


def test_bad_options_are_refused_alike_from_json_and_multipart(sqlite_api: Api) -> None:
    api = sqlite_api
    a = api.upload(noise_png(seed=9))
    options = {"tolerance": 1.5, "antialiasing": True}
    as_json = api.client.post(
        "/v1/comparisons", json={"a": a["id"], "b": a["id"], "options": options}, headers=api.auth()
    )
    as_form = api.client.post(
        "/v1/comparisons",
        data={"a": a["id"], "b": a["id"], "options": json.dumps(options)},
        files={"unused": ("x.txt", b"", "text/plain")},  # multipart/form-data
        headers=api.auth(),
    )
    first = assert_problem(as_json, 422, "invalid_request")
    second = assert_problem(as_form, 422, "invalid_request")
    assert first["detail"] == second["detail"] == "tolerance: Input should be less than 1, not 1.5"
    # A good one is echoed with every default filled in.
    good = api.client.post(
        "/v1/comparisons",
        json={"a": a["id"], "b": a["id"], "options": {"mode": "pixel", "ignore": None}},
        headers=api.auth(),
    )
    assert good.status_code == 202, good.text
    assert good.json()["options"] == {
        "mode": "pixel",
        "ignore": [],
        "tolerance": 0.1,
        "antialiasing": True,
        "fail_under": None,
    }

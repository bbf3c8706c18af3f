"""``/v1/batches``: one bad pair reported per item, the limit, progress, paginated listing."""

from __future__ import annotations

import uuid

from core.services.tasknames import QUEUE_BATCH, RUN_COMPARISON
from tests.support.api import Api, ApiFactory, assert_problem
from tests.support.brokers import messages_for
from tests.support.images import noise_png


def test_batch_with_one_bad_pair_accepts_the_rest(api: Api) -> None:
    a, b, c = (api.upload(noise_png(seed=s)) for s in (1, 2, 3))
    missing = str(uuid.uuid4())
    response = api.client.post(
        "/v1/batches",
        json={
            "pairs": [
                {"a": a["id"], "b": b["id"], "metadata": {"row": 0}},
                {"a": a["id"], "b": missing},
                {"a": b["id"], "b": c["id"], "options": {"mode": "pixel"}},
                {"a": a["id"], "b": c["id"], "options": {"tolerance": 7}},
            ],
            "metadata": {"suite": "nightly"},
            "webhook_url": "https://example.com/batch",
        },
        headers=api.auth(),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == body["links"]["self"]
    assert (body["total"], body["accepted"], body["rejected"]) == (2, 2, 2)
    assert body["metadata"] == {"suite": "nightly"}
    items = body["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3]
    assert items[0]["comparison_id"] and items[0]["error"] is None
    assert items[2]["comparison_id"] and items[2]["error"] is None
    assert items[1]["comparison_id"] is None and items[1]["error"]["code"] == "image_not_found"
    assert items[3]["comparison_id"] is None and items[3]["error"]["code"] == "invalid_options"
    for index in (0, 2):
        comparison_id = items[index]["comparison_id"]
        queued = messages_for(api.broker, comparison_id)
        assert len(queued) == 1 and queued[0]["task"] == RUN_COMPARISON
        assert queued[0]["routing_key"] == QUEUE_BATCH
        one = api.client.get(f"/v1/comparisons/{comparison_id}", headers=api.auth()).json()
        assert one["batch_id"] == body["id"] and one["state"] == "queued"
    assert api.client.get(
        f"/v1/comparisons/{items[0]['comparison_id']}", headers=api.auth()
    ).json()["metadata"] == {"row": 0}

    summary = api.client.get(f"/v1/batches/{body['id']}", headers=api.auth())
    assert summary.status_code == 200
    progress = summary.json()
    assert progress["total"] == 2 and progress["counts"]["queued"] == 2
    assert progress["progress"] == 0.0 and progress["completed_at"] is None

    listed = api.client.get(
        f"/v1/batches/{body['id']}/comparisons", params={"limit": 1}, headers=api.auth()
    ).json()
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    rest = api.client.get(
        f"/v1/batches/{body['id']}/comparisons",
        params={"limit": 1, "cursor": listed["next_cursor"]},
        headers=api.auth(),
    ).json()
    assert {listed["items"][0]["id"], rest["items"][0]["id"]} == {
        items[0]["comparison_id"],
        items[2]["comparison_id"],
    }
    assert rest["next_cursor"] is None

    # Another tenant sees none of it.
    other = api.auth("other")
    for path in (f"/v1/batches/{body['id']}", f"/v1/batches/{body['id']}/comparisons"):
        assert_problem(api.client.get(path, headers=other), 404, "not_found")


def test_batch_over_the_limit_is_413(make_api: ApiFactory, sqlite_url: str) -> None:
    api = make_api(sqlite_url, max_batch_pairs=3)
    a, b = api.upload(noise_png(seed=4)), api.upload(noise_png(seed=5))
    pair = {"a": a["id"], "b": b["id"]}
    assert (
        api.client.post("/v1/batches", json={"pairs": [pair] * 3}, headers=api.auth()).status_code
        == 202
    )
    response = api.client.post("/v1/batches", json={"pairs": [pair] * 4}, headers=api.auth())
    body = assert_problem(response, 413, "batch_too_large")
    assert body["max_pairs"] == 3


def test_empty_and_malformed_batches_are_refused(sqlite_api: Api) -> None:
    api = sqlite_api
    assert_problem(
        api.client.post("/v1/batches", json={"pairs": []}, headers=api.auth()),
        422,
        "validation_error",  # the schema says so: minItems 1
    )
    malformed = api.client.post(
        "/v1/batches", json={"pairs": [{"a": "x", "b": "y"}]}, headers=api.auth()
    )
    assert_problem(malformed, 422, "validation_error")
    assert_problem(
        api.client.get(f"/v1/batches/{uuid.uuid4()}", headers=api.auth()), 404, "not_found"
    )

"""``GET /v1/comparisons``: cursor pagination walks every item exactly once, filters, bounds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.db.models import Comparison, ComparisonState
from tests.support.api import Api, ApiFactory, assert_problem
from tests.support.images import noise_png


def _walk(api: Api, params: dict[str, str | int], tenant: str = "acme") -> list[str]:
    """Every id of a listing, following ``next_cursor`` to the end."""
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = api.client.get("/v1/comparisons", params=query, headers=api.auth(tenant))
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= int(params.get("limit", 50))
        if cursor is not None:
            assert page["items"], "a next_cursor led to an empty page"
        ids.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("pagination did not end")


def test_cursor_walks_every_item_exactly_once_newest_first(api: Api) -> None:
    a, b = api.upload(noise_png(seed=1)), api.upload(noise_png(seed=2))
    created = [api.compare(a["id"], b["id"], metadata={"n": n})["id"] for n in range(7)]
    theirs = [api.upload(noise_png(seed=s), tenant="other")["id"] for s in (1, 2)]
    api.compare(theirs[0], theirs[1], tenant="other")  # never listed for acme
    for limit in (1, 3, 7, 100):
        ids = _walk(api, {"limit": limit})
        assert sorted(ids) == sorted(created), limit
        assert len(set(ids)) == len(ids)
    newest_first = _walk(api, {"limit": 2})
    assert newest_first == list(reversed(created))


def test_filters_by_state_batch_and_creation_time(api: Api) -> None:
    a, b = api.upload(noise_png(seed=3)), api.upload(noise_png(seed=4))
    first = api.compare(a["id"], b["id"])["id"]
    second = api.compare(a["id"], b["id"])["id"]
    api.client.delete(f"/v1/comparisons/{first}", headers=api.auth())
    assert _walk(api, {"state": "canceled"}) == [first]
    assert _walk(api, {"state": "queued"}) == [second]
    assert _walk(api, {"state": "succeeded"}) == []
    # Move `first` one hour back in time, then filter on the creation time.
    past = datetime.now(UTC) - timedelta(hours=1)
    with api.sessions() as session, session.begin():
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == uuid.UUID(first))
            .values(created_at=past, state=ComparisonState.CANCELED)
        )
    cut = (past + timedelta(minutes=30)).isoformat()
    assert _walk(api, {"created_after": cut}) == [second]
    assert _walk(api, {"created_before": cut}) == [first]
    batch = api.client.post(
        "/v1/batches", json={"pairs": [{"a": a["id"], "b": b["id"]}]}, headers=api.auth()
    ).json()
    in_batch = _walk(api, {"batch_id": batch["id"]})
    assert in_batch == [batch["items"][0]["comparison_id"]]


def test_limit_bounds_and_bad_cursors(make_api: ApiFactory, sqlite_url: str) -> None:
    api = make_api(sqlite_url, page_size_max=20)
    headers = api.auth()
    for bad in (0, -1, 101, "many"):
        response = api.client.get("/v1/comparisons", params={"limit": bad}, headers=headers)
        body = assert_problem(response, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["query", "limit"]
    # limits.page_size_max lowers the bound.
    over = api.client.get("/v1/comparisons", params={"limit": 21}, headers=headers)
    assert_problem(over, 422, "validation_error")
    at_bound = api.client.get("/v1/comparisons", params={"limit": 20}, headers=headers)
    assert at_bound.status_code == 200
    garbage = api.client.get("/v1/comparisons", params={"cursor": "not-a-cursor"}, headers=headers)
    assert_problem(garbage, 422, {"invalid_request", "invalid_cursor"})
    naive = api.client.get(
        "/v1/comparisons", params={"created_after": "2024-01-01T00:00:00"}, headers=headers
    )
    assert_problem(naive, 422, "validation_error")

"""Conditional GET of what clients poll: a strong ETag on every answer, ``If-None-Match`` with
the current one answers 304 with no body, a new ETag once the resource changed, and another
tenant's id is still a 404 (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from core.db.models import ComparisonState
from core.services import lifecycle
from diffall.client import DiffallClient
from tests.support.api import Api, assert_problem
from tests.support.images import noise_png

RESULT: dict[str, Any] = {"verdict": "identical", "ssim": 1.0}


def _pair(api: Api, seed: int = 0) -> tuple[str, str]:
    return (
        api.upload(noise_png(seed=seed))["id"],
        api.upload(noise_png(seed=seed + 100))["id"],
    )


def _claim(api: Api, comparison_id: str) -> lifecycle.Claim:
    """Claim the job as a worker does (``queued`` -> ``running``)."""
    with api.sessions() as session, session.begin():
        claim, _ = lifecycle.claim(
            session, uuid.UUID(comparison_id), max_crashes=3, lease_s=60, redelivered=False
        )
    assert claim is not None
    return claim


def _succeed(api: Api, claim: lifecycle.Claim) -> None:
    with api.sessions() as session, session.begin():
        assert lifecycle.succeed(session, claim, result=RESULT, heatmap_key="heatmaps/x.png")


def _get(api: Api, path: str, etag: str | None = None, tenant: str = "acme") -> Any:
    extra = {} if etag is None else {"If-None-Match": etag}
    return api.client.get(path, headers=api.auth(tenant, **extra))


def _etag(response: Any) -> str:
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 8  # strong, opaque
    assert response.headers["cache-control"] == "private, no-cache"
    return str(etag)


def _not_modified(response: Any, etag: str) -> None:
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == etag


def test_a_comparison_answers_304_until_it_changes(api: Api) -> None:
    a, b = _pair(api)
    created = api.compare(a, b)
    path = f"/v1/comparisons/{created['id']}"

    first = _get(api, path)
    assert first.status_code == 200 and first.json()["state"] == "queued"
    etag = _etag(first)
    assert _etag(_get(api, path)) == etag  # same state, same ETag
    unchanged = _get(api, path, etag)
    _not_modified(unchanged, etag)
    assert unchanged.headers["retry-after"] == "1"  # still a hint to poll slowly
    # Any of a list, a weak form, or "*" names the current copy; another tag does not.
    _not_modified(_get(api, path, f'"0000", W/{etag}'), etag)
    _not_modified(_get(api, path, "*"), etag)
    assert _get(api, path, '"something-else"').status_code == 200

    claim = _claim(api, created["id"])
    running = _get(api, path, etag)
    assert running.status_code == 200 and running.json()["state"] == "running"
    running_etag = _etag(running)
    assert running_etag != etag
    _not_modified(_get(api, path, running_etag), running_etag)

    _succeed(api, claim)
    done = _get(api, path, running_etag)
    assert done.status_code == 200
    body = done.json()
    assert body["state"] == "succeeded" and body["result"] == RESULT
    done_etag = _etag(done)
    assert done_etag not in (etag, running_etag)
    final = _get(api, path, done_etag)
    _not_modified(final, done_etag)
    assert "retry-after" not in final.headers  # final: nothing to wait for

    # Deleting the result changes the representation again.
    assert api.client.delete(path, headers=api.auth()).status_code == 200
    canceled = _get(api, path, done_etag)
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
    assert _etag(canceled) != done_etag


def test_another_tenants_comparison_is_404_with_or_without_an_etag(api: Api) -> None:
    a, b = _pair(api)
    created = api.compare(a, b)
    path = f"/v1/comparisons/{created['id']}"
    etag = _etag(_get(api, path))
    for header in (None, etag, "*"):
        foreign = _get(api, path, header, tenant="intruder")
        problem = assert_problem(foreign, 404, "not_found")
        assert "etag" not in foreign.headers
        unknown = _get(api, f"/v1/comparisons/{uuid.uuid4()}", header, tenant="intruder")
        assert assert_problem(unknown, 404, "not_found").keys() == problem.keys()
    _not_modified(_get(api, path, etag), etag)  # the owner still gets its 304


def test_a_batch_and_its_listing_answer_304_until_they_change(api: Api) -> None:
    pairs = [_pair(api, seed) for seed in range(3)]
    response = api.client.post(
        "/v1/batches",
        json={"pairs": [{"a": a, "b": b} for a, b in pairs]},
        headers=api.auth(),
    )
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    ids = [item["comparison_id"] for item in response.json()["items"]]
    path, listing = f"/v1/batches/{batch_id}", f"/v1/batches/{batch_id}/comparisons"

    etag = _etag(_get(api, path))
    page_etag = _etag(_get(api, listing))
    _not_modified(_get(api, path, etag), etag)
    _not_modified(_get(api, listing, page_etag), page_etag)
    page2 = f"{listing}?limit=2"
    assert _etag(_get(api, page2)) != page_etag  # another page, another ETag

    claim = _claim(api, ids[0])
    moved = _get(api, path, etag)
    assert moved.status_code == 200 and moved.json()["counts"]["running"] == 1
    running_etag = _etag(moved)
    assert running_etag != etag
    listed = _get(api, listing, page_etag)
    assert listed.status_code == 200
    assert {item["state"] for item in listed.json()["items"]} == {"queued", "running"}
    page_etag = _etag(listed)

    _succeed(api, claim)
    done = _get(api, path, running_etag)
    assert done.status_code == 200
    assert done.json()["verdicts"]["identical"] == 1
    done_etag = _etag(done)
    _not_modified(_get(api, path, done_etag), done_etag)
    assert _get(api, listing, page_etag).status_code == 200

    # A verdict leaves the summary (succeeded -> canceled): the ETag changes with it.
    assert api.client.delete(f"/v1/comparisons/{ids[0]}", headers=api.auth()).status_code == 200
    after = _get(api, path, done_etag)
    assert after.status_code == 200 and after.json()["verdicts"]["identical"] == 0
    assert _etag(after) != done_etag

    for header in (None, done_etag):
        for foreign in (path, listing):
            assert_problem(_get(api, foreign, header, tenant="intruder"), 404, "not_found")


def test_the_openapi_schema_documents_the_304(sqlite_api: Api) -> None:
    schema = sqlite_api.client.get("/openapi.json").json()
    for path in (
        "/v1/comparisons/{comparison_id}",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/comparisons",
    ):
        get = schema["paths"][path]["get"]
        assert "ETag" in get["responses"]["200"]["headers"]
        assert "ETag" in get["responses"]["304"]["headers"]
        assert "content" not in get["responses"]["304"] or not get["responses"]["304"]["content"]
        names = {(p["in"], p["name"]) for p in get["parameters"]}
        assert ("header", "If-None-Match") in names


@pytest.mark.parametrize("value", ['"', "W/", ",,,", "x" * 5000])
def test_odd_if_none_match_values_get_the_full_answer(sqlite_api: Api, value: str) -> None:
    api = sqlite_api
    a, b = _pair(api)
    created = api.compare(a, b)
    response = _get(api, f"/v1/comparisons/{created['id']}", value)
    assert response.status_code == 200 and response.json()["state"] == ComparisonState.QUEUED


class _Recording(httpx.BaseTransport):
    """The test client's transport (into the app), recording (If-None-Match, status)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.seen: list[tuple[str | None, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.seen.append((request.headers.get("if-none-match"), response.status_code))
        return response


def test_the_sdk_wait_gets_304s_from_the_api_until_the_job_is_done(sqlite_api: Api) -> None:
    api = sqlite_api
    a, b = _pair(api)
    created = api.compare(a, b)
    transport = _Recording(api.client._transport)  # the app, in process
    sdk = DiffallClient(str(api.client.base_url), api.key(), transport=transport)

    def finish_later() -> None:  # the API asks for 1 s between polls (Retry-After)
        time.sleep(2.5)
        claim = _claim(api, created["id"])
        time.sleep(2.5)
        _succeed(api, claim)

    worker = threading.Thread(target=finish_later)
    worker.start()
    try:
        done = sdk.wait(created, timeout_s=30, poll_s=0.05, max_poll_s=0.1)
    finally:
        worker.join()
        sdk.close()
    assert done["state"] == "succeeded" and done["result"] == RESULT
    statuses = [status for _, status in transport.seen]
    assert statuses[0] == 200 and statuses[-1] == 200 and statuses.count(304) >= 2
    assert set(statuses) <= {200, 304}
    assert transport.seen[0][0] is None and all(sent for sent, _ in transport.seen[1:])


def test_a_poll_is_one_transaction_of_two_statements(api: Api) -> None:
    """An unchanged comparison's poll reads the key and the comparison's version, in one
    transaction on PostgreSQL (no COMMIT and BEGIN between them); SQLite ends the key's read
    transaction first, as it holds a lock while one is open."""
    from sqlalchemy import event

    a, b = _pair(api)
    created = api.compare(a, b)
    path = f"/v1/comparisons/{created['id']}"
    etag = _etag(_get(api, path))
    _get(api, path, etag)  # warm: last_used_at refreshed, statements cached
    engine = api.app.state.engine
    seen: list[str] = []
    listeners = {
        "before_cursor_execute": lambda *args: seen.append("statement"),
        "begin": lambda *args: seen.append("begin"),
        "commit": lambda *args: seen.append("commit"),
        "rollback": lambda *args: seen.append("rollback"),
    }
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        _not_modified(_get(api, path, etag), etag)
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)
    if engine.dialect.name == "postgresql":
        assert seen == ["begin", "statement", "statement", "rollback"]
    else:
        # the engine's own BEGIN statement comes before each "begin" event (core/db/session.py)
        assert seen == [
            *("statement", "begin", "statement", "commit"),
            *("statement", "begin", "statement", "rollback"),
        ]

"""``/v1/webhooks``: endpoints, secrets, ping, the delivery log, retry and recover, over HTTP.

The app runs on SQLite and PostgreSQL with a real Redis producer and loopback allow-listed
(``DIFFALL_WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8``), as tests and on-premise installs set it.
A ping is followed to a real receiver: the deliver task found in Redis is run in-process.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from api.main import create_app
from core.config import Settings, StorageSettings
from core.db.models import WebhookDelivery, WebhookDeliveryState
from core.services import runs
from core.services.tasknames import WEBHOOK_DELIVER
from core.services.webhooks.delivery import deliver
from core.services.webhooks.policy import DeliveryPolicy
from tests.support.api import Api, TestClient, assert_problem
from tests.support.brokers import REDIS_HOST, REDIS_PORT
from tests.support.brokers import queued_messages as _queued
from tests.support.databases import migrate
from tests.support.images import noise_png
from tests.support.receivers import Receiver, verify


@pytest.fixture
def hooks_api(database_url: str, tmp_path: Path, redis_db: redis.Redis) -> Iterator[Api]:
    """The app with loopback webhooks allowed (SQLite and PostgreSQL)."""
    migrate(database_url)
    number = redis_db.connection_pool.connection_kwargs["db"]
    settings = Settings(
        env="test",
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}",
        storage=StorageSettings(backend="local"),
        webhook_allowed_networks="127.0.0.0/8",
        webhooks={"retry_schedule_s": (0, 0.05), "jitter": 0, "timeout_s": 2, "lease_s": 5},
    )
    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    try:
        yield Api(app=app, client=client, settings=settings, broker=redis_db)
    finally:
        client.__exit__(None, None, None)


HOOK = "http://127.0.0.1:9/hook"


def _register(api: Api, url: str = HOOK, tenant: str = "acme", **body: Any) -> dict[str, Any]:
    response = api.client.post("/v1/webhooks", json={"url": url, **body}, headers=api.auth(tenant))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert response.headers["location"] == created["links"]["self"]
    return created


def _deliver_messages(api: Api, delivery_id: str) -> list[list[str]]:
    """The args of the deliver tasks queued in Redis for ``delivery_id``."""
    return [
        m["args"]
        for m in _queued(api.broker)
        if m["task"] == WEBHOOK_DELIVER and m["args"] and m["args"][0] == delivery_id
    ]


def _set_failed(api: Api, *ids: str) -> None:
    with api.sessions.begin() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([uuid.UUID(i) for i in ids]))
            .values(
                state=WebhookDeliveryState.FAILED,
                attempt_count=2,
                due_at=None,
                claim_id=None,
                finished_at=datetime.now(UTC),
            )
        )


def test_register_get_list_update_delete(hooks_api: Api) -> None:
    api = hooks_api
    created = _register(api, description="ci", events=["comparison.failed", "batch.completed"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["events"] == ["comparison.failed", "batch.completed"]
    assert created["enabled"] and created["disabled_reason"] is None
    url = f"/v1/webhooks/{created['id']}"
    got = api.client.get(url, headers=api.auth())
    assert got.status_code == 200 and "secret" not in got.json()  # shown once
    assert got.json()["links"]["deliveries"].endswith(f"{url}/deliveries")
    for i in range(2):
        _register(api, url=f"http://127.0.0.1:9/{i}")
    first = api.client.get("/v1/webhooks", params={"limit": 2}, headers=api.auth()).json()
    second = api.client.get(
        "/v1/webhooks", params={"limit": 2, "cursor": first["next_cursor"]}, headers=api.auth()
    ).json()
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    assert second["next_cursor"] is None
    assert all("secret" not in item for item in first["items"] + second["items"])
    patched = api.client.patch(
        url,
        json={"description": None, "events": None, "url": "http://127.0.0.1:9/new"},
        headers=api.auth(),
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["description"] is None and body["url"] == "http://127.0.0.1:9/new"
    assert len(body["events"]) == 4  # null: every event type
    disabled = api.client.patch(url, json={"enabled": False}, headers=api.auth()).json()
    assert not disabled["enabled"] and disabled["disabled_reason"] == "manual"
    assert_problem(
        api.client.patch(url, json={"enabled": None}, headers=api.auth()), 422, "invalid_request"
    )
    # Another tenant sees none of it.
    assert_problem(api.client.get(url, headers=api.auth("globex")), 404, "not_found")
    assert api.client.get("/v1/webhooks", headers=api.auth("globex")).json()["items"] == []
    assert api.client.delete(url, headers=api.auth()).status_code == 204
    assert_problem(api.client.get(url, headers=api.auth()), 404, "not_found")
    assert_problem(api.client.delete(url, headers=api.auth()), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "http://169.254.169.254/latest/meta-data"}, "webhook_url_forbidden"),
        ({"url": "http://10.1.2.3/hook"}, "webhook_url_forbidden"),
        ({"url": "http://[::ffff:169.254.169.254]/"}, "webhook_url_forbidden"),
        ({"url": "gopher://127.0.0.1/"}, "webhook_url_forbidden"),
        ({"url": HOOK, "events": ["comparison.deleted"]}, "invalid_request"),
        ({"url": HOOK, "events": []}, "invalid_request"),
        ({"url": HOOK, "secret": "mine"}, "validation_error"),
        ({}, "validation_error"),
    ],
)
def test_bad_registrations_are_refused(hooks_api: Api, body: dict[str, Any], code: str) -> None:
    response = hooks_api.client.post("/v1/webhooks", json=body, headers=hooks_api.auth())
    assert_problem(response, 422, code)


def test_loopback_is_refused_without_the_allow_list(sqlite_api: Api) -> None:
    response = sqlite_api.client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:8080/hook"}, headers=sqlite_api.auth()
    )
    body = assert_problem(response, 422, "webhook_url_forbidden")
    assert body["reason"] == "address"


def test_rotate_secret_and_default_secret(hooks_api: Api) -> None:
    api = hooks_api
    created = _register(api)
    rotated = api.client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=api.auth())
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    expires = datetime.fromisoformat(body["previous_secret_expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    first = api.client.get("/v1/webhooks/default-secret", headers=api.auth()).json()
    again = api.client.get("/v1/webhooks/default-secret", headers=api.auth()).json()
    assert first["secret"] == again["secret"] and first["secret"].startswith("whsec_")
    theirs = api.client.get("/v1/webhooks/default-secret", headers=api.auth("globex")).json()
    assert theirs["secret"] != first["secret"]
    new = api.client.post("/v1/webhooks/default-secret/rotate", headers=api.auth()).json()
    assert new["secret"] != first["secret"] and new["previous_secret_expires_at"] is not None


def test_ping_is_dispatched_and_arrives_signed(hooks_api: Api, receiver: Receiver) -> None:
    api = hooks_api
    created = _register(api, url=receiver.url("/ping"))
    response = api.client.post(f"/v1/webhooks/{created['id']}/ping", headers=api.auth())
    assert response.status_code == 202, response.text
    ping = response.json()
    assert (
        ping["event_type"] == "ping"
        and ping["webhook_id"] == f"msg_{uuid.UUID(ping['event_id']).hex}"
    )
    assert ping["state"] == "sending"  # claimed and handed to the queue at once
    ((delivery_id, claim_id),) = _deliver_messages(api, ping["id"])
    # A worker runs the task: the receiver gets the ping, signed with the endpoint's secret.
    result = deliver(
        api.sessions,
        delivery_id=uuid.UUID(delivery_id),
        claim_id=uuid.UUID(claim_id),
        policy=DeliveryPolicy.from_settings(api.settings),
    )
    assert result is not None and result.state is WebhookDeliveryState.SUCCEEDED
    (request,) = receiver.received("/ping")
    payload = verify(created["secret"], request)
    assert payload["type"] == "ping" and request.headers["webhook-id"] == ping["webhook_id"]
    assert payload["data"]["links"]["endpoint"] == created["links"]["self"]
    log = api.client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=api.auth()).json()
    (item,) = log["items"]
    assert item["state"] == "succeeded" and item["attempt_count"] == 1
    (attempt,) = item["attempts"]
    assert attempt["number"] == 1 and attempt["status_code"] == 200
    assert attempt["error"] is None and attempt["response_body"] == "ok"
    assert attempt["duration_ms"] >= 0


def test_delivery_log_retry_and_recover(hooks_api: Api) -> None:
    api = hooks_api
    created = _register(api)
    base = f"/v1/webhooks/{created['id']}"
    ids = [api.client.post(f"{base}/ping", headers=api.auth()).json()["id"] for _ in range(3)]
    page = api.client.get(f"{base}/deliveries", params={"limit": 2}, headers=api.auth()).json()
    rest = api.client.get(
        f"{base}/deliveries", params={"cursor": page["next_cursor"]}, headers=api.auth()
    ).json()
    assert [d["id"] for d in page["items"] + rest["items"]] == ids[::-1]  # newest first
    sending = api.client.get(
        f"{base}/deliveries", params={"state": "sending"}, headers=api.auth()
    ).json()
    assert len(sending["items"]) == 3
    assert_problem(
        api.client.post(f"{base}/deliveries/{ids[0]}/retry", headers=api.auth()),
        409,
        "delivery_in_progress",
    )
    _set_failed(api, *ids)
    retried = api.client.post(f"{base}/deliveries/{ids[0]}/retry", headers=api.auth())
    assert retried.status_code == 202, retried.text
    assert retried.json()["state"] == "sending"
    assert len(_deliver_messages(api, ids[0])) == 2  # the ping's, and the retry's
    one = api.client.get(f"{base}/deliveries/{ids[0]}", headers=api.auth()).json()
    assert one["id"] == ids[0] and one["links"]["retry"].endswith(f"{ids[0]}/retry")
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    recovered = api.client.post(f"{base}/recover", params={"since": since}, headers=api.auth())
    assert recovered.status_code == 202, recovered.text
    assert sorted(recovered.json()["delivery_ids"]) == sorted(ids[1:])
    assert recovered.json()["recovered"] == 2
    assert all(len(_deliver_messages(api, i)) == 2 for i in ids[1:])
    assert_problem(api.client.post(f"{base}/recover", headers=api.auth()), 422, "validation_error")
    assert_problem(
        api.client.post(
            f"{base}/recover", params={"since": "2024-01-01T00:00:00"}, headers=api.auth()
        ),
        422,
        "validation_error",
    )
    assert_problem(
        api.client.get(f"{base}/deliveries/{uuid.uuid4()}", headers=api.auth()), 404, "not_found"
    )
    assert_problem(
        api.client.get(f"{base}/deliveries", headers=api.auth("globex")), 404, "not_found"
    )
    api.client.patch(base, json={"enabled": False}, headers=api.auth())
    assert_problem(
        api.client.post(f"{base}/recover", params={"since": since}, headers=api.auth()),
        409,
        "webhook_disabled",
    )
    assert_problem(
        api.client.post(f"{base}/deliveries/{ids[0]}/retry", headers=api.auth()),
        409,
        "webhook_disabled",
    )


def test_registration_honours_idempotency_keys(hooks_api: Api) -> None:
    api = hooks_api
    headers = api.auth(**{"Idempotency-Key": f"hook-{uuid.uuid4()}"})
    first = api.client.post("/v1/webhooks", json={"url": HOOK}, headers=headers)
    replay = api.client.post("/v1/webhooks", json={"url": HOOK}, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    listed = api.client.get("/v1/webhooks", headers=api.auth()).json()["items"]
    assert len(listed) == 1


def test_openapi_documents_the_webhook_routes(sqlite_api: Api) -> None:
    spec = sqlite_api.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, methods in {
        "/v1/webhooks": {"get", "post"},
        "/v1/webhooks/{webhook_id}": {"get", "patch", "delete"},
        "/v1/webhooks/{webhook_id}/rotate-secret": {"post"},
        "/v1/webhooks/{webhook_id}/ping": {"post"},
        "/v1/webhooks/{webhook_id}/deliveries": {"get"},
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {"post"},
        "/v1/webhooks/{webhook_id}/recover": {"post"},
        "/v1/webhooks/default-secret": {"get"},
        "/v1/webhook-deliveries": {"get"},
        "/v1/webhook-deliveries/{delivery_id}": {"get"},
        "/v1/webhook-deliveries/{delivery_id}/retry": {"post"},
        "/v1/webhook-deliveries/recover": {"post"},
    }.items():
        assert methods <= set(paths[path]), path
    post = paths["/v1/webhooks"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "secret" in spec["components"]["schemas"]["WebhookWithSecretOut"]["properties"]


# -- the tenant-wide delivery log (/v1/webhook-deliveries) -----------------------------------

ADHOC = "http://127.0.0.1:9/adhoc"
LOG = "/v1/webhook-deliveries"


def _finished_comparison(api: Api, tenant: str = "acme", *, seed: int = 0) -> str:
    """A comparison submitted with a ``webhook_url`` and run (what the worker does)."""
    a = api.upload(noise_png(seed=seed), tenant)["id"]
    b = api.upload(noise_png(seed=seed + 1), tenant)["id"]
    cid = str(api.compare(a, b, tenant, webhook_url=ADHOC)["id"])
    store = api.app.state.store
    runs.run_comparison(api.sessions, store, comparison_id=uuid.UUID(cid), max_crashes=3)
    return cid


def _log(api: Api, tenant: str = "acme", **params: Any) -> list[dict[str, Any]]:
    response = api.client.get(LOG, params={"limit": 100, **params}, headers=api.auth(tenant))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


def _row(api: Api, delivery_id: str) -> WebhookDelivery:
    with api.sessions() as session:
        return session.get_one(WebhookDelivery, uuid.UUID(delivery_id))


def test_the_log_shows_ad_hoc_deliveries_with_filters(hooks_api: Api) -> None:
    api = hooks_api
    endpoint = _register(api, events=["comparison.succeeded"])
    cid = _finished_comparison(api)
    items = _log(api)
    assert {item["endpoint_id"] for item in items} == {None, endpoint["id"]}
    (ad_hoc,) = (item for item in items if item["endpoint_id"] is None)
    assert ad_hoc["url"] == ADHOC and ad_hoc["subject_id"] == cid
    assert ad_hoc["event_type"] == "comparison.succeeded"
    assert ad_hoc["webhook_id"] == f"msg_{uuid.UUID(ad_hoc['event_id']).hex}"
    assert ad_hoc["state"] == "pending" and ad_hoc["attempt_count"] == 0
    assert ad_hoc["attempts"] == []
    own = f"{api.settings.api.public_base_url}{LOG}/{ad_hoc['id']}"
    assert ad_hoc["links"] == {"self": own, "retry": f"{own}/retry"}
    one = api.client.get(f"{LOG}/{ad_hoc['id']}", headers=api.auth())
    assert one.status_code == 200 and one.json() == ad_hoc
    # Filters.
    assert [i["id"] for i in _log(api, target="ad_hoc")] == [ad_hoc["id"]]
    assert [i["endpoint_id"] for i in _log(api, target="endpoint")] == [endpoint["id"]]
    assert len(_log(api, subject_id=cid)) == 2
    assert _log(api, subject_id=str(uuid.uuid4())) == []
    assert len(_log(api, event_type="comparison.succeeded", state="pending")) == 2
    assert _log(api, event_type="batch.completed") == []
    assert _log(api, state="failed") == []
    # The endpoint's own log does not hold the ad-hoc delivery.
    scoped_path = f"/v1/webhooks/{endpoint['id']}/deliveries"
    scoped = api.client.get(scoped_path, headers=api.auth())
    assert [i["endpoint_id"] for i in scoped.json()["items"]] == [endpoint["id"]]
    # It takes the same subject and event type filters.
    for params, count in (
        ({"subject_id": cid}, 1),
        ({"subject_id": str(uuid.uuid4())}, 0),
        ({"event_type": "comparison.succeeded"}, 1),
        ({"event_type": "batch.completed"}, 0),
    ):
        answer = api.client.get(scoped_path, params=params, headers=api.auth())
        assert answer.status_code == 200 and len(answer.json()["items"]) == count, params
    # Another tenant: an empty log, and 404 for this tenant's delivery.
    assert _log(api, "globex") == []
    for method, path in (("get", f"{LOG}/{ad_hoc['id']}"), ("post", f"{LOG}/{ad_hoc['id']}/retry")):
        response = api.client.request(method, path, headers=api.auth("globex"))
        assert_problem(response, 404, "not_found")
    assert_problem(api.client.get(f"{LOG}/{uuid.uuid4()}", headers=api.auth()), 404, "not_found")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "!!"}, "invalid_request"),
        ({"state": "lost"}, "validation_error"),
        ({"target": "webhook"}, "validation_error"),
        ({"event_type": "comparison.deleted"}, "validation_error"),
        ({"subject_id": "batch-1"}, "validation_error"),
        ({"limit": 0}, "validation_error"),
    ],
)
def test_bad_log_queries_are_problems(sqlite_api: Api, params: dict[str, Any], code: str) -> None:
    response = sqlite_api.client.get(LOG, params=params, headers=sqlite_api.auth())
    assert_problem(response, 422, code)


def test_the_log_pages_without_duplicates_or_gaps(hooks_api: Api) -> None:
    api = hooks_api
    endpoint = _register(api)
    for _ in range(3):
        api.client.post(f"/v1/webhooks/{endpoint['id']}/ping", headers=api.auth())
    for seed in (0, 10):
        _finished_comparison(api, seed=seed)  # each: to the endpoint, and ad hoc
    everything = [item["id"] for item in _log(api)]
    assert len(everything) == len(set(everything)) == 7
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.client.get(LOG, params=params, headers=api.auth()).json()
        assert 1 <= len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == everything
    created = [item["created_at"] for item in _log(api)]
    assert created == sorted(created, reverse=True)  # newest first


def test_retry_and_recover_ad_hoc_deliveries(hooks_api: Api) -> None:
    api = hooks_api
    first, second = _finished_comparison(api, seed=0), _finished_comparison(api, seed=10)
    (one,) = _log(api, subject_id=first)
    (two,) = _log(api, subject_id=second)
    # A failed ad-hoc delivery: one more attempt, sent at once, with its webhook-id.
    _set_failed(api, one["id"], two["id"])
    retried = api.client.post(f"{LOG}/{one['id']}/retry", headers=api.auth())
    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert body["state"] == "sending" and body["webhook_id"] == one["webhook_id"]
    assert body["endpoint_id"] is None and body["event_id"] == one["event_id"]
    row = _row(api, one["id"])
    assert row.max_attempts == 3 and row.attempt_count == 2  # _set_failed: 2 attempts
    assert len(_deliver_messages(api, one["id"])) == 1
    assert_problem(
        api.client.post(f"{LOG}/{one['id']}/retry", headers=api.auth()),
        409,
        "delivery_in_progress",
    )
    # Recover: failed ad-hoc deliveries since the time, optionally about one subject.
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    endpoint = _register(api)
    ping = api.client.post(f"/v1/webhooks/{endpoint['id']}/ping", headers=api.auth()).json()
    _set_failed(api, one["id"], ping["id"])
    recovered = api.client.post(
        f"{LOG}/recover", params={"since": since, "subject_id": first}, headers=api.auth()
    )
    assert recovered.status_code == 202, recovered.text
    assert recovered.json() == {"recovered": 1, "delivery_ids": [one["id"]]}
    everything = api.client.post(f"{LOG}/recover", params={"since": since}, headers=api.auth())
    assert everything.json() == {"recovered": 1, "delivery_ids": [two["id"]]}
    assert len(_deliver_messages(api, two["id"])) == 1
    assert _row(api, ping["id"]).state is WebhookDeliveryState.FAILED  # the endpoint's own
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    _set_failed(api, one["id"], two["id"])
    nothing = api.client.post(f"{LOG}/recover", params={"since": later}, headers=api.auth())
    assert nothing.json() == {"recovered": 0, "delivery_ids": []}
    theirs = api.client.post(f"{LOG}/recover", params={"since": since}, headers=api.auth("globex"))
    assert theirs.json() == {"recovered": 0, "delivery_ids": []}
    for params in ({}, {"since": "2024-01-01T00:00:00"}):
        response = api.client.post(f"{LOG}/recover", params=params, headers=api.auth())
        assert_problem(response, 422, "validation_error")
    # An endpoint's delivery is retried here too, unless the endpoint is disabled.
    retried = api.client.post(f"{LOG}/{ping['id']}/retry", headers=api.auth())
    assert retried.status_code == 202 and retried.json()["endpoint_id"] == endpoint["id"]
    _set_failed(api, ping["id"])
    api.client.patch(f"/v1/webhooks/{endpoint['id']}", json={"enabled": False}, headers=api.auth())
    assert_problem(
        api.client.post(f"{LOG}/{ping['id']}/retry", headers=api.auth()), 409, "webhook_disabled"
    )

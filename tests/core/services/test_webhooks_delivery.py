"""Webhook delivery over real HTTP: a loopback receiver verifies every signature with the
``standardwebhooks`` library. Retries, 410, redirects, timeouts, Retry-After, auto-disable,
rotation, recovery, lost workers and lost messages.

The dispatcher and the deliver task run in the test process (``pump``: dispatch, then deliver
what was claimed, on one or more threads standing for worker processes); the schedule is
compressed through ``DeliveryPolicy``, exactly as ``webhooks.retry_schedule_s`` does.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import WebhookVerificationError

from core.db.models import (
    Comparison,
    Tenant,
    WebhookDeliveryState,
    WebhookDisabledReason,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.services import runs, webhooks
from core.services.webhooks.delivery import deliver
from core.services.webhooks.dispatch import dispatch_due
from core.services.webhooks.policy import DeliveryPolicy
from core.storage import LocalObjectStore
from diffall.webhooks import verify_webhook
from tests.support.comparisons import add_comparison, add_running_batch, finish_one
from tests.support.images import corrupt_png
from tests.support.receivers import (
    InlineQueue,
    Receiver,
    Reply,
    pump,
    signatures,
    verify,
)
from tests.support.webhooks import (
    FAST,
    LOOPBACK,
    add_endpoint,
    add_ping,
    attempts_of,
    delivery_is_final,
    delivery_of,
    delivery_state,
)

SessionFactory = sessionmaker[Session]


def _default_secret(sessions: SessionFactory, tenant: Tenant) -> str:
    with sessions() as session:
        return webhooks.get_default_secret(session, tenant_id=tenant.id).secret


def test_every_event_arrives_correctly_signed(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, receiver: Receiver
) -> None:
    main = add_endpoint(
        sessions,
        tenant,
        receiver.url("/main"),
        events=["comparison.succeeded", "comparison.failed", "batch.completed"],
    )
    watcher = add_endpoint(sessions, tenant, receiver.url("/watch"), events=["endpoint.disabled"])
    gone = add_endpoint(sessions, tenant, receiver.url("/gone"), events=["comparison.failed"])
    receiver.script("/gone", Reply(410))
    ok = add_comparison(sessions, local_store, tenant, webhook_url=receiver.url("/adhoc"))
    runs.run_comparison(sessions, local_store, comparison_id=ok, max_crashes=3)
    bad = add_comparison(sessions, local_store, tenant, b=corrupt_png(64, 48, seed=1))
    runs.run_comparison(sessions, local_store, comparison_id=bad, max_crashes=3)
    batch_id, ids = add_running_batch(sessions, local_store, tenant, 2)
    for cid in ids:
        finish_one(sessions, batch_id, cid)
    add_ping(sessions, tenant, main)
    # main: 2 comparison events + 2 batch comparisons + batch.completed + ping.
    pump(
        sessions,
        FAST,
        lambda: len(receiver.received("/main")) >= 6 and bool(receiver.received("/watch")),
    )
    seen: dict[str, dict[str, Any]] = {}
    with sessions() as session:
        events = {webhooks.webhook_id(e.id): e for e in session.scalars(sa.select(WebhookEvent))}
    for request in receiver.received("/main"):
        payload = verify(main.secret, request)  # raises unless correctly signed
        assert json.loads(request.body) == payload
        # The SDK's verifier (diffall.webhooks) agrees with the reference library.
        assert verify_webhook(request.headers, request.body, main.secret) == payload
        event = events[request.headers["webhook-id"]]
        assert payload["type"] == event.type.value
        assert payload["timestamp"] == event.created_at.isoformat().replace("+00:00", "Z")
        assert request.headers["content-type"] == "application/json"
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 10
        assert len(request.body) < webhooks.MAX_PAYLOAD_BYTES
        seen.setdefault(payload["type"], payload)
    assert set(seen) == {"comparison.succeeded", "comparison.failed", "batch.completed", "ping"}
    with sessions() as session:
        row = session.get_one(Comparison, ok)
    succeeded = next(
        verify(main.secret, r)["data"]
        for r in receiver.received("/main")
        if json.loads(r.body)["data"].get("id") == str(ok)
    )
    assert succeeded["result"]["verdict"] == row.result["verdict"]  # type: ignore[index]
    assert succeeded["result"]["ssim"] == row.result["ssim"]  # type: ignore[index]
    assert succeeded["links"]["self"].startswith("https://diffall.example.com/v1/comparisons/")
    assert seen["comparison.failed"]["data"]["error"]["code"] == "corrupt_image"
    assert seen["batch.completed"]["data"]["id"] == str(batch_id)
    # The comparison's own webhook_url is signed with the tenant's default secret.
    (adhoc,) = receiver.received("/adhoc")
    assert verify(_default_secret(sessions, tenant), adhoc)["data"]["id"] == str(ok)
    with pytest.raises(WebhookVerificationError):
        verify(main.secret, adhoc)
    # 410 disabled "gone"; the watcher heard about it, signed with its own secret.
    (disabled,) = receiver.received("/watch")
    payload = verify(watcher.secret, disabled)
    assert payload["type"] == "endpoint.disabled"
    assert payload["data"]["id"] == str(gone.id) and payload["data"]["reason"] == "gone"


def test_500_three_times_then_200_arrives_on_the_fourth_attempt_with_the_same_id(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/flaky", Reply(500, body=b"boom"), Reply(500), Reply(500), Reply(200))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/flaky"))
    # The first retry waits 1.1 s, so its timestamp (whole seconds) is a fresh one.
    policy = DeliveryPolicy(
        schedule_s=(0.0, 1.1, 0.05, 0.05, 0.05),
        jitter=0.0,
        timeout_s=2.0,
        lease_s=5.0,
        allowed_networks=LOOPBACK,
    )
    ident = add_ping(sessions, tenant, endpoint)
    pump(sessions, policy, lambda: delivery_is_final(sessions, ident))
    requests = receiver.received("/flaky")
    assert len(requests) == 4
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1  # the same payload every time
    stamps = [int(r.headers["webhook-timestamp"]) for r in requests]
    assert stamps == sorted(stamps) and stamps[1] > stamps[0]
    assert requests[1].at - requests[0].at >= 1.1
    for request in requests:
        verify(endpoint.secret, request)
    delivery = delivery_of(sessions, ident)
    assert delivery.state is WebhookDeliveryState.SUCCEEDED and delivery.attempt_count == 4
    attempts = attempts_of(sessions, ident)
    assert [(a.number, a.status_code, a.error_code) for a in attempts] == [
        (1, 500, "http_500"),
        (2, 500, "http_500"),
        (3, 500, "http_500"),
        (4, 200, None),
    ]
    assert attempts[0].response_body == "boom"
    assert all(a.duration_ms is not None and a.duration_ms >= 0 for a in attempts)


def test_the_schedule_runs_out_and_the_delivery_fails(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/down", Reply(502))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/down"))
    ident = add_ping(sessions, tenant, endpoint)
    pump(sessions, FAST, lambda: delivery_is_final(sessions, ident))
    assert len(receiver.received("/down")) == len(FAST.schedule_s)
    delivery = delivery_of(sessions, ident)
    assert delivery.state is WebhookDeliveryState.FAILED and delivery.last_status_code == 502


def test_410_disables_the_endpoint(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/gone", Reply(410))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/gone"))
    first, second = add_ping(sessions, tenant, endpoint), add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=FAST, only_ids=[first])
    queue.drain(sessions, FAST)
    assert len(receiver.received("/gone")) == 1  # no retry after 410
    assert delivery_state(sessions, first) is WebhookDeliveryState.FAILED
    with sessions() as session:
        row = session.get_one(WebhookEndpoint, endpoint.id)
        (event,) = session.scalars(
            sa.select(WebhookEvent).where(WebhookEvent.type == WebhookEventType.ENDPOINT_DISABLED)
        )
    assert not row.enabled and row.disabled_reason is WebhookDisabledReason.GONE
    assert event.subject_id == endpoint.id
    # Its other pending delivery failed with it, and nothing new is delivered to it.
    assert delivery_of(sessions, second).last_error == "endpoint_disabled"
    pump(sessions, FAST, lambda: True)
    assert len(receiver.received("/gone")) == 1


def test_a_redirect_is_not_followed(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/moved", Reply(302, {"location": receiver.url("/target")}))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/moved"))
    ident = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=FAST)
    (result,) = queue.drain(sessions, FAST)
    assert result is not None and result.status_code == 302 and result.error_code == "http_302"
    assert result.state is WebhookDeliveryState.PENDING  # a failure: retried later
    assert receiver.received("/target") == []
    (attempt,) = attempts_of(sessions, ident)
    assert attempt.error_message is not None and "not followed" in attempt.error_message


def test_a_hanging_receiver_times_out_without_blocking_other_deliveries(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/hang", Reply(200, delay_s=30.0))
    hanging = add_endpoint(sessions, tenant, receiver.url("/hang"))
    healthy = add_endpoint(sessions, tenant, receiver.url("/fast"))
    policy = DeliveryPolicy(
        schedule_s=(0.0, 60.0), jitter=0.0, timeout_s=1.0, lease_s=5.0, allowed_networks=LOOPBACK
    )
    slow_id = add_ping(sessions, tenant, hanging)
    fast_ids = [add_ping(sessions, tenant, healthy) for _ in range(3)]
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=policy)
    started = time.monotonic()
    results = queue.drain(sessions, policy, workers=2)  # two worker processes
    elapsed = time.monotonic() - started
    fast = receiver.received("/fast")
    assert len(fast) == 3 and all(r.at - started < 0.9 for r in fast)  # before the timeout
    assert elapsed < 5.0
    by_id = {r.delivery_id: r for r in results if r is not None}
    assert by_id[slow_id].error_code == "timeout" and by_id[slow_id].status_code is None
    assert by_id[slow_id].state is WebhookDeliveryState.PENDING
    assert all(by_id[i].state is WebhookDeliveryState.SUCCEEDED for i in fast_ids)
    (attempt,) = attempts_of(sessions, slow_id)
    assert attempt.duration_ms is not None and 900 <= attempt.duration_ms < 3000


def test_429_and_503_honour_retry_after(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/busy", Reply(429, {"retry-after": "30"}))
    receiver.script("/maint", Reply(503, {"retry-after": "45"}))
    busy = add_endpoint(sessions, tenant, receiver.url("/busy"))
    maint = add_endpoint(sessions, tenant, receiver.url("/maint"))
    ids = [add_ping(sessions, tenant, busy), add_ping(sessions, tenant, maint)]
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=FAST)
    before = utcnow()
    queue.drain(sessions, FAST)
    for ident, wait in zip(ids, (30, 45), strict=True):
        row = delivery_of(sessions, ident)
        assert row.state is WebhookDeliveryState.PENDING and row.due_at is not None
        assert row.due_at >= before + timedelta(seconds=wait - 1)
        assert row.due_at <= utcnow() + timedelta(seconds=wait + 1)


def test_an_endpoint_failing_for_days_is_disabled(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/broken", Reply(500))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/broken"))
    watcher = add_endpoint(sessions, tenant, receiver.url("/watch"), events=["endpoint.disabled"])
    first = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=FAST, only_ids=[first])
    queue.drain(sessions, FAST)
    with sessions() as session:
        row = session.get_one(WebhookEndpoint, endpoint.id)
        assert row.enabled and row.failing_since is not None  # the streak started
        # ... and has lasted 5 days by the next failure.
        row.failing_since = utcnow() - timedelta(days=5, seconds=1)
        session.commit()
    second = add_ping(sessions, tenant, endpoint)
    with sessions() as session:
        dispatch_due(session, queue, policy=FAST, only_ids=[second])
    queue.drain(sessions, FAST)
    with sessions() as session:
        row = session.get_one(WebhookEndpoint, endpoint.id)
    assert not row.enabled and row.disabled_reason is WebhookDisabledReason.FAILING
    assert delivery_state(sessions, second) is WebhookDeliveryState.FAILED
    assert delivery_state(sessions, first) is WebhookDeliveryState.FAILED  # pending: failed with it
    pump(sessions, FAST, lambda: bool(receiver.received("/watch")))
    payload = verify(watcher.secret, receiver.received("/watch")[0])
    assert payload["type"] == "endpoint.disabled" and payload["data"]["reason"] == "failing"


def test_a_success_ends_the_failure_streak(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/wobbly", Reply(500), Reply(200))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/wobbly"))
    ident = add_ping(sessions, tenant, endpoint)
    pump(sessions, FAST, lambda: delivery_is_final(sessions, ident))
    with sessions() as session:
        row = session.get_one(WebhookEndpoint, endpoint.id)
    assert row.enabled and row.failing_since is None


def test_both_secrets_verify_during_a_rotation(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = add_endpoint(sessions, tenant, receiver.url("/rot"))
    old = endpoint.secret
    with sessions() as session:
        new = webhooks.rotate_endpoint_secret(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id
        ).secret
    ident = add_ping(sessions, tenant, endpoint)
    pump(sessions, FAST, lambda: delivery_is_final(sessions, ident))
    (request,) = receiver.received("/rot")
    assert len(signatures(request)) == 2
    assert verify(old, request) == verify(new, request)  # receivers holding either verify
    # Once the overlap is over only the new secret signs.
    with sessions() as session:
        row = session.get_one(WebhookEndpoint, endpoint.id)
        row.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    ident = add_ping(sessions, tenant, endpoint)
    pump(sessions, FAST, lambda: delivery_is_final(sessions, ident))
    later = receiver.received("/rot")[1]
    assert len(signatures(later)) == 1
    verify(new, later)
    with pytest.raises(WebhookVerificationError):
        verify(old, later)


def test_recover_resends_failed_deliveries_once_with_their_webhook_id(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/outage", Reply(500))
    endpoint = add_endpoint(sessions, tenant, receiver.url("/outage"))
    since = utcnow()
    ids = [add_ping(sessions, tenant, endpoint) for _ in range(2)]
    pump(sessions, FAST, lambda: all(delivery_is_final(sessions, i) for i in ids))
    failed_ids = {r.headers["webhook-id"] for r in receiver.received("/outage")}
    assert len(failed_ids) == 2
    receiver.script("/outage", Reply(500), Reply(204))  # recovered, after one more failure
    with sessions() as session:
        recovered = webhooks.recover_deliveries(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, since=since
        )
    assert sorted(recovered) == sorted(ids)
    pump(sessions, FAST, lambda: all(delivery_is_final(sessions, i) for i in ids))
    replays = receiver.received("/outage")[-2:]
    assert {r.headers["webhook-id"] for r in replays} == failed_ids
    states = sorted(delivery_state(sessions, i).value for i in ids)
    assert states == ["failed", "succeeded"]  # exactly one more attempt each
    assert len(receiver.received("/outage")) == 2 * len(FAST.schedule_s) + 2


def test_a_worker_lost_mid_delivery_loses_nothing(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    from core.services.webhooks.delivery import _begin_attempt

    endpoint = add_endpoint(sessions, tenant, receiver.url("/lost"))
    ident = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=FAST)
    ((_, claim),) = queue.sent
    # The task counted its attempt, then its process died before posting or recording.
    assert _begin_attempt(sessions, ident, claim, FAST) is not None
    # The broker gives the message back (acks late): the same claim runs again.
    result = deliver(sessions, delivery_id=ident, claim_id=claim, policy=FAST)
    assert result is not None and result.state is WebhookDeliveryState.SUCCEEDED
    assert [(a.number, a.error_code) for a in attempts_of(sessions, ident)] == [
        (1, "worker_lost"),
        (2, None),
    ]
    assert len(receiver.received("/lost")) == 1
    # A duplicate of the message finds nothing to do.
    assert deliver(sessions, delivery_id=ident, claim_id=claim, policy=FAST) is None
    assert len(receiver.received("/lost")) == 1


def test_a_lost_message_is_sent_again_after_the_lease(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    # The broker forgot the task (e.g. Redis restarted without persistence): the schedule is in
    # the database, so the dispatcher picks the claimed row again once its lease expired.
    endpoint = add_endpoint(sessions, tenant, receiver.url("/forgotten"))
    ident = add_ping(sessions, tenant, endpoint)
    policy = DeliveryPolicy(
        schedule_s=(0.0, 0.05), jitter=0.0, timeout_s=0.5, lease_s=1.0, allowed_networks=LOOPBACK
    )
    with sessions() as session:
        assert dispatch_due(session, InlineQueue(), policy=policy).sent == 1  # message dropped
    assert delivery_state(sessions, ident) is WebhookDeliveryState.SENDING
    started = time.monotonic()
    pump(sessions, policy, lambda: delivery_is_final(sessions, ident))
    assert time.monotonic() - started >= 0.5
    assert delivery_state(sessions, ident) is WebhookDeliveryState.SUCCEEDED
    assert len(receiver.received("/forgotten")) == 1
    assert [a.error_code for a in attempts_of(sessions, ident)] == [None]  # never started: no loss


def test_forbidden_destinations_are_refused_at_send_time(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    # Registered while loopback was allowed; the allow-list is gone when sending: refused
    # before any connection is made.
    endpoint = add_endpoint(sessions, tenant, receiver.url("/private"))
    ident = add_ping(sessions, tenant, endpoint)
    strict = DeliveryPolicy(schedule_s=(0.0,), jitter=0.0, timeout_s=1.0, lease_s=5.0)
    pump(sessions, strict, lambda: delivery_is_final(sessions, ident))
    assert receiver.received("/private") == []
    (attempt,) = attempts_of(sessions, ident)
    assert attempt.error_code == "forbidden_destination"


def test_a_disabled_endpoint_gets_pings_only(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = add_endpoint(sessions, tenant, receiver.url("/off"), enabled=False)
    ident = add_ping(sessions, tenant, endpoint)
    pump(sessions, FAST, lambda: delivery_is_final(sessions, ident))
    assert delivery_state(sessions, ident) is WebhookDeliveryState.SUCCEEDED
    verify(endpoint.secret, receiver.received("/off")[0])

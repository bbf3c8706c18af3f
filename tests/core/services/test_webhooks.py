"""Webhooks, service level: endpoints and secrets, the outbox, the dispatcher, the schedule.

Real databases (SQLite and PostgreSQL through ``sessions``); the HTTP side is in
``test_webhooks_delivery.py``.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from core.db.models import (
    Batch,
    Comparison,
    ComparisonState,
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookDisabledReason,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.services import comparisons, lifecycle, sweeper, webhooks
from core.services.errors import Conflict, InvalidRequest, NotFound
from core.services.webhooks.delivery import sign
from core.services.webhooks.dispatch import dispatch_due
from core.services.webhooks.guard import ForbiddenDestination
from core.services.webhooks.policy import DeliveryPolicy, parse_retry_after, retry_delay_s
from core.storage import LocalObjectStore
from tests.support.comparisons import add_comparison, add_running_batch, finish_one
from tests.support.images import corrupt_png
from tests.support.receivers import InlineQueue
from tests.support.tenants import make_tenant
from tests.support.webhooks import HOOK, LOOPBACK, POLICY, add_endpoint, add_ping

SessionFactory = sessionmaker[Session]


def _events(sessions: SessionFactory, **where: Any) -> list[WebhookEvent]:
    with sessions() as session:
        query = sa.select(WebhookEvent).order_by(WebhookEvent.created_at)
        for name, value in where.items():
            query = query.where(getattr(WebhookEvent, name) == value)
        return list(session.scalars(query))


def _deliveries(sessions: SessionFactory, **where: Any) -> list[WebhookDelivery]:
    with sessions() as session:
        query = sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        for name, value in where.items():
            query = query.where(getattr(WebhookDelivery, name) == value)
        return list(session.scalars(query))


# -- endpoints and secrets --------------------------------------------------------------------


def test_create_endpoint_makes_a_standard_secret(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant, description="ci")
    assert endpoint.secret.startswith("whsec_")
    assert len(base64.b64decode(endpoint.secret.removeprefix("whsec_"), validate=True)) == 32
    assert endpoint.events == list(webhooks.SUBSCRIBABLE_EVENTS)
    assert endpoint.enabled and endpoint.description == "ci"
    # Every endpoint gets its own secret, usable by the standardwebhooks library.
    other = add_endpoint(sessions, tenant)
    assert other.secret != endpoint.secret
    Webhook(other.secret)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": []}, "at least one"),
        ({"events": ["comparison.deleted"]}, "unknown event"),
        ({"events": ["ping"]}, "unknown event"),
        ({"events": "comparison.failed"}, "must be a list"),
        ({"description": "x" * 501}, "at most 500"),
    ],
)
def test_create_endpoint_refuses_bad_fields(
    sessions: SessionFactory, tenant: Tenant, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        add_endpoint(sessions, tenant, **kwargs)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/",
        "http://2130706433/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "ftp://example.com/",
    ],
)
def test_forbidden_urls_are_refused_at_registration(
    sessions: SessionFactory, tenant: Tenant, url: str
) -> None:
    # The SSRF rules of core.netguard apply when an endpoint is registered (and
    # when its URL changes); without an allow-list loopback is refused like the rest.
    with sessions() as session, pytest.raises(ForbiddenDestination) as caught:
        webhooks.create_endpoint(session, tenant_id=tenant.id, url=url)
    assert caught.value.code == "webhook_url_forbidden"
    endpoint = add_endpoint(sessions, tenant)
    with sessions() as session, pytest.raises(ForbiddenDestination):
        webhooks.update_endpoint(session, tenant_id=tenant.id, endpoint_id=endpoint.id, url=url)


def test_endpoints_are_listed_updated_deleted_per_tenant(
    sessions: SessionFactory, tenant: Tenant, other_tenant: Tenant
) -> None:
    made = [add_endpoint(sessions, tenant, url=f"http://127.0.0.1:9/{i}") for i in range(3)]
    theirs = add_endpoint(sessions, other_tenant)
    with sessions() as session:
        first = webhooks.list_endpoints(session, tenant_id=tenant.id, limit=2)
        assert first.next_cursor is not None
        second = webhooks.list_endpoints(
            session, tenant_id=tenant.id, limit=2, cursor=first.next_cursor
        )
        assert second.next_cursor is None
        listed = [e.id for e in first.items + second.items]
        assert sorted(listed) == sorted(e.id for e in made)
        with pytest.raises(NotFound):
            webhooks.get_endpoint(session, tenant_id=tenant.id, endpoint_id=theirs.id)
        with pytest.raises(InvalidRequest, match="cursor"):
            webhooks.list_endpoints(session, tenant_id=tenant.id, cursor="!!")
        updated = webhooks.update_endpoint(
            session,
            tenant_id=tenant.id,
            endpoint_id=made[0].id,
            events=["batch.completed"],
            description=None,
            allowed_networks=LOOPBACK,
            url="http://127.0.0.1:9/moved",
        )
        assert updated.events == ["batch.completed"] and updated.url.endswith("/moved")
        disabled = webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=made[0].id, enabled=False
        )
        assert not disabled.enabled and disabled.disabled_reason is WebhookDisabledReason.MANUAL
        enabled = webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=made[0].id, enabled=True
        )
        assert enabled.enabled and enabled.disabled_reason is None
        webhooks.delete_endpoint(session, tenant_id=tenant.id, endpoint_id=made[1].id)
        with pytest.raises(NotFound):
            webhooks.get_endpoint(session, tenant_id=tenant.id, endpoint_id=made[1].id)
        with pytest.raises(NotFound):
            webhooks.delete_endpoint(session, tenant_id=tenant.id, endpoint_id=theirs.id)


def test_rotation_keeps_the_previous_secret_for_24_hours(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant)
    now = utcnow()
    with sessions() as session:
        rotated = webhooks.rotate_endpoint_secret(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, now=now
        )
    assert rotated.secret != endpoint.secret and rotated.previous_secret == endpoint.secret
    assert rotated.previous_secret_expires_at == now + timedelta(hours=24)
    during = webhooks.signing_secrets(
        rotated.secret,
        rotated.previous_secret,
        rotated.previous_secret_expires_at,
        now=now + timedelta(hours=23),
    )
    after = webhooks.signing_secrets(
        rotated.secret,
        rotated.previous_secret,
        rotated.previous_secret_expires_at,
        now=now + timedelta(hours=24, seconds=1),
    )
    assert during == [rotated.secret, endpoint.secret]
    assert after == [rotated.secret]


def test_default_secret_is_created_once_and_rotates(
    sessions: SessionFactory, tenant: Tenant, other_tenant: Tenant
) -> None:
    with sessions() as session:
        first = webhooks.get_default_secret(session, tenant_id=tenant.id).secret
    with sessions() as session:
        assert webhooks.get_default_secret(session, tenant_id=tenant.id).secret == first
        assert webhooks.get_default_secret(session, tenant_id=other_tenant.id).secret != first
    with sessions() as session:
        rotated = webhooks.rotate_default_secret(session, tenant_id=tenant.id)
    assert rotated.secret != first and rotated.previous_secret == first
    assert rotated.previous_secret_expires_at is not None


def test_signature_header_carries_one_v1_signature_per_secret() -> None:
    # Independent check: HMAC-SHA256 over "id.timestamp.body" with the decoded secret, as the
    # Standard Webhooks specification defines it, and verification by the library.
    import hashlib
    import hmac

    new, old = webhooks.new_secret(), webhooks.new_secret()
    now = datetime.now(UTC).replace(microsecond=0)
    body = '{"type":"ping","data":{}}'
    header = sign("msg_1", now, body, [new, old])
    parts = header.split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    key = base64.b64decode(new.removeprefix("whsec_"))
    expected = hmac.new(key, f"msg_1.{int(now.timestamp())}.{body}".encode(), hashlib.sha256)
    assert parts[0] == "v1," + base64.b64encode(expected.digest()).decode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": header,
    }
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == {"type": "ping", "data": {}}


# -- the outbox -------------------------------------------------------------------------------


def test_a_finished_comparison_writes_its_event_in_the_same_transaction(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant)
    only_batches = add_endpoint(sessions, tenant, events=["batch.completed"])
    cid = add_comparison(
        sessions,
        local_store,
        tenant,
        webhook_url="http://127.0.0.1:9/adhoc",
        client_metadata={"build": 7},
    )
    comparisons.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    (event,) = _events(sessions, subject_id=cid)
    assert event.type is WebhookEventType.COMPARISON_SUCCEEDED
    data = event.data
    with sessions() as session:
        row = session.get_one(Comparison, cid)
    assert data["id"] == str(cid) and data["state"] == "succeeded"
    assert data["metadata"] == {"build": 7}
    assert data["result"]["verdict"] == row.result["verdict"]  # type: ignore[index]
    assert data["result"]["ssim"] == row.result["ssim"]  # type: ignore[index]
    assert data["result"]["region_count"] == len(row.result["regions"])  # type: ignore[index]
    assert "regions" not in data["result"]
    assert data["links"]["self"] == f"/v1/comparisons/{cid}"
    assert data["links"]["heatmap"] == f"/v1/comparisons/{cid}/heatmap"
    deliveries = _deliveries(sessions, event_id=event.id)
    targets = {(d.endpoint_id, d.url) for d in deliveries}
    assert targets == {(endpoint.id, HOOK), (None, "http://127.0.0.1:9/adhoc")}
    assert only_batches.id not in {d.endpoint_id for d in deliveries}
    assert all(d.state is WebhookDeliveryState.PENDING and d.due_at for d in deliveries)
    # The event is as old as the comparison's end: both come from one transaction.
    assert row.finished_at == event.created_at


def test_a_failed_comparison_writes_comparison_failed(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    add_endpoint(sessions, tenant, events=["comparison.failed"])
    cid = add_comparison(sessions, local_store, tenant, b=corrupt_png(64, 48, seed=1))
    comparisons.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    (event,) = _events(sessions, subject_id=cid)
    assert event.type is WebhookEventType.COMPARISON_FAILED
    assert event.data["error"]["code"] == "corrupt_image"
    assert event.data["result"] is None and event.data["links"]["heatmap"] is None


def test_no_target_means_no_event_and_rollback_means_no_event(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    comparisons.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    assert _events(sessions) == []  # nobody listens: nothing written
    add_endpoint(sessions, tenant)
    with sessions() as session:
        claim = lifecycle.comparison_ended(session, cid, claim=webhooks.DeliveryClaim.new(60.0))
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1
        session.rollback()  # the change it reports did not happen: neither did the event
    assert _events(sessions) == [] and _deliveries(sessions) == []
    # The written id is still reported (its task would find no row: a no-op).
    assert len(claim.delivery_ids) == 1


def test_canceled_comparisons_send_nothing(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    add_endpoint(sessions, tenant)
    cid = add_comparison(sessions, local_store, tenant)
    with sessions() as session:
        comparisons.delete_comparison(session, local_store, tenant_id=tenant.id, comparison_id=cid)
        lifecycle.comparison_ended(session, cid)
        session.commit()
    assert _events(sessions) == []


def test_payload_stays_under_20_kb(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    add_endpoint(sessions, tenant)
    metadata = {"notes": "x" * 16_000}  # the largest metadata accepted is 16 KiB
    result = {
        "verdict": "different",
        "ssim": 0.5,
        "regions": [{"x": i, "y": i, "width": 1, "height": 1} for i in range(5000)],
        "ignored": [],
        "timings_ms": {"total": 1.0},
        "summary": "s" * 3000,
    }
    cid = add_comparison(
        sessions,
        local_store,
        tenant,
        state=ComparisonState.SUCCEEDED,
        client_metadata=metadata,
        result=result,
        heatmap_key="heatmaps/x.png",
        finished_at=utcnow(),
    )
    with sessions() as session:
        event = webhooks.record_comparison_event(session, cid)
        session.commit()
    assert event is not None
    body = webhooks.render_payload(
        event.type.value, event.created_at, event.data, base_url="https://diffall.example.com"
    )
    assert len(body.encode()) < webhooks.MAX_PAYLOAD_BYTES
    payload = json.loads(body)
    assert payload["type"] == "comparison.succeeded"
    assert payload["data"]["metadata_omitted"] is True and payload["data"]["metadata"] is None
    assert payload["data"]["result"]["region_count"] == 5000
    assert payload["data"]["links"]["self"] == f"https://diffall.example.com/v1/comparisons/{cid}"
    assert payload["timestamp"].endswith("Z")


@pytest.mark.slow
def test_two_hundred_comparisons_finished_concurrently_give_one_batch_completed(
    pg_sessions: SessionFactory, tmp_path: Any
) -> None:
    # PostgreSQL, 12 threads (12 connections): the batch row lock plus the conditional UPDATE
    # make exactly one transaction complete the batch, and only that one writes the event. The
    # last 12 comparisons finish at the same instant (a barrier) to force the race.
    sessions = pg_sessions
    store = LocalObjectStore(tmp_path / "objects")
    tenant = make_tenant(sessions, "acme")
    add_endpoint(sessions, tenant)  # all events
    adhoc = "http://127.0.0.1:9/batch"
    batch_id, ids = add_running_batch(sessions, store, tenant, 200)
    with sessions.begin() as session:
        session.execute(sa.update(Batch).where(Batch.id == batch_id).values(webhook_url=adhoc))
    threads = 12
    head, tail = ids[:-threads], ids[-threads:]
    with ThreadPoolExecutor(threads) as pool:
        completed = list(pool.map(lambda cid: finish_one(sessions, batch_id, cid), head))
        barrier = threading.Barrier(threads)

        def last(cid: uuid.UUID) -> bool:
            barrier.wait()
            return finish_one(sessions, batch_id, cid)

        completed += list(pool.map(last, tail))
    assert completed.count(True) == 1
    batch_events = _events(sessions, type=WebhookEventType.BATCH_COMPLETED)
    assert len(batch_events) == 1
    (event,) = batch_events
    assert event.subject_id == batch_id
    assert event.data["counts"]["succeeded"] == 200 and event.data["total"] == 200
    assert event.data["verdicts"]["identical"] == 200
    # One delivery to the endpoint and one to the batch's webhook_url; one event per comparison.
    assert {d.url for d in _deliveries(sessions, event_id=event.id)} == {HOOK, adhoc}
    assert len(_events(sessions, type=WebhookEventType.COMPARISON_SUCCEEDED)) == 200


def test_concurrent_finishes_complete_a_batch_once_on_both_databases(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    add_endpoint(sessions, tenant, events=["batch.completed"])
    batch_id, ids = add_running_batch(sessions, local_store, tenant, 24)
    with ThreadPoolExecutor(6) as pool:
        completed = list(pool.map(lambda cid: finish_one(sessions, batch_id, cid), ids))
    assert completed.count(True) == 1
    assert len(_events(sessions, type=WebhookEventType.BATCH_COMPLETED)) == 1
    assert _events(sessions, type=WebhookEventType.COMPARISON_SUCCEEDED) == []  # not subscribed


def test_worker_crashed_comparisons_write_comparison_failed(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    # A job whose worker died max_crashes times ends failed when a redelivered message claims
    # it (lifecycle.claim): that transaction writes the event.
    add_endpoint(sessions, tenant)
    cid = add_comparison(
        sessions,
        local_store,
        tenant,
        state=ComparisonState.RUNNING,
        attempt=2,
        crash_count=2,
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    comparisons.run_comparison(
        sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=True
    )
    (event,) = _events(sessions, subject_id=cid)
    assert event.type is WebhookEventType.COMPARISON_FAILED
    assert event.data["error"]["code"] == lifecycle.WORKER_CRASHED


def test_the_sweeper_failing_a_crashed_job_writes_comparison_failed(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, queue: Any
) -> None:
    # A job whose lease expired for the last time is failed by the sweeper (not by a worker):
    # the sweeper's transaction writes the event too.
    add_endpoint(sessions, tenant)
    cid = add_comparison(
        sessions,
        local_store,
        tenant,
        state=ComparisonState.RUNNING,
        attempt=3,
        crash_count=2,
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    sweeper.sweep(
        sessions,
        queue,
        stale_queued_after_s=60,
        stale_running_after_s=60,
        max_crashes=3,
    )
    (event,) = _events(sessions, subject_id=cid)
    assert event.type is WebhookEventType.COMPARISON_FAILED
    assert event.data["error"]["code"] == lifecycle.WORKER_CRASHED


# -- the dispatcher ---------------------------------------------------------------------------


def test_dispatcher_claims_due_deliveries_once(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant)
    due = [add_ping(sessions, tenant, endpoint) for _ in range(3)]
    later = add_ping(sessions, tenant, endpoint)
    with sessions.begin() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == later)
            .values(due_at=utcnow() + timedelta(minutes=5))
        )
    queue = InlineQueue()
    with sessions() as session:
        report = dispatch_due(session, queue, policy=POLICY)
    assert report.sent == 3 and sorted(d for d, _ in queue.sent) == sorted(due)
    claims = {c for _, c in queue.sent}
    assert len(claims) == 1
    rows = {d.id: d for d in _deliveries(sessions)}
    for ident in due:
        assert rows[ident].state is WebhookDeliveryState.SENDING
        assert rows[ident].claim_id in claims
    assert rows[later].state is WebhookDeliveryState.PENDING
    # Claimed rows are not due again until their lease expires.
    with sessions() as session:
        assert dispatch_due(session, InlineQueue(), policy=POLICY).sent == 0
    with sessions() as session:
        again = InlineQueue()
        report = dispatch_due(session, again, policy=POLICY, now=utcnow() + timedelta(seconds=61))
    assert report.sent == 3 and {c for _, c in again.sent}.isdisjoint(claims)


def test_dispatcher_only_ids(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant)
    first, second = add_ping(sessions, tenant, endpoint), add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        assert dispatch_due(session, queue, policy=POLICY, only_ids=[]).sent == 0
        assert dispatch_due(session, queue, policy=POLICY, only_ids=[second]).sent == 1
    assert [d for d, _ in queue.sent] == [second]
    assert {d.id: d.state for d in _deliveries(sessions)}[first] is WebhookDeliveryState.PENDING


def test_dispatchers_skip_rows_locked_by_another_on_postgresql(
    pg_sessions: SessionFactory,
) -> None:
    sessions = pg_sessions
    tenant = make_tenant(sessions, "acme")
    endpoint = add_endpoint(sessions, tenant)
    ids = [add_ping(sessions, tenant, endpoint) for _ in range(4)]
    locker = sessions()
    try:
        # Another dispatcher's open transaction holds two rows.
        locker.execute(
            sa.select(WebhookDelivery.id).where(WebhookDelivery.id.in_(ids[:2])).with_for_update()
        ).all()
        queue = InlineQueue()
        with sessions() as session:
            report = dispatch_due(session, queue, policy=POLICY)
        assert report.sent == 2 and sorted(d for d, _ in queue.sent) == sorted(ids[2:])
    finally:
        locker.rollback()
        locker.close()


def test_a_lost_attempt_is_recorded_and_sent_again(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    from core.services.webhooks.delivery import _begin_attempt

    endpoint = add_endpoint(sessions, tenant)
    ident = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=POLICY)
    ((delivery_id, claim),) = queue.sent
    # The task starts posting, then its worker dies (nothing records the outcome).
    prepared = _begin_attempt(sessions, delivery_id, claim, POLICY)
    assert prepared is not None and prepared.number == 1
    later = utcnow() + timedelta(seconds=POLICY.lease_s + 1)
    again = InlineQueue()
    with sessions() as session:
        report = dispatch_due(session, again, policy=POLICY, now=later)
    assert report.lost == 1 and report.sent == 1
    with sessions() as session:
        attempts = list(session.scalars(sa.select(WebhookAttempt)))
        row = session.get_one(WebhookDelivery, ident)
    assert [(a.number, a.error_code) for a in attempts] == [(1, "worker_lost")]
    assert row.state is WebhookDeliveryState.SENDING and row.attempt_count == 1
    # The first claim is stale now: its message does nothing.
    assert _begin_attempt(sessions, delivery_id, claim, POLICY) is None


def test_a_lost_last_attempt_ends_failed(sessions: SessionFactory, tenant: Tenant) -> None:
    from core.services.webhooks.delivery import _begin_attempt

    policy = DeliveryPolicy(schedule_s=(0.0,), jitter=0.0, lease_s=60.0)
    endpoint = add_endpoint(sessions, tenant)
    ident = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=policy)
    assert _begin_attempt(sessions, ident, queue.sent[0][1], policy) is not None
    with sessions() as session:
        report = dispatch_due(
            session, InlineQueue(), policy=policy, now=utcnow() + timedelta(seconds=61)
        )
    assert report.gave_up == 1 and report.sent == 0
    (row,) = _deliveries(sessions)
    assert row.state is WebhookDeliveryState.FAILED and row.last_error == "worker_lost"


# -- the delivery log -------------------------------------------------------------------------


def test_retry_and_recover_give_one_more_attempt(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant)
    old, new = add_ping(sessions, tenant, endpoint), add_ping(sessions, tenant, endpoint)
    cutoff = utcnow()
    with sessions.begin() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == old)
            .values(created_at=cutoff - timedelta(hours=1))
        )
        session.execute(
            sa.update(WebhookDelivery)
            .values(
                state=WebhookDeliveryState.FAILED, attempt_count=3, due_at=None, finished_at=cutoff
            )
            .execution_options(synchronize_session=False)
        )
    since = cutoff - timedelta(minutes=30)
    with sessions() as session:
        ids = webhooks.recover_deliveries(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, since=since
        )
    assert ids == [new]
    rows = {d.id: d for d in _deliveries(sessions)}
    assert rows[new].state is WebhookDeliveryState.PENDING and rows[new].max_attempts == 4
    assert rows[old].state is WebhookDeliveryState.FAILED
    with sessions() as session:
        retried = webhooks.retry_delivery(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, delivery_id=old
        )
    assert retried.state is WebhookDeliveryState.PENDING and retried.max_attempts == 4
    with sessions() as session:
        page = webhooks.list_deliveries(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, limit=1
        )
        assert len(page.items) == 1 and page.next_cursor is not None
        assert page.items[0].event_type == "ping"
        with pytest.raises(InvalidRequest, match="time zone"):
            webhooks.recover_deliveries(
                session,
                tenant_id=tenant.id,
                endpoint_id=endpoint.id,
                since=datetime(2024, 1, 1),
            )
    # Nothing to retry while a delivery is being sent, or when the endpoint is disabled.
    with sessions() as session:
        dispatch_due(session, InlineQueue(), policy=POLICY)
        with pytest.raises(Conflict) as caught:
            webhooks.retry_delivery(
                session, tenant_id=tenant.id, endpoint_id=endpoint.id, delivery_id=old
            )
        assert caught.value.code == "delivery_in_progress"
        webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, enabled=False
        )
        with pytest.raises(Conflict) as caught:
            webhooks.recover_deliveries(
                session, tenant_id=tenant.id, endpoint_id=endpoint.id, since=since
            )
        assert caught.value.code == "webhook_disabled"


def test_disabling_fails_pending_deliveries(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant)
    add_ping(sessions, tenant, endpoint)
    with sessions() as session:
        webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, enabled=False
        )
    (row,) = _deliveries(sessions)
    assert row.state is WebhookDeliveryState.FAILED and row.last_error == "endpoint_disabled"
    # A manual disable is not an endpoint.disabled event (that one reports automatic ones).
    assert _events(sessions, type=WebhookEventType.ENDPOINT_DISABLED) == []


# -- the schedule -----------------------------------------------------------------------------


def test_retry_delay_follows_the_schedule_with_jitter() -> None:
    policy = DeliveryPolicy()  # the default schedule: 0, 5 s, 5 min, 30 min, ... 24 h, +-20 %
    rng = random.Random(1234)
    for attempts_done, base in [(1, 5.0), (2, 300.0), (3, 1800.0), (9, 86400.0), (15, 86400.0)]:
        delays = [retry_delay_s(policy, attempts_done, rng=rng) for _ in range(200)]
        assert min(delays) >= 0.8 * base and max(delays) <= 1.2 * base
        assert max(delays) - min(delays) > 0.2 * base  # the spread is used
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 1) == 5.0
    # Retry-After is a lower bound, capped at 24 h.
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 1, retry_after_s=120.0) == 120.0
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 2, retry_after_s=1.0) == 300.0
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 1, retry_after_s=1e9) == 86400.0


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(bad, now=now) is None


def test_delivery_policy_from_settings(tmp_path: Any) -> None:
    from tests.support.settings import settings_for

    settings = settings_for(
        tmp_path,
        webhook_allowed_networks="127.0.0.0/8, ::1/128",
        webhooks={"retry_schedule_s": "0,1,2", "timeout_s": 3, "lease_s": 4, "jitter": 0},
    )
    policy = DeliveryPolicy.from_settings(settings)
    assert policy.schedule_s == (0.0, 1.0, 2.0) and policy.max_attempts == 3
    assert policy.timeout_s == 3.0 and policy.lease_s == 4.0 and policy.jitter == 0.0
    assert [str(n) for n in policy.allowed_networks] == ["127.0.0.0/8", "::1/128"]
    assert policy.base_url == settings.api.public_base_url
    defaults = settings_for(tmp_path).webhooks
    assert defaults.retry_schedule_s == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert (defaults.jitter, defaults.timeout_s, defaults.disable_after_s) == (0.2, 15, 432000)
    assert defaults.dispatch_interval_s == 1
    for bad in ({"retry_schedule_s": "5,10"}, {"timeout_s": 30, "lease_s": 20}, {"jitter": 1}):
        with pytest.raises(ValueError):
            settings_for(tmp_path, webhooks=bad)
    with pytest.raises(ValueError, match="CIDR"):
        settings_for(tmp_path, webhook_allowed_networks="127.0.0.1/8")


def test_old_finished_events_are_purged_with_their_log(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant)
    deliveries = [add_ping(sessions, tenant, endpoint) for _ in range(3)]  # delivery ids
    with sessions() as session:
        old_done, old_pending, recent_done = (
            session.get_one(WebhookDelivery, ident).event_id for ident in deliveries
        )
    long_ago = utcnow() - timedelta(days=40)
    with sessions() as session, session.begin():
        for event_id in (old_done, old_pending):
            session.execute(
                sa.update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(created_at=long_ago)
            )
        for event_id in (old_done, recent_done):
            session.execute(
                sa.update(WebhookDelivery)
                .where(WebhookDelivery.event_id == event_id)
                .values(state=WebhookDeliveryState.SUCCEEDED)
            )
        session.add(WebhookAttempt(delivery_id=deliveries[0], number=1, started_at=long_ago))
    with sessions() as session:
        assert webhooks.purge_old_events(session, older_than_s=30 * 24 * 3600) == 1
    remaining = {event.id for event in _events(sessions)}
    assert remaining == {old_pending, recent_done}  # pending deliveries and recent events stay
    assert _deliveries(sessions, event_id=old_done) == []
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookAttempt)) == 0

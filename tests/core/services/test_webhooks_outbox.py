"""The webhook outbox: a final comparison or batch writes its event and deliveries in the same
transaction (crashes and the sweeper included), payload limits, batch completion once, purge.

Real databases (SQLite and PostgreSQL through ``sessions``).
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Batch,
    Comparison,
    ComparisonState,
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.services import comparisons, lifecycle, runs, sweeper, webhooks
from core.storage import LocalObjectStore
from tests.support.comparisons import add_comparison, add_running_batch, finish_one
from tests.support.images import corrupt_png
from tests.support.tenants import make_tenant
from tests.support.webhooks import (
    HOOK,
    add_endpoint,
    add_ping,
    deliveries_where,
    events_where,
)

SessionFactory = sessionmaker[Session]


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
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    (event,) = events_where(sessions, subject_id=cid)
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
    deliveries = deliveries_where(sessions, event_id=event.id)
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
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    (event,) = events_where(sessions, subject_id=cid)
    assert event.type is WebhookEventType.COMPARISON_FAILED
    assert event.data["error"]["code"] == "corrupt_image"
    assert event.data["result"] is None and event.data["links"]["heatmap"] is None


def test_no_target_means_no_event_and_rollback_means_no_event(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    assert events_where(sessions) == []  # nobody listens: nothing written
    add_endpoint(sessions, tenant)
    with sessions() as session:
        claim = lifecycle.comparison_ended(session, cid, claim=webhooks.DeliveryClaim.new(60.0))
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1
        session.rollback()  # the change it reports did not happen: neither did the event
    assert events_where(sessions) == [] and deliveries_where(sessions) == []
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
    assert events_where(sessions) == []


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
    batch_events = events_where(sessions, type=WebhookEventType.BATCH_COMPLETED)
    assert len(batch_events) == 1
    (event,) = batch_events
    assert event.subject_id == batch_id
    assert event.data["counts"]["succeeded"] == 200 and event.data["total"] == 200
    assert event.data["verdicts"]["identical"] == 200
    # One delivery to the endpoint and one to the batch's webhook_url; one event per comparison.
    assert {d.url for d in deliveries_where(sessions, event_id=event.id)} == {HOOK, adhoc}
    assert len(events_where(sessions, type=WebhookEventType.COMPARISON_SUCCEEDED)) == 200


def test_concurrent_finishes_complete_a_batch_once_on_both_databases(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    add_endpoint(sessions, tenant, events=["batch.completed"])
    batch_id, ids = add_running_batch(sessions, local_store, tenant, 24)
    with ThreadPoolExecutor(6) as pool:
        completed = list(pool.map(lambda cid: finish_one(sessions, batch_id, cid), ids))
    assert completed.count(True) == 1
    assert len(events_where(sessions, type=WebhookEventType.BATCH_COMPLETED)) == 1
    assert (
        events_where(sessions, type=WebhookEventType.COMPARISON_SUCCEEDED) == []
    )  # not subscribed


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
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=True)
    (event,) = events_where(sessions, subject_id=cid)
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
    (event,) = events_where(sessions, subject_id=cid)
    assert event.type is WebhookEventType.COMPARISON_FAILED
    assert event.data["error"]["code"] == lifecycle.WORKER_CRASHED


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
    remaining = {event.id for event in events_where(sessions)}
    assert remaining == {old_pending, recent_done}  # pending deliveries and recent events stay
    assert deliveries_where(sessions, event_id=old_done) == []
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookAttempt)) == 0

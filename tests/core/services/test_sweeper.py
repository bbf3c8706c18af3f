"""The sweeper: lost messages are re-sent, dead workers' jobs recovered, no duplicates."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Batch,
    Comparison,
    ComparisonQueue,
    ComparisonState,
    IdempotencyKey,
    Tenant,
    utcnow,
)
from core.services import idempotency
from core.services import sweeper as sweeper_module
from core.services.jobqueue import CeleryJobQueue, make_celery_app
from core.services.sweeper import recover, sweep
from core.services.tasknames import QUEUE_BATCH, QUEUE_INTERACTIVE
from core.storage import LocalObjectStore
from tests.support.brokers import redis_messages
from tests.support.images import png_bytes
from tests.support.servers import PrivateRedis
from tests.support.settings import settings_for
from tests.support.tenants import add_image

SessionFactory = sessionmaker[Session]
THRESHOLDS: dict[str, Any] = {
    "stale_queued_after_s": 60,
    "stale_running_after_s": 180,
    "max_crashes": 3,
}


def _rows(
    sessions: SessionFactory, store: LocalObjectStore, tenant: Tenant, specs: list[dict[str, Any]]
) -> list[uuid.UUID]:
    a = add_image(sessions, store, tenant.id, png_bytes(32, 32, seed=1)).id
    now = utcnow()
    ids = [uuid.uuid4() for _ in specs]
    with sessions() as session:
        for cid, spec in zip(ids, specs, strict=True):
            session.add(
                Comparison(
                    id=cid,
                    tenant_id=tenant.id,
                    image_a_id=a,
                    image_b_id=a,
                    options={},
                    created_at=now,
                    updated_at=now,
                    **spec,
                )
            )
        session.commit()
    return ids


def _get(sessions: SessionFactory, cid: uuid.UUID) -> Comparison:
    with sessions() as session:
        return session.get_one(Comparison, cid)


def _sent(client: redis.Redis, queue: str) -> list[str]:
    return [m.args[0] for m in redis_messages(client, queue)]


def test_queued_jobs_are_resent_when_lost_and_only_then(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
) -> None:
    now = utcnow()
    old = now - timedelta(seconds=120)
    never, stale, fresh, stale_batch = _rows(
        sessions,
        local_store,
        tenant,
        [
            {"enqueued_at": None},  # the API could not send it
            {"enqueued_at": old},  # sent long ago, still queued: the message was lost
            {"enqueued_at": now},  # just sent
            {"enqueued_at": old, "queue": ComparisonQueue.BATCH},
        ],
    )
    # Something still waits in the batch queue: its stale job may be behind it, not lost.
    queue.enqueue_comparison(uuid.uuid4(), ComparisonQueue.BATCH)
    report = sweep(sessions, queue, **THRESHOLDS)
    assert sorted(_sent(redis_client, QUEUE_INTERACTIVE)) == sorted([str(never), str(stale)])
    assert str(stale_batch) not in _sent(redis_client, QUEUE_BATCH)
    assert (report.resent, report.waiting_queues) == (2, (QUEUE_BATCH,))
    assert _get(sessions, never).enqueued_at is not None
    # A second pass right away sends nothing more (the jobs were just stamped).
    redis_client.delete(QUEUE_INTERACTIVE)
    assert sweep(sessions, queue, **THRESHOLDS).resent == 0
    # Once the batch queue is drained, its lost job is re-sent.
    redis_client.delete(*redis_client.keys(f"{QUEUE_BATCH}*"))
    report = sweep(sessions, queue, **THRESHOLDS)
    assert report.resent == 1 and _sent(redis_client, QUEUE_BATCH) == [str(stale_batch)]
    assert _get(sessions, fresh).enqueued_at == now


def test_running_jobs_whose_lease_expired_are_recovered(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
) -> None:
    now = utcnow()
    batch_id = uuid.uuid4()
    with sessions() as session:
        session.add(Batch(id=batch_id, tenant_id=tenant.id, total=2))
        session.commit()
    expired, last_chance, alive, no_lease = _rows(
        sessions,
        local_store,
        tenant,
        [
            {
                "state": ComparisonState.RUNNING,
                "attempt": 1,
                "lease_expires_at": now - timedelta(seconds=1),
            },
            {
                "state": ComparisonState.RUNNING,
                "attempt": 3,
                "crash_count": 2,
                "lease_expires_at": now - timedelta(seconds=1),
                "batch_id": batch_id,
                "queue": ComparisonQueue.BATCH,
            },
            {
                "state": ComparisonState.RUNNING,
                "attempt": 1,
                "lease_expires_at": now + timedelta(seconds=60),
            },
            {"state": ComparisonState.RUNNING, "attempt": 1, "lease_expires_at": None},
        ],
    )
    with sessions() as session:  # the batch's other comparison is done already
        session.add(
            Comparison(
                tenant_id=tenant.id,
                batch_id=batch_id,
                image_a_id=_get(sessions, expired).image_a_id,
                image_b_id=_get(sessions, expired).image_a_id,
                options={},
                state=ComparisonState.SUCCEEDED,
                queue=ComparisonQueue.BATCH,
            )
        )
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == no_lease)
            .values(updated_at=now - timedelta(seconds=600))
        )
        session.commit()
    report = sweep(sessions, queue, **THRESHOLDS)
    assert (report.requeued, report.crashed) == (2, 1)
    row = _get(sessions, expired)
    assert (row.state, row.crash_count, row.attempt) == (ComparisonState.QUEUED, 1, 1)
    assert row.lease_expires_at is None
    assert sorted(_sent(redis_client, QUEUE_INTERACTIVE)) == sorted([str(expired), str(no_lease)])
    row = _get(sessions, last_chance)
    assert (row.state, row.error_code, row.crash_count) == (
        ComparisonState.FAILED,
        "worker_crashed",
        3,
    )
    assert _sent(redis_client, QUEUE_BATCH) == []
    with sessions() as session:
        assert session.get_one(Batch, batch_id).completed_at is not None
    row = _get(sessions, alive)
    assert (row.state, row.crash_count) == (ComparisonState.RUNNING, 0)


def test_a_broker_outage_leaves_jobs_marked_for_the_next_pass(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    dead_queue: CeleryJobQueue,
) -> None:
    now = utcnow()
    (expired,) = _rows(
        sessions,
        local_store,
        tenant,
        [
            {
                "state": ComparisonState.RUNNING,
                "attempt": 1,
                "lease_expires_at": now - timedelta(seconds=1),
            }
        ],
    )
    report = sweep(sessions, dead_queue, **THRESHOLDS)
    assert (report.requeued, report.send_failures) == (1, 1)
    row = _get(sessions, expired)
    assert row.state is ComparisonState.QUEUED and row.enqueued_at is None


def test_expired_idempotency_keys_are_purged(
    sessions: SessionFactory, tenant: Tenant, queue: CeleryJobQueue
) -> None:
    with sessions() as session:
        idempotency.begin(session, tenant_id=tenant.id, key="old", request_hash="h")
        idempotency.begin(session, tenant_id=tenant.id, key="new", request_hash="h")
        session.execute(
            sa.update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert sweep(sessions, queue, **THRESHOLDS).purged_idempotency_keys == 1
    with sessions() as session:
        assert session.scalars(sa.select(IdempotencyKey.key)).all() == ["new"]


def test_jobs_sent_before_the_broker_restarted_are_sent_again_at_once(
    sessions: SessionFactory,
    store: LocalObjectStore,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    # A Redis that just started (empty, as after a restart without persistence): jobs sent
    # to the one before it lost their messages; recover() sends them again without waiting
    # stale_queued_after_s, once; jobs sent since the start keep their only message.
    server = PrivateRedis(tmp_path)
    app = make_celery_app(settings_for(tmp_path, broker_url=server.url))
    queue = CeleryJobQueue(app)
    try:
        started = queue.broker_started_at()
        assert started is not None and abs((utcnow() - started).total_seconds()) < 5
        time.sleep(1.5)  # the start is known to the second
        now = utcnow()
        lost, kept = _rows(
            sessions,
            store,
            tenant,
            [
                {"enqueued_at": now - timedelta(seconds=20)},  # before the start, not stale
                {"enqueued_at": now},  # after the start: its message is there
            ],
        )
        recovery = {k: THRESHOLDS[k] for k in ("stale_running_after_s", "max_crashes")}
        report = recover(sessions, queue, lease_confirm_s=0.0, **recovery)
        assert (report.resent, report.send_failures) == (1, 0)
        with server.client() as client:
            assert _sent(client, QUEUE_INTERACTIVE) == [str(lost)]
        resent_at = _get(sessions, lost).enqueued_at
        assert resent_at is not None and resent_at > now
        assert _get(sessions, kept).enqueued_at == now
        assert recover(sessions, queue, lease_confirm_s=0.0, **recovery).resent == 0
    finally:
        app.close()
        server.stop()


def test_after_the_window_a_restart_is_left_to_the_stale_queued_step(
    sessions: SessionFactory,
    store: LocalObjectStore,
    tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The broker started longer ago than the window: recover() sends nothing early (the
    # stale-queued step of sweep() covers such jobs); here the window is made 0 s.
    monkeypatch.setattr(sweeper_module, "RESTART_WINDOW_S", 0.0)
    server = PrivateRedis(tmp_path)
    app = make_celery_app(settings_for(tmp_path, broker_url=server.url))
    try:
        time.sleep(1.5)
        (row,) = _rows(sessions, store, tenant, [{"enqueued_at": utcnow() - timedelta(seconds=20)}])
        recovery = {k: THRESHOLDS[k] for k in ("stale_running_after_s", "max_crashes")}
        report = recover(sessions, CeleryJobQueue(app), lease_confirm_s=0.0, **recovery)
        assert report.resent == 0
        sent_at = _get(sessions, row).enqueued_at
        assert sent_at is not None and sent_at < utcnow() - timedelta(seconds=19)
    finally:
        app.close()
        server.stop()

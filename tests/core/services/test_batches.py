"""Batches: many pairs in one transaction, per-item errors, summaries."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Batch, Comparison, ComparisonQueue, ComparisonState, Image, Tenant
from core.services import batches, images, runs
from core.services.batches import BatchItem
from core.services.errors import InvalidRequest, LimitExceeded
from core.services.jobqueue import CeleryJobQueue
from core.services.tasknames import (
    ENQUEUE_BATCH,
    QUEUE_BATCH,
    QUEUE_INTERACTIVE,
    QUEUE_MAINTENANCE,
)
from core.storage import LocalObjectStore
from tests.support.brokers import redis_messages
from tests.support.images import corrupt_png, edited_png, png_bytes
from tests.support.tenants import add_image, make_tenant

SessionFactory = sessionmaker[Session]


def test_items_are_validated_one_by_one(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    other_tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
) -> None:
    a = add_image(sessions, local_store, tenant.id, png_bytes(64, 48, seed=1)).id
    b = add_image(sessions, local_store, tenant.id, edited_png(64, 48, seed=1)).id
    theirs = add_image(sessions, local_store, other_tenant.id, png_bytes(32, 32, seed=7)).id
    with sessions() as session:
        pending = images.presign_upload(
            session, local_store, tenant_id=tenant.id, public_base_url="http://x", expires_s=60
        ).image.id
    items = [
        BatchItem(a=a, b=b, metadata={"row": 0}),
        BatchItem(a=a, b=theirs),  # another tenant's image: as good as missing
        BatchItem(a=a, b=b, options={"mode": "nope"}),
        BatchItem(a=pending, b=b),
        BatchItem(a=b, b=a, options={"mode": "pixel"}),
        BatchItem(a=uuid.uuid4(), b=a),
        BatchItem(a=a, b=b, metadata={"x": "y" * 20_000}),
    ]
    with sessions() as session:
        created = batches.create_batch(
            session,
            queue,
            tenant_id=tenant.id,
            items=items,
            metadata={"run": 7},
            webhook_url="https://hooks.example/b",
            max_pairs=100,
        )
    outcomes = created.items
    assert [o.index for o in outcomes] == list(range(len(items)))
    errors = {o.index: o.error["code"] for o in outcomes if o.error}
    assert errors == {
        1: "image_not_found",
        2: "invalid_options",
        3: "image_not_ready",
        5: "image_not_found",
        6: "invalid_metadata",
    }
    accepted = [o.comparison_id for o in outcomes if o.comparison_id]
    assert len(accepted) == 2 and created.batch.total == 2
    with sessions() as session:
        rows = session.scalars(
            sa.select(Comparison).where(Comparison.batch_id == created.batch.id)
        ).all()
        batch = session.get_one(Batch, created.batch.id)
    assert {r.id for r in rows} == set(accepted)
    assert all(r.queue is ComparisonQueue.BATCH and r.state is ComparisonState.QUEUED for r in rows)
    assert {r.id: r.options["mode"] for r in rows} == {accepted[0]: "auto", accepted[1]: "pixel"}
    assert {r.id: r.client_metadata for r in rows} == {accepted[0]: {"row": 0}, accepted[1]: None}
    assert all(r.attempt == r.crash_count == 0 and r.webhook_url is None for r in rows)
    assert all(r.enqueued_at is not None and r.created_at == r.enqueued_at for r in rows)
    assert batch.client_metadata == {"run": 7} and batch.completed_at is None
    sent = redis_messages(redis_client, QUEUE_BATCH)
    assert sorted(m.args[0] for m in sent) == sorted(str(i) for i in accepted)
    assert all(m.priority == 6 for m in sent)
    assert redis_messages(redis_client, QUEUE_INTERACTIVE) == []


def test_size_limits(sessions: SessionFactory, tenant: Tenant, queue: CeleryJobQueue) -> None:
    item = BatchItem(a=uuid.uuid4(), b=uuid.uuid4())
    with sessions() as session:
        with pytest.raises(InvalidRequest):
            batches.create_batch(
                session,
                queue,
                tenant_id=tenant.id,
                items=[],
                metadata=None,
                webhook_url=None,
                max_pairs=10,
            )
        with pytest.raises(LimitExceeded) as too_many:
            batches.create_batch(
                session,
                queue,
                tenant_id=tenant.id,
                items=[item] * 11,
                metadata=None,
                webhook_url=None,
                max_pairs=10,
            )
        assert session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0
    assert too_many.value.code == "batch_too_large"
    assert too_many.value.details == {"max_pairs": 10, "pairs": 11}


def test_a_batch_of_only_bad_pairs_is_complete_at_once(
    sessions: SessionFactory, tenant: Tenant, queue: CeleryJobQueue
) -> None:
    with sessions() as session:
        created = batches.create_batch(
            session,
            queue,
            tenant_id=tenant.id,
            items=[BatchItem(a=uuid.uuid4(), b=uuid.uuid4())],
            metadata=None,
            webhook_url=None,
            max_pairs=10,
        )
        summary = batches.get_batch_summary(session, tenant_id=tenant.id, batch_id=created.batch.id)
    assert created.batch.total == 0 and created.batch.completed_at is not None
    assert summary.progress == 1.0


def test_summary_counts_states_and_verdicts(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    other_tenant: Tenant,
    dead_queue: CeleryJobQueue,
) -> None:
    a = add_image(sessions, local_store, tenant.id, png_bytes(64, 48, seed=1)).id
    same = add_image(sessions, local_store, tenant.id, png_bytes(64, 48, seed=1) + b"").id
    edited = add_image(sessions, local_store, tenant.id, edited_png(64, 48, seed=1)).id
    broken = add_image(sessions, local_store, tenant.id, corrupt_png(64, 48)).id
    items = [
        BatchItem(a=a, b=same),
        BatchItem(a=a, b=edited),
        BatchItem(a=a, b=broken),
        BatchItem(a=edited, b=a),
    ]
    with sessions() as session:  # the broker is down: the batch is accepted all the same
        created = batches.create_batch(
            session,
            dead_queue,
            tenant_id=tenant.id,
            items=items,
            metadata=None,
            webhook_url=None,
            max_pairs=10,
        )
    ids = [o.comparison_id for o in created.items]
    with sessions() as session:
        unsent = session.scalars(
            sa.select(Comparison.enqueued_at).where(Comparison.batch_id == created.batch.id)
        ).all()
    assert unsent == [None] * 4  # marked for the sweeper
    for cid in ids[:3]:
        assert cid is not None
        runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    with sessions() as session:
        summary = batches.get_batch_summary(session, tenant_id=tenant.id, batch_id=created.batch.id)
        with pytest.raises(Exception) as other:
            batches.get_batch_summary(session, tenant_id=other_tenant.id, batch_id=created.batch.id)
    assert other.value.__class__.__name__ == "NotFound"
    assert summary.counts == {"queued": 1, "running": 0, "succeeded": 2, "failed": 1, "canceled": 0}
    assert summary.progress == pytest.approx(0.75)
    verdicts = {k: v for k, v in summary.verdicts.items() if v}
    # identical bytes -> "identical"; the painted square -> a localised edit.
    assert verdicts == {"identical": 1, "localized_edit": 1}
    assert summary.batch.completed_at is None


def _images(sessions: SessionFactory, tenant: Tenant, count: int) -> list[uuid.UUID]:
    """``count`` ready image rows (bytes are not needed to accept a batch)."""
    ids = [uuid.uuid4() for _ in range(count)]
    with sessions() as session:
        session.execute(
            sa.insert(Image),
            [
                {
                    "id": i,
                    "tenant_id": tenant.id,
                    "sha256": f"{n:064x}",
                    "storage_key": f"images/{n}",
                    "size_bytes": 1,
                    "format": "PNG",
                    "width": 1,
                    "height": 1,
                }
                for n, i in enumerate(ids)
            ],
        )
        session.commit()
    return ids


def test_ten_thousand_pairs_are_accepted_in_one_transaction(
    pg_sessions: SessionFactory, queue: CeleryJobQueue, redis_client: redis.Redis
) -> None:
    sessions = pg_sessions
    tenant = make_tenant(sessions, "bulk")
    image_ids = _images(sessions, tenant, 20_000)
    items: list[BatchItem] = [
        BatchItem(
            a=image_ids[2 * n],
            b=image_ids[2 * n + 1],
            metadata={"n": n},
            options={"mode": "auto", "fail_under": 0.95},
        )
        for n in range(10_000)
    ]
    # Accepted three times over (the fan-out message is sent once per batch); the time it takes
    # is a benchmark figure (bench/bench_service.py), not asserted here.
    for _ in range(3):
        with sessions() as session:
            created = batches.create_batch(
                session,
                queue,
                tenant_id=tenant.id,
                items=items,
                metadata=None,
                webhook_url=None,
                max_pairs=10_000,
            )
        assert created.batch.total == 10_000
    with sessions() as session:
        count = session.scalar(
            sa.select(sa.func.count())
            .select_from(Comparison)
            .where(Comparison.batch_id == created.batch.id)
        )
    assert count == 10_000
    # One fan-out task per batch; a worker sends the 10,000 run tasks (send_batch).
    fan_out = redis_messages(redis_client, QUEUE_MAINTENANCE)
    assert [(m.task, m.priority) for m in fan_out] == [(ENQUEUE_BATCH, 3)] * 3
    assert fan_out[-1].args == [str(created.batch.id)]
    assert redis_messages(redis_client, QUEUE_BATCH) == []
    assert batches.send_batch(sessions, queue, batch_id=created.batch.id) == 10_000
    assert len(redis_messages(redis_client, QUEUE_BATCH)) == 10_000


def test_send_batch_sends_only_queued_comparisons(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
) -> None:
    a = add_image(sessions, local_store, tenant.id, png_bytes(64, 48, seed=1)).id
    b = add_image(sessions, local_store, tenant.id, edited_png(64, 48, seed=1)).id
    with sessions() as session:
        created = batches.create_batch(
            session,
            queue,
            tenant_id=tenant.id,
            items=[BatchItem(a=a, b=b)] * 3,
            metadata=None,
            webhook_url=None,
            max_pairs=10,
        )
    redis_client.delete(*redis_client.keys(f"{QUEUE_BATCH}*"))
    first = created.items[0].comparison_id
    assert first is not None
    runs.run_comparison(sessions, local_store, comparison_id=first, max_crashes=3)
    assert batches.send_batch(sessions, queue, batch_id=created.batch.id) == 2
    sent = {m.args[0] for m in redis_messages(redis_client, QUEUE_BATCH)}
    assert sent == {str(o.comparison_id) for o in created.items[1:]}
    assert batches.send_batch(sessions, queue, batch_id=uuid.uuid4()) == 0

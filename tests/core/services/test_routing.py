"""The big queue: a pair whose larger image has more pixels than ``worker.big_image_pixels``
goes to ``big`` (single comparisons, batch items, the batch fan-out, the sweeper's re-sends);
at or below the threshold, to ``interactive`` or ``batch``. Real Redis, real database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.config import DEFAULT_BIG_IMAGE_PIXELS, Settings
from core.db.models import Comparison, ComparisonQueue, ComparisonState, Tenant, utcnow
from core.services import batches, comparisons
from core.services.batches import BatchItem
from core.services.jobqueue import CeleryJobQueue
from core.services.routing import choose_queue, pair_pixels
from core.services.sweeper import recover, sweep
from core.services.tasknames import (
    ENQUEUE_BATCH,
    QUEUE_BATCH,
    QUEUE_BIG,
    QUEUE_INTERACTIVE,
    QUEUE_MAINTENANCE,
)
from core.storage import LocalObjectStore
from tests.support.brokers import redis_messages
from tests.support.images import edited_png, png_bytes
from tests.support.tenants import add_image

SessionFactory = sessionmaker[Session]
#: The threshold of these tests: a 64 x 48 image is at it, a 65 x 48 image above it.
THRESHOLD = 64 * 48


def _sent(client: redis.Redis, queue: str) -> list[str]:
    return sorted(m.args[0] for m in redis_messages(client, queue))


def _lose_messages(client: redis.Redis) -> None:
    """Delete every queued message (not the database's claim key)."""
    for name in (QUEUE_INTERACTIVE, QUEUE_BATCH, QUEUE_BIG):
        keys = client.keys(f"{name}*")
        if keys:
            client.delete(*keys)


def _queue_of(sessions: SessionFactory, comparison_id: uuid.UUID) -> ComparisonQueue:
    with sessions() as session:
        return session.get_one(Comparison, comparison_id).queue


def test_the_rule_and_its_default() -> None:
    assert Settings().worker.big_image_pixels == DEFAULT_BIG_IMAGE_PIXELS == 4096 * 4096
    assert pair_pixels((64, 48), (65, 48)) == 65 * 48
    assert pair_pixels((None, None), (2, 3)) == 6
    for in_batch, normal in ((False, ComparisonQueue.INTERACTIVE), (True, ComparisonQueue.BATCH)):
        assert choose_queue(in_batch=in_batch, pixels=0, big_image_pixels=THRESHOLD) is normal
        assert choose_queue(in_batch=in_batch, pixels=THRESHOLD, big_image_pixels=THRESHOLD) is (
            normal
        )
        assert (
            choose_queue(in_batch=in_batch, pixels=THRESHOLD + 1, big_image_pixels=THRESHOLD)
            is ComparisonQueue.BIG
        )


@pytest.fixture
def pairs(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    """``at``: both images at the threshold; ``above``: B one column wider (A at it)."""
    a = add_image(sessions, local_store, tenant.id, png_bytes(64, 48, seed=1)).id
    b = add_image(sessions, local_store, tenant.id, edited_png(64, 48, seed=1)).id
    wide = add_image(sessions, local_store, tenant.id, png_bytes(65, 48, seed=2)).id
    return {"at": (a, b), "above": (a, wide)}


def _create_each(
    sessions: SessionFactory,
    queue: CeleryJobQueue,
    tenant: Tenant,
    pairs: dict[str, tuple[uuid.UUID, uuid.UUID]],
) -> dict[str, uuid.UUID]:
    """One single comparison per pair (routed with ``THRESHOLD``): its id by the pair's name."""
    created = {}
    for name, (a, b) in pairs.items():
        with sessions() as session:
            created[name] = comparisons.create_comparison(
                session,
                queue,
                tenant_id=tenant.id,
                image_a_id=a,
                image_b_id=b,
                options=None,
                metadata=None,
                webhook_url=None,
                big_image_pixels=THRESHOLD,
            ).id
    return created


def test_single_comparisons_above_the_threshold_go_to_big(
    sessions: SessionFactory,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
    pairs: dict[str, tuple[uuid.UUID, uuid.UUID]],
) -> None:
    created = _create_each(sessions, queue, tenant, pairs)
    assert _queue_of(sessions, created["at"]) is ComparisonQueue.INTERACTIVE
    assert _queue_of(sessions, created["above"]) is ComparisonQueue.BIG
    assert _sent(redis_client, QUEUE_INTERACTIVE) == [str(created["at"])]
    assert _sent(redis_client, QUEUE_BIG) == [str(created["above"])]
    # With the default threshold (16.8 MP) neither is big.
    with sessions() as session:
        default = comparisons.create_comparison(
            session,
            queue,
            tenant_id=tenant.id,
            image_a_id=pairs["above"][0],
            image_b_id=pairs["above"][1],
            options=None,
            metadata=None,
            webhook_url=None,
        ).id
    assert _queue_of(sessions, default) is ComparisonQueue.INTERACTIVE


@pytest.mark.parametrize("fan_out", [False, True], ids=["direct", "fan-out"])
def test_batch_items_above_the_threshold_go_to_big(
    sessions: SessionFactory,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
    pairs: dict[str, tuple[uuid.UUID, uuid.UUID]],
    monkeypatch: pytest.MonkeyPatch,
    fan_out: bool,
) -> None:
    if fan_out:  # the worker's side: diffall.batches.enqueue sends them (send_batch)
        monkeypatch.setattr(batches, "DIRECT_ENQUEUE_MAX", 1)
    items = [
        BatchItem(a=pairs["at"][0], b=pairs["at"][1]),
        BatchItem(a=pairs["above"][1], b=pairs["above"][0]),  # the big image as A
        BatchItem(a=pairs["at"][1], b=pairs["at"][0]),
    ]
    with sessions() as session:
        created = batches.create_batch(
            session,
            queue,
            tenant_id=tenant.id,
            items=items,
            metadata=None,
            webhook_url=None,
            max_pairs=10,
            big_image_pixels=THRESHOLD,
        )
    ids = [str(o.comparison_id) for o in created.items]
    assert [_queue_of(sessions, uuid.UUID(i)) for i in ids] == [
        ComparisonQueue.BATCH,
        ComparisonQueue.BIG,
        ComparisonQueue.BATCH,
    ]
    if fan_out:
        fan_outs = redis_messages(redis_client, QUEUE_MAINTENANCE)
        assert [(m.task, m.args) for m in fan_outs] == [(ENQUEUE_BATCH, [str(created.batch.id)])]
        assert _sent(redis_client, QUEUE_BATCH) == _sent(redis_client, QUEUE_BIG) == []
        assert batches.send_batch(sessions, queue, batch_id=created.batch.id) == 3
    assert _sent(redis_client, QUEUE_BATCH) == sorted([ids[0], ids[2]])
    assert _sent(redis_client, QUEUE_BIG) == [ids[1]]


def test_the_sweeper_resends_big_jobs_to_big(
    sessions: SessionFactory,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
    pairs: dict[str, tuple[uuid.UUID, uuid.UUID]],
) -> None:
    created = _create_each(sessions, queue, tenant, pairs)
    _lose_messages(redis_client)
    with sessions() as session:
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id.in_(list(created.values())))
            .values(enqueued_at=utcnow() - timedelta(seconds=600))
        )
        session.commit()
    report = sweep(
        sessions, queue, stale_queued_after_s=60, stale_running_after_s=180, max_crashes=3
    )
    assert report.resent == 2
    assert _sent(redis_client, QUEUE_INTERACTIVE) == [str(created["at"])]
    assert _sent(redis_client, QUEUE_BIG) == [str(created["above"])]

    # A big job whose worker died is recovered onto big too.
    _lose_messages(redis_client)
    with sessions() as session:
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == created["above"])
            .values(
                state=ComparisonState.RUNNING,
                attempt=1,
                lease_expires_at=utcnow() - timedelta(seconds=60),
                lease_lost_at=utcnow() - timedelta(seconds=60),
            )
        )
        session.commit()
    recovered = recover(
        sessions, queue, stale_running_after_s=180, lease_confirm_s=0.0, max_crashes=3
    )
    assert recovered.requeued == 1
    assert _sent(redis_client, QUEUE_BIG) == [str(created["above"])]
    assert _sent(redis_client, QUEUE_INTERACTIVE) == []

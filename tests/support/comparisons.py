"""Comparison rows for the service-level tests: one queued comparison, a batch of running ones,
and the worker's final transaction for one of them (the webhook and secret tests share them)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Batch, Comparison, ComparisonQueue, ComparisonState, Tenant, utcnow
from core.services import lifecycle
from core.services.options import validate_options
from core.storage import ObjectStore
from tests.support.images import edited_png, png_bytes
from tests.support.tenants import add_image

__all__ = ["add_comparison", "add_running_batch", "finish_one"]

SessionFactory = sessionmaker[Session]


def _image_pair(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> tuple[uuid.UUID, uuid.UUID]:
    a = add_image(sessions, store, tenant.id, png_bytes(64, 48, seed=1))
    b = add_image(sessions, store, tenant.id, edited_png(64, 48, seed=1))
    return a.id, b.id


def add_comparison(
    sessions: SessionFactory,
    store: ObjectStore,
    tenant: Tenant,
    *,
    a: bytes | None = None,
    b: bytes | None = None,
    options: dict[str, Any] | None = None,
    batch_id: uuid.UUID | None = None,
    **values: Any,
) -> uuid.UUID:
    """A comparison row of two stored 64 x 48 images (A a photograph and B edited, or ``a``
    and ``b``), queued on the batch queue when in ``batch_id`` (else interactive) and sent,
    unless ``values`` (column values) say otherwise; its id."""
    image_a = add_image(sessions, store, tenant.id, a or png_bytes(64, 48, seed=1))
    image_b = add_image(sessions, store, tenant.id, b or edited_png(64, 48, seed=1))
    cid = uuid.uuid4()
    now = utcnow()
    with sessions() as session:
        session.add(
            Comparison(
                id=cid,
                tenant_id=tenant.id,
                batch_id=batch_id,
                image_a_id=image_a.id,
                image_b_id=image_b.id,
                options=validate_options(options),
                queue=ComparisonQueue.BATCH if batch_id else ComparisonQueue.INTERACTIVE,
                created_at=now,
                updated_at=now,
                enqueued_at=now,
                **values,
            )
        )
        session.commit()
    return cid


def comparison_row(sessions: SessionFactory, cid: uuid.UUID) -> Comparison:
    """The comparison row ``cid`` as committed now (a fresh session)."""
    with sessions() as session:
        return session.get_one(Comparison, cid)


def add_running_batch(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant, count: int
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A batch of ``count`` comparisons, all ``running``: the batch id and theirs."""
    a, b = _image_pair(sessions, store, tenant)
    batch_id = uuid.uuid4()
    now = utcnow()
    ids = [uuid.uuid4() for _ in range(count)]
    with sessions() as session:
        session.add(Batch(id=batch_id, tenant_id=tenant.id, total=count, created_at=now))
        session.flush()
        session.execute(
            sa.insert(Comparison),
            [
                {
                    "id": cid,
                    "tenant_id": tenant.id,
                    "batch_id": batch_id,
                    "image_a_id": a,
                    "image_b_id": b,
                    "options": {},
                    "queue": ComparisonQueue.BATCH,
                    "state": ComparisonState.RUNNING,
                    "attempt": 1,
                    "crash_count": 0,
                    "created_at": now,
                    "updated_at": now,
                    "result": {"verdict": "identical", "ssim": 1.0, "regions": []},
                }
                for cid in ids
            ],
        )
        session.commit()
    return batch_id, ids


def finish_one(sessions: SessionFactory, batch_id: uuid.UUID, cid: uuid.UUID) -> bool:
    """What the worker's final transaction does (lifecycle.succeed / fail): state, event, batch.
    True when this finish completed the batch."""
    with sessions.begin() as session:
        now = utcnow()
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == cid, Comparison.state == ComparisonState.RUNNING)
            .values(state=ComparisonState.SUCCEEDED, finished_at=now, updated_at=now)
        )
        lifecycle.comparison_ended(session, cid, now=now)
        return lifecycle.complete_batch_if_done(session, batch_id, now=now)

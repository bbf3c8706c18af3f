"""``core.services.stats.job_stats``: the monitoring snapshot read from the database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.db.models import Comparison, ComparisonQueue, ComparisonState, utcnow
from core.services.stats import job_stats
from core.storage import LocalObjectStore
from tests.support.images import png_bytes
from tests.support.tenants import add_image, make_tenant


def _row(tenant_id, a, b, state, queue=ComparisonQueue.INTERACTIVE, **extra) -> Comparison:
    return Comparison(
        tenant_id=tenant_id, image_a_id=a, image_b_id=b, state=state, queue=queue, **extra
    )


def test_counts_failures_and_stage_quantiles(sessions, local_store: LocalObjectStore) -> None:
    tenant = make_tenant(sessions)
    a = add_image(sessions, local_store, tenant.id, png_bytes(seed=1))
    b = add_image(sessions, local_store, tenant.id, png_bytes(seed=2))
    now = utcnow()
    with sessions() as session, session.begin():
        session.add_all(
            [
                _row(tenant.id, a.id, b.id, ComparisonState.QUEUED),
                _row(tenant.id, a.id, b.id, ComparisonState.QUEUED, ComparisonQueue.BATCH),
                _row(tenant.id, a.id, b.id, ComparisonState.QUEUED, ComparisonQueue.BATCH),
                _row(tenant.id, a.id, b.id, ComparisonState.RUNNING),
                _row(tenant.id, a.id, b.id, ComparisonState.FAILED, error_code="corrupt_image"),
                _row(
                    tenant.id,
                    a.id,
                    b.id,
                    ComparisonState.FAILED,
                    error_code="corrupt_image",
                    updated_at=now - timedelta(hours=3),  # outside the window
                ),
            ]
        )
        for i, total_ms in enumerate((100.0, 200.0, 300.0)):
            session.add(
                _row(
                    tenant.id,
                    a.id,
                    b.id,
                    ComparisonState.SUCCEEDED,
                    finished_at=now - timedelta(seconds=i),
                    result={"timings_ms": {"decode": 10.0 * (i + 1), "total": total_ms}},
                )
            )
    with sessions() as session:
        stats = job_stats(session, failure_window_s=3600)
    assert stats.queued == {"interactive": 1, "batch": 2, "big": 0}
    assert stats.running == 1
    assert stats.failures == {"corrupt_image": 1}
    assert stats.stage_seconds["total"]["0.5"] == pytest.approx(0.2)
    assert stats.stage_seconds["total"]["0.95"] == pytest.approx(0.3)
    assert stats.stage_seconds["decode"]["0.5"] == pytest.approx(0.02)


def test_empty_database(sessions) -> None:
    with sessions() as session:
        stats = job_stats(session, failure_window_s=60)
    assert stats.queued == {"interactive": 0, "batch": 0, "big": 0}
    assert stats.running == 0 and stats.failures == {} and stats.stage_seconds == {}

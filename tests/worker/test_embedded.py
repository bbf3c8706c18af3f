"""The embedded default with a real worker: SQLite, a local directory, the filesystem broker."""

from __future__ import annotations

import pytest

from core.config import LimitsSettings
from core.db.models import ComparisonState
from core.imaging import compare
from core.services import batches, comparisons, images
from core.services.batches import BatchItem
from core.services.options import engine_options
from tests.support.images import corrupt_png, edited_png, png_bytes
from tests.support.tenants import make_tenant
from tests.support.workers import WorkerEnv, new_worker

LIMITS = LimitsSettings()


def test_the_filesystem_broker_runs_jobs_in_a_real_worker(
    embedded_env: WorkerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = embedded_env
    assert env.queue.app.conf.broker_url == "filesystem://"
    monkeypatch.setattr(batches, "DIRECT_ENQUEUE_MAX", 1)  # exercise the fan-out task too
    tenant = make_tenant(env.sessions)
    a_bytes, b_bytes = png_bytes(80, 60, seed=41), edited_png(80, 60, seed=41)
    with env.sessions() as session:
        a, _ = images.store_image(
            session, env.store, tenant_id=tenant.id, data=a_bytes, limits=LIMITS
        )
        b, _ = images.store_image(
            session, env.store, tenant_id=tenant.id, data=b_bytes, limits=LIMITS
        )
        bad, _ = images.store_image(
            session, env.store, tenant_id=tenant.id, data=corrupt_png(), limits=LIMITS
        )
        single = comparisons.create_comparison(
            session,
            env.queue,
            tenant_id=tenant.id,
            image_a_id=a.id,
            image_b_id=b.id,
            options=None,
            metadata=None,
            webhook_url=None,
        )
        created = batches.create_batch(
            session,
            env.queue,
            tenant_id=tenant.id,
            items=[BatchItem(a=a.id, b=b.id), BatchItem(a=a.id, b=bad.id)],
            metadata=None,
            webhook_url=None,
            max_pairs=10,
        )
    worker = new_worker(env, "embedded")
    try:
        row = env.wait_for(single.id, lambda r: r.state.is_final, worker=worker)
        ok_id, bad_id = (o.comparison_id for o in created.items)
        assert ok_id is not None and bad_id is not None
        ok = env.wait_for(ok_id, lambda r: r.state.is_final, worker=worker)
        failed = env.wait_for(bad_id, lambda r: r.state.is_final, worker=worker)
    finally:
        worker.stop()
    expected = compare(a_bytes, b_bytes, engine_options(row.options)).to_dict()
    assert row.state is ComparisonState.SUCCEEDED and row.result is not None
    assert row.result["ssim"] == expected["ssim"] and row.result["verdict"] == expected["verdict"]
    assert env.store.exists(f"heatmaps/{single.id}.png")
    assert ok.state is ComparisonState.SUCCEEDED
    assert (failed.state, failed.error_code, failed.attempt) == (
        ComparisonState.FAILED,
        "corrupt_image",
        1,
    )
    with env.sessions() as session:
        summary = batches.get_batch_summary(session, tenant_id=tenant.id, batch_id=created.batch.id)
    assert summary.batch.completed_at is not None
    assert summary.counts["succeeded"] == summary.counts["failed"] == 1

"""run_comparison, the worker's use case: claim, compare, fenced write, crashes, outages."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.config import LimitsSettings
from core.db.models import (
    Batch,
    Comparison,
    ComparisonState,
    Image,
    Tenant,
    WebhookEvent,
    utcnow,
)
from core.imaging import compare
from core.services import comparisons, lifecycle, runs
from core.services.errors import Unavailable
from core.services.lifecycle import Claim
from core.services.options import engine_options, validate_options
from core.services.runs import _drop_heatmap_if_canceled
from core.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.support.comparisons import add_comparison, comparison_row
from tests.support.images import corrupt_png, edited_png, png_bytes

SessionFactory = sessionmaker[Session]


def _claim(
    sessions: SessionFactory,
    cid: uuid.UUID,
    *,
    max_crashes: int,
    lease_s: float,
    redelivered: bool | None,
) -> Claim | None:
    """The worker's first step alone (``lifecycle.claim`` in its own transaction)."""
    with sessions.begin() as session:
        held, _ = lifecycle.claim(
            session, cid, max_crashes=max_crashes, lease_s=lease_s, redelivered=redelivered
        )
    return held


def _finish(sessions: SessionFactory, claim: Claim, values: dict[str, Any]) -> bool:
    """A worker's final write (``lifecycle.succeed`` or ``fail`` by ``values["state"]``);
    True if its attempt still held."""
    with sessions.begin() as session:
        if values["state"] is ComparisonState.SUCCEEDED:
            after = lifecycle.succeed(session, claim, result={}, heatmap_key="heatmaps/x.png")
        else:
            code = values.get("error_code", "late")
            after = lifecycle.fail(session, claim, code=code, message=code)
    return after is not None


def test_runs_to_succeeded_with_the_engine_result(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> None:
    a, b = png_bytes(64, 48, seed=1), edited_png(64, 48, seed=1)
    options = {"mode": "pixel", "ignore": [[0, 0, 8, 8]], "tolerance": 0.05}
    cid = add_comparison(sessions, store, tenant, a=a, b=b, options=options)
    runs.run_comparison(sessions, store, comparison_id=cid, max_crashes=3)
    row = comparison_row(sessions, cid)
    # The reference: the engine called directly on the same bytes and options.
    expected = compare(a, b, engine_options(validate_options(options)))
    assert row.state is ComparisonState.SUCCEEDED
    assert row.result is not None
    reference = expected.to_dict()
    for key in ("ssim", "psnr", "changed_ratio", "histogram_similarity", "verdict", "regions"):
        assert row.result[key] == reference[key], key
    assert row.result["ignored"] == [[0, 0, 8, 8]]
    assert row.heatmap_key == f"heatmaps/{cid}.png"
    assert store.get(row.heatmap_key) == expected.heatmap_png
    assert (row.attempt, row.crash_count, row.error_code) == (1, 0, None)
    assert row.started_at is not None and row.finished_at is not None
    assert row.lease_expires_at is None
    # Running it again (a duplicate message) changes nothing.
    runs.run_comparison(sessions, store, comparison_id=cid, max_crashes=3)
    again = comparison_row(sessions, cid)
    assert (again.attempt, again.updated_at, again.result) == (1, row.updated_at, row.result)


@pytest.mark.parametrize("returning", [True, False])
def test_the_final_write_with_and_without_returning(
    sessions: SessionFactory,
    store: ObjectStore,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    returning: bool,
) -> None:
    # Without UPDATE ... RETURNING (SQLite before 3.35) the outbox reads the row itself: the
    # same outcome and the same event either way.
    dialect = sessions.kw["bind"].dialect
    monkeypatch.setattr(dialect, "update_returning", returning)
    cid = add_comparison(
        sessions,
        store,
        tenant,
        a=png_bytes(64, 48, seed=4),
        b=edited_png(64, 48, seed=4),
        webhook_url="https://hooks.example.com/in",
    )
    runs.run_comparison(sessions, store, comparison_id=cid, max_crashes=3)
    row = comparison_row(sessions, cid)
    assert row.state is ComparisonState.SUCCEEDED and row.result is not None
    with sessions() as session:
        event = session.scalars(sa.select(WebhookEvent).where(WebhookEvent.subject_id == cid)).one()
    assert event.data["state"] == "succeeded"
    assert event.data["result"]["verdict"] == row.result["verdict"]
    # A superseded attempt writes nothing on either path.
    stale = Claim(comparison_id=cid, attempt=99, batch_id=None, key_a="", key_b="", options={})
    assert _finish(sessions, stale, {"state": ComparisonState.FAILED}) is False


def test_the_engine_decodes_under_the_api_limits(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> None:
    # The worker passes settings.limits to the engine: a pair over the configured pixel limit
    # (64 x 48 = 3,072 pixels here) fails with the engine's code, not with a default limit.
    cid = add_comparison(sessions, store, tenant, a=png_bytes(64, 48, seed=3), b=png_bytes(64, 48))
    small = LimitsSettings(max_pixels=3_000)
    runs.run_comparison(sessions, store, comparison_id=cid, max_crashes=3, limits=small)
    row = comparison_row(sessions, cid)
    assert (row.state, row.error_code) == (ComparisonState.FAILED, "image_too_large")
    options = engine_options({}, LimitsSettings(max_pixels=7, max_upload_bytes=9))
    assert (options.max_pixels, options.max_bytes) == (7, 9)
    default = engine_options({})
    assert default.max_pixels == LimitsSettings().max_pixels
    assert default.max_bytes == LimitsSettings().max_upload_bytes


@pytest.mark.parametrize(
    ("a", "b", "options", "code"),
    [
        (png_bytes(64, 48), corrupt_png(64, 48), None, "corrupt_image"),
        (png_bytes(64, 48), png_bytes(32, 32), {"mode": "pixel"}, "size_mismatch"),
    ],
)
def test_engine_errors_fail_for_good(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    a: bytes,
    b: bytes,
    options: dict[str, Any] | None,
    code: str,
) -> None:
    cid = add_comparison(sessions, local_store, tenant, a=a, b=b, options=options)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    row = comparison_row(sessions, cid)
    assert (row.state, row.error_code, row.attempt) == (ComparisonState.FAILED, code, 1)
    assert row.error_message and row.result is None
    assert not local_store.exists(f"heatmaps/{cid}.png")


def test_missing_image_bytes_fail(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    b = edited_png(64, 48, seed=4)
    cid = add_comparison(sessions, local_store, tenant, b=b)
    row = comparison_row(sessions, cid)
    with sessions() as session:
        key = session.get_one(Image, row.image_b_id).storage_key
    local_store.delete(key)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    assert comparison_row(sessions, cid).error_code == "image_missing"


def test_unknown_final_and_canceled_jobs_are_left_alone(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    runs.run_comparison(sessions, local_store, comparison_id=uuid.uuid4(), max_crashes=3)
    cid = add_comparison(sessions, local_store, tenant, state=ComparisonState.CANCELED)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    row = comparison_row(sessions, cid)
    assert (row.state, row.attempt) == (ComparisonState.CANCELED, 0)


def test_a_stale_attempt_cannot_overwrite_a_newer_one(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    stale = _claim(sessions, cid, max_crashes=3, lease_s=60, redelivered=None)
    assert stale is not None and stale.attempt == 1
    # The broker gives the message back (the first worker was taken for lost): attempt 2 wins.
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=True)
    row = comparison_row(sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.SUCCEEDED, 2, 1)
    # The first worker finishes late: its write is refused.
    written = _finish(
        sessions,
        stale,
        {"state": ComparisonState.FAILED, "error_code": "late", "finished_at": utcnow()},
    )
    assert not written
    after = comparison_row(sessions, cid)
    assert (after.state, after.error_code, after.result) == (
        ComparisonState.SUCCEEDED,
        None,
        row.result,
    )


def test_a_canceled_running_job_discards_the_workers_outcome(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    claim = _claim(sessions, cid, max_crashes=3, lease_s=60, redelivered=None)
    assert claim is not None
    with sessions() as session:
        comparisons.delete_comparison(session, local_store, tenant_id=tenant.id, comparison_id=cid)
    assert not _finish(sessions, claim, {"state": ComparisonState.SUCCEEDED})
    assert comparison_row(sessions, cid).state is ComparisonState.CANCELED
    # The heatmap it wrote before learning that is removed, not left behind.
    key = comparisons.HEATMAP_KEY.format(comparison_id=cid)
    local_store.put(key, b"png")
    _drop_heatmap_if_canceled(sessions, local_store, claim, key)
    assert not local_store.exists(key)


def test_a_superseded_attempt_leaves_the_newer_heatmap(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    stale = _claim(sessions, cid, max_crashes=3, lease_s=60, redelivered=None)
    assert stale is not None
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=True)
    key = comparisons.HEATMAP_KEY.format(comparison_id=cid)
    _drop_heatmap_if_canceled(sessions, local_store, stale, key)
    assert local_store.exists(key)


def _set_running(
    sessions: SessionFactory, cid: uuid.UUID, *, lease_s: float, **values: Any
) -> None:
    now = utcnow()
    with sessions() as session:
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == cid)
            .values(
                state=ComparisonState.RUNNING,
                started_at=now,
                lease_expires_at=now + timedelta(seconds=lease_s),
                **values,
            )
        )
        session.commit()


@pytest.mark.parametrize("redelivered", [None, True])
def test_a_job_that_kills_its_worker_three_times_ends_worker_crashed(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    redelivered: bool | None,
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    # Attempt 1 dies (row left running), attempt 2 dies, attempt 3 dies: the fourth delivery
    # ends the job.
    for attempt in (1, 2, 3):
        claim = _claim(sessions, cid, max_crashes=3, lease_s=60, redelivered=redelivered)
        assert claim is not None and claim.attempt == attempt
        assert comparison_row(sessions, cid).crash_count == attempt - 1
    runs.run_comparison(
        sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=redelivered
    )
    row = comparison_row(sessions, cid)
    assert (row.state, row.error_code, row.crash_count, row.attempt) == (
        ComparisonState.FAILED,
        "worker_crashed",
        3,
        3,
    )
    assert row.finished_at is not None and row.lease_expires_at is None


def test_a_duplicate_message_does_not_take_a_live_workers_job(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    _set_running(sessions, cid, lease_s=60, attempt=1)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=False)
    row = comparison_row(sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.RUNNING, 1, 0)
    # Once the lease is gone, the same first-delivery message takes over (a crash).
    _set_running(sessions, cid, lease_s=-1)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=False)
    row = comparison_row(sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.SUCCEEDED, 2, 1)


def test_storage_outage_releases_the_claim_and_raises_unavailable(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    dead_s3_store: S3ObjectStore,
    tenant: Tenant,
) -> None:
    cid = add_comparison(sessions, local_store, tenant)
    with pytest.raises(Unavailable):
        runs.run_comparison(sessions, dead_s3_store, comparison_id=cid, max_crashes=3)
    row = comparison_row(sessions, cid)
    # Given back: the retry claims it normally (no crash counted), and the run that could not
    # read its images is not counted as an attempt (issue 11: attempts count real runs).
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.QUEUED, 0, 0)
    assert row.lease_expires_at is None
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=False)
    row = comparison_row(sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.SUCCEEDED, 1, 0)


def _batch(sessions: SessionFactory, tenant: Tenant, total: int) -> uuid.UUID:
    batch_id = uuid.uuid4()
    with sessions() as session:
        session.add(Batch(id=batch_id, tenant_id=tenant.id, total=total))
        session.commit()
    return batch_id


def _completed_at(sessions: SessionFactory, batch_id: uuid.UUID) -> Any:
    with sessions() as session:
        return session.get_one(Batch, batch_id).completed_at


def test_the_last_final_comparison_completes_its_batch_once(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    batch_id = _batch(sessions, tenant, 3)
    ok = add_comparison(sessions, local_store, tenant, batch_id=batch_id)
    bad = add_comparison(sessions, local_store, tenant, batch_id=batch_id, b=corrupt_png())
    cancel = add_comparison(sessions, local_store, tenant, batch_id=batch_id)
    runs.run_comparison(sessions, local_store, comparison_id=ok, max_crashes=3)
    runs.run_comparison(sessions, local_store, comparison_id=bad, max_crashes=3)
    assert _completed_at(sessions, batch_id) is None
    with sessions() as session:
        comparisons.delete_comparison(
            session, local_store, tenant_id=tenant.id, comparison_id=cancel
        )
    completed = _completed_at(sessions, batch_id)
    assert completed is not None
    # Deleting a finished comparison afterwards does not move the completion time.
    with sessions() as session:
        comparisons.delete_comparison(session, local_store, tenant_id=tenant.id, comparison_id=ok)
    assert _completed_at(sessions, batch_id) == completed


def test_concurrent_finishers_complete_the_batch(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    batch_id = _batch(sessions, tenant, 6)
    ids = [add_comparison(sessions, local_store, tenant, batch_id=batch_id) for _ in range(6)]
    errors: list[BaseException] = []

    def run(chunk: list[uuid.UUID]) -> None:
        try:
            for cid in chunk:
                runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ids[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(comparison_row(sessions, cid).state is ComparisonState.SUCCEEDED for cid in ids)
    assert _completed_at(sessions, batch_id) is not None

"""Comparisons: options, create (commit then enqueue), read, list, cancel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Comparison, ComparisonQueue, ComparisonState, Tenant
from core.imaging.options import DEFAULT_TOLERANCE
from core.services import comparisons, images, runs
from core.services.errors import Conflict, InvalidRequest, NotFound
from core.services.jobqueue import CeleryJobQueue
from core.services.options import engine_options, validate_options
from core.services.tasknames import QUEUE_INTERACTIVE, RUN_COMPARISON
from core.storage import LocalObjectStore
from tests.support.brokers import redis_messages
from tests.support.images import edited_png, png_bytes
from tests.support.tenants import add_image

SessionFactory = sessionmaker[Session]


# -- options -------------------------------------------------------------------------------


def test_default_options_are_filled_in() -> None:
    assert validate_options(None) == {
        "mode": "auto",
        "ignore": [],
        "tolerance": DEFAULT_TOLERANCE,
        "antialiasing": True,
        "fail_under": None,
    }


def test_options_are_normalised_and_mapped_onto_the_engine() -> None:
    options = validate_options(
        {
            "mode": "align",
            "ignore": [[1, 2, 3, 4], (5, -6, 7, 8)],
            "tolerance": 0,
            "antialiasing": False,
            "fail_under": 1,
        }
    )
    assert options == {
        "mode": "align",
        "ignore": [[1, 2, 3, 4], [5, -6, 7, 8]],
        "tolerance": 0.0,
        "antialiasing": False,
        "fail_under": 1.0,
    }
    engine = engine_options(options)
    assert (engine.mode, engine.ignore, engine.tolerance, engine.antialiasing) == (
        "align",
        ((1, 2, 3, 4), (5, -6, 7, 8)),
        0.0,
        False,
    )
    # Options stored before the option existed keep the engine's default.
    assert engine_options({"mode": "auto"}).antialiasing is True
    assert engine.preview_max_side is None


@pytest.mark.parametrize(
    "options",
    [
        [],
        {"colour": "red"},
        {"mode": "fuzzy"},
        {"mode": 1},
        {"tolerance": 1.0},
        {"tolerance": -0.1},
        {"tolerance": "0.1"},
        {"tolerance": True},
        {"tolerance": float("nan")},
        {"antialiasing": "no"},
        {"antialiasing": 0},
        {"fail_under": 1.5},
        {"fail_under": -0.01},
        {"fail_under": "98%"},
        {"ignore": "0,0,1,1"},
        {"ignore": [[0, 0, 1]]},
        {"ignore": [[0, 0, 0, 5]]},
        {"ignore": [[0, 0, 5, -1]]},
        {"ignore": [[0.5, 0, 5, 5]]},
        {"ignore": [[0, 0, True, 5]]},
        {"ignore": [[0, 0, 1, 1]] * 1001},
    ],
)
def test_bad_options_are_refused(options: Any) -> None:
    with pytest.raises(InvalidRequest):
        validate_options(options)


# -- create, get ---------------------------------------------------------------------------


def _pair(
    sessions: SessionFactory, store: LocalObjectStore, tenant: Tenant
) -> tuple[uuid.UUID, uuid.UUID]:
    a = add_image(sessions, store, tenant.id, png_bytes(64, 48, seed=1))
    b = add_image(sessions, store, tenant.id, edited_png(64, 48, seed=1))
    return a.id, b.id


def test_create_commits_then_enqueues_by_name(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    queue: CeleryJobQueue,
    redis_client: redis.Redis,
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    with sessions() as session:
        created = comparisons.create_comparison(
            session,
            queue,
            tenant_id=tenant.id,
            image_a_id=a,
            image_b_id=b,
            options={"mode": "pixel", "fail_under": 0.9},
            metadata={"build": 42},
            webhook_url="https://hooks.example/diffall",
        )
    with sessions() as session:  # committed: visible to another session
        row = comparisons.get_comparison(session, tenant_id=tenant.id, comparison_id=created.id)
    assert row.state is ComparisonState.QUEUED and row.queue is ComparisonQueue.INTERACTIVE
    assert row.options["mode"] == "pixel" and row.options["fail_under"] == 0.9
    assert row.client_metadata == {"build": 42}
    assert row.webhook_url == "https://hooks.example/diffall"
    assert row.attempt == 0 and row.enqueued_at is not None
    messages = redis_messages(redis_client, QUEUE_INTERACTIVE)
    assert [(m.task, m.args) for m in messages] == [(RUN_COMPARISON, [str(created.id)])]


def test_create_checks_the_images(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    other_tenant: Tenant,
    queue: CeleryJobQueue,
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    theirs = add_image(sessions, local_store, other_tenant.id, png_bytes(32, 32, seed=9))
    with sessions() as session:
        pending = images.presign_upload(
            session, local_store, tenant_id=tenant.id, public_base_url="http://x", expires_s=60
        ).image
        kwargs: dict[str, Any] = {"options": None, "metadata": None, "webhook_url": None}
        with pytest.raises(NotFound):
            comparisons.create_comparison(
                session, queue, tenant_id=tenant.id, image_a_id=a, image_b_id=theirs.id, **kwargs
            )
        with pytest.raises(NotFound):
            comparisons.create_comparison(
                session,
                queue,
                tenant_id=tenant.id,
                image_a_id=uuid.uuid4(),
                image_b_id=b,
                **kwargs,
            )
        with pytest.raises(Conflict) as not_ready:
            comparisons.create_comparison(
                session,
                queue,
                tenant_id=tenant.id,
                image_a_id=a,
                image_b_id=pending.id,
                **kwargs,
            )
        assert not_ready.value.code == "image_not_ready"
        for bad in ({"metadata": ["a"]}, {"webhook_url": "ftp://x"}, {"options": {"mode": "?"}}):
            with pytest.raises(InvalidRequest):
                comparisons.create_comparison(
                    session,
                    queue,
                    tenant_id=tenant.id,
                    image_a_id=a,
                    image_b_id=b,
                    **{**kwargs, **bad},
                )
        assert session.scalar(sa.select(sa.func.count()).select_from(Comparison)) == 0


def test_create_survives_a_broker_outage(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    dead_queue: CeleryJobQueue,
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    with sessions() as session:
        created = comparisons.create_comparison(
            session,
            dead_queue,
            tenant_id=tenant.id,
            image_a_id=a,
            image_b_id=b,
            options=None,
            metadata=None,
            webhook_url=None,
        )
    with sessions() as session:
        row = session.get_one(Comparison, created.id)
    # Left queued and marked unsent: the next sweep sends it.
    assert row.state is ComparisonState.QUEUED and row.enqueued_at is None


def test_get_is_tenant_scoped(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    other_tenant: Tenant,
    queue: CeleryJobQueue,
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    with sessions() as session:
        created = comparisons.create_comparison(
            session,
            queue,
            tenant_id=tenant.id,
            image_a_id=a,
            image_b_id=b,
            options=None,
            metadata=None,
            webhook_url=None,
        )
        with pytest.raises(NotFound):
            comparisons.get_comparison(session, tenant_id=other_tenant.id, comparison_id=created.id)
        with pytest.raises(NotFound):
            comparisons.get_comparison(session, tenant_id=tenant.id, comparison_id=uuid.uuid4())


# -- list ----------------------------------------------------------------------------------


def _insert_rows(
    sessions: SessionFactory,
    tenant: Tenant,
    a: uuid.UUID,
    b: uuid.UUID,
    times: list[datetime],
    **values: Any,
) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in times]
    with sessions() as session:
        session.execute(
            sa.insert(Comparison),
            [
                {
                    "id": i,
                    "tenant_id": tenant.id,
                    "image_a_id": a,
                    "image_b_id": b,
                    "created_at": t,
                    "updated_at": t,
                    **values,
                }
                for i, t in zip(ids, times, strict=True)
            ],
        )
        session.commit()
    return ids


def test_list_pages_newest_first_without_gaps_or_repeats(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    base = datetime(2024, 5, 1, 12, tzinfo=UTC)
    # Several rows share a created_at: the id breaks ties.
    times = [base + timedelta(seconds=s) for s in (0, 1, 1, 1, 2, 3, 3, 4)]
    ids = _insert_rows(sessions, tenant, a, b, times)
    theirs_a = add_image(sessions, local_store, other_tenant.id, png_bytes(32, 32, seed=2))
    _insert_rows(sessions, other_tenant, theirs_a.id, theirs_a.id, [base])
    expected = [
        i for _, i in sorted(zip(times, ids, strict=True), key=lambda p: (p[0], p[1]), reverse=True)
    ]
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    with sessions() as session:
        while True:
            page = comparisons.list_comparisons(
                session, tenant_id=tenant.id, cursor=cursor, limit=3
            )
            seen += [row.id for row in page.items]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == expected and pages == 3


def test_list_filters(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    base = datetime(2024, 5, 1, 12, tzinfo=UTC)
    queued = _insert_rows(sessions, tenant, a, b, [base, base + timedelta(hours=1)])
    failed = _insert_rows(sessions, tenant, a, b, [base + timedelta(hours=2)], state="failed")
    with sessions() as session:

        def ids(**filters: Any) -> set[uuid.UUID]:
            page = comparisons.list_comparisons(session, tenant_id=tenant.id, **filters)
            return {row.id for row in page.items}

        assert ids(state=ComparisonState.FAILED) == set(failed)
        assert ids(state=ComparisonState.QUEUED) == set(queued)
        assert ids(created_after=base + timedelta(hours=1)) == {queued[1], failed[0]}
        assert ids(created_before=base + timedelta(hours=1)) == {queued[0]}
        assert ids(batch_id=uuid.uuid4()) == set()
        for bad in (
            {"limit": 0},
            {"limit": 101},
            {"cursor": "not-a-cursor"},
            {"cursor": "W10"},
            {"created_after": datetime(2024, 1, 1)},  # naive
        ):
            with pytest.raises(InvalidRequest):
                comparisons.list_comparisons(session, tenant_id=tenant.id, **bad)


# -- delete --------------------------------------------------------------------------------


def test_delete_cancels_a_queued_comparison_and_is_idempotent(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    (cid,) = _insert_rows(sessions, tenant, a, b, [datetime.now(UTC)])
    with sessions() as session:
        with pytest.raises(NotFound):
            comparisons.delete_comparison(
                session, local_store, tenant_id=other_tenant.id, comparison_id=cid
            )
        row = comparisons.delete_comparison(
            session, local_store, tenant_id=tenant.id, comparison_id=cid
        )
        again = comparisons.delete_comparison(
            session, local_store, tenant_id=tenant.id, comparison_id=cid
        )
    assert row.state is again.state is ComparisonState.CANCELED
    assert row.finished_at is not None


def test_delete_removes_the_result_and_heatmap_of_a_finished_comparison(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    a, b = _pair(sessions, local_store, tenant)
    (cid,) = _insert_rows(sessions, tenant, a, b, [datetime.now(UTC)])
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    key = comparisons.HEATMAP_KEY.format(comparison_id=cid)
    assert local_store.exists(key)
    with sessions() as session:
        row = comparisons.delete_comparison(
            session, local_store, tenant_id=tenant.id, comparison_id=cid
        )
    assert row.state is ComparisonState.CANCELED
    assert row.result is None and row.heatmap_key is None
    assert not local_store.exists(key)

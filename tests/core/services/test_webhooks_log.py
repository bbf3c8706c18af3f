"""The tenant-wide delivery log: deliveries to endpoints and to ad-hoc ``webhook_url`` targets.

Real databases (SQLite and PostgreSQL through ``sessions``). Ad-hoc deliveries are written by the
outbox like in production: a comparison (or a batch) with a ``webhook_url`` ends, and its event
gets one delivery per target; endpoint deliveries come from pings.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Batch,
    ComparisonState,
    Tenant,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.services import runs, webhooks
from core.services.errors import Conflict, InvalidRequest, NotFound
from core.services.webhooks.dispatch import dispatch_due
from core.storage import LocalObjectStore
from tests.support.comparisons import add_comparison
from tests.support.receivers import InlineQueue
from tests.support.webhooks import (
    HOOK,
    POLICY,
    add_endpoint,
    add_ping,
    deliveries_where,
    events_where,
)

SessionFactory = sessionmaker[Session]

ADHOC = "http://127.0.0.1:9/adhoc"


def _ad_hoc(
    sessions: SessionFactory,
    store: LocalObjectStore,
    tenant: Tenant,
    url: str = ADHOC,
) -> tuple[uuid.UUID, uuid.UUID]:
    """A succeeded comparison with a ``webhook_url`` and its event: (comparison id, delivery id
    of the ad-hoc target)."""
    cid = add_comparison(
        sessions,
        store,
        tenant,
        state=ComparisonState.SUCCEEDED,
        webhook_url=url,
        result={"verdict": "identical", "ssim": 1.0, "regions": []},
        finished_at=utcnow(),
    )
    with sessions() as session:
        event = webhooks.record_comparison_event(session, cid)
        session.commit()
        assert event is not None
        (delivery_id,) = session.scalars(
            sa.select(WebhookDelivery.id).where(
                WebhookDelivery.event_id == event.id, WebhookDelivery.endpoint_id.is_(None)
            )
        )
    return cid, delivery_id


def _batch_completed(sessions: SessionFactory, tenant: Tenant, url: str = ADHOC) -> uuid.UUID:
    """A completed batch with a ``webhook_url`` and its ``batch.completed`` event."""
    batch_id = uuid.uuid4()
    now = utcnow()
    with sessions() as session:
        session.add(
            Batch(
                id=batch_id,
                tenant_id=tenant.id,
                total=0,
                webhook_url=url,
                created_at=now,
                completed_at=now,
            )
        )
        session.flush()
        assert webhooks.record_batch_completed(session, batch_id, now=now) is not None
        session.commit()
    return batch_id


def _set(sessions: SessionFactory, ids: list[uuid.UUID], **values: Any) -> None:
    with sessions.begin() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _fail(sessions: SessionFactory, *ids: uuid.UUID, attempts: int = 3) -> None:
    _set(
        sessions,
        list(ids),
        state=WebhookDeliveryState.FAILED,
        attempt_count=attempts,
        due_at=None,
        claim_id=None,
        finished_at=utcnow(),
    )


def _row(sessions: SessionFactory, ident: uuid.UUID) -> WebhookDelivery:
    with sessions() as session:
        return session.get_one(WebhookDelivery, ident)


def _listed(sessions: SessionFactory, tenant: Tenant, **filters: Any) -> list[uuid.UUID]:
    with sessions() as session:
        page = webhooks.list_deliveries(session, tenant_id=tenant.id, **filters)
    assert page.next_cursor is None
    return [view.delivery.id for view in page.items]


def test_an_ad_hoc_delivery_of_a_comparison_is_in_the_tenant_wide_log(
    sessions: SessionFactory,
    local_store: LocalObjectStore,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    endpoint = add_endpoint(sessions, tenant)
    cid = add_comparison(sessions, local_store, tenant, webhook_url=ADHOC)
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    with sessions() as session:
        page = webhooks.list_deliveries(session, tenant_id=tenant.id)
    assert page.next_cursor is None
    by_target = {view.delivery.endpoint_id: view for view in page.items}
    assert set(by_target) == {None, endpoint.id}
    ad_hoc = by_target[None]
    assert ad_hoc.delivery.url == ADHOC and ad_hoc.subject_id == cid
    assert ad_hoc.event_type == "comparison.succeeded"
    assert ad_hoc.delivery.state is WebhookDeliveryState.PENDING
    assert ad_hoc.delivery.event_id == by_target[endpoint.id].delivery.event_id  # one event
    with sessions() as session:
        one = webhooks.get_delivery(session, tenant_id=tenant.id, delivery_id=ad_hoc.delivery.id)
        assert one.delivery.endpoint_id is None and one.attempts == []
        # The endpoint's own log does not show it, nor can it be reached through the endpoint.
        scoped = webhooks.list_deliveries(session, tenant_id=tenant.id, endpoint_id=endpoint.id)
        assert [v.delivery.endpoint_id for v in scoped.items] == [endpoint.id]
        with pytest.raises(NotFound):
            webhooks.get_delivery(
                session,
                tenant_id=tenant.id,
                endpoint_id=endpoint.id,
                delivery_id=ad_hoc.delivery.id,
            )
        # Another tenant sees none of it.
        assert webhooks.list_deliveries(session, tenant_id=other_tenant.id).items == []
        with pytest.raises(NotFound):
            webhooks.get_delivery(
                session, tenant_id=other_tenant.id, delivery_id=ad_hoc.delivery.id
            )


def test_filters_by_target_subject_event_type_and_state(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant, events=["comparison.succeeded"])
    ping = add_ping(sessions, tenant, endpoint)
    first, first_ad_hoc = _ad_hoc(sessions, local_store, tenant)
    second, second_ad_hoc = _ad_hoc(sessions, local_store, tenant, url=ADHOC + "2")
    batch_id = _batch_completed(sessions, tenant)
    with sessions() as session:
        (batch_ad_hoc,) = session.scalars(
            sa.select(WebhookDelivery.id)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookEvent.subject_id == batch_id)
        )
        first_to_endpoint, second_to_endpoint = (
            session.scalars(
                sa.select(WebhookDelivery.id)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookEvent.subject_id == cid, WebhookDelivery.endpoint_id == endpoint.id)
            ).one()
            for cid in (first, second)
        )
    _fail(sessions, second_ad_hoc)
    ad_hoc = {first_ad_hoc, second_ad_hoc, batch_ad_hoc}
    to_endpoint = {ping, first_to_endpoint, second_to_endpoint}
    assert set(_listed(sessions, tenant)) == ad_hoc | to_endpoint
    assert set(_listed(sessions, tenant, target="ad_hoc")) == ad_hoc
    assert set(_listed(sessions, tenant, target="endpoint")) == to_endpoint
    assert set(_listed(sessions, tenant, subject_id=first)) == {first_ad_hoc, first_to_endpoint}
    assert _listed(sessions, tenant, subject_id=batch_id) == [batch_ad_hoc]
    assert _listed(sessions, tenant, subject_id=first, target="ad_hoc") == [first_ad_hoc]
    assert _listed(sessions, tenant, event_type="batch.completed") == [batch_ad_hoc]
    assert _listed(sessions, tenant, event_type="ping") == [ping]
    assert set(_listed(sessions, tenant, event_type="comparison.succeeded")) == {
        first_ad_hoc,
        second_ad_hoc,
        first_to_endpoint,
        second_to_endpoint,
    }
    assert _listed(sessions, tenant, state="failed") == [second_ad_hoc]
    assert _listed(sessions, tenant, state=WebhookDeliveryState.FAILED, target="endpoint") == []
    assert _listed(sessions, tenant, subject_id=uuid.uuid4()) == []
    # The endpoint-scoped log takes the same filters, within the endpoint.
    assert _listed(sessions, tenant, endpoint_id=endpoint.id, subject_id=second) == [
        second_to_endpoint
    ]
    # Views carry the event's type and subject.
    with sessions() as session:
        view = webhooks.get_delivery(session, tenant_id=tenant.id, delivery_id=batch_ad_hoc)
    assert (view.event_type, view.subject_id) == ("batch.completed", batch_id)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"target": "webhook"}, "unknown delivery target"),
        ({"state": "lost"}, "unknown delivery state"),
        ({"event_type": "comparison.deleted"}, "unknown event type"),
        ({"cursor": "!!"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
    ],
)
def test_bad_filters_are_refused(
    sessions: SessionFactory, tenant: Tenant, filters: dict[str, Any], message: str
) -> None:
    with sessions() as session, pytest.raises(InvalidRequest, match=message):
        webhooks.list_deliveries(session, tenant_id=tenant.id, **filters)


def test_pages_have_no_duplicates_and_no_gaps(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant, events=["batch.completed"])
    pings = [add_ping(sessions, tenant, endpoint) for _ in range(3)]
    batches = [_batch_completed(sessions, tenant) for _ in range(4)]
    _batch_completed(sessions, other_tenant)
    with sessions() as session:
        ids = list(
            session.scalars(
                sa.select(WebhookDelivery.id).where(WebhookDelivery.tenant_id == tenant.id)
            )
        )
    assert len(ids) == len(pings) + 2 * len(batches)  # each batch: its endpoint and ad hoc
    # Ties on created_at (one instant for five of them) are ordered by id.
    instant = utcnow() - timedelta(minutes=1)
    _set(sessions, ids[:5], created_at=instant)
    with sessions() as session:
        expected = [
            row.id
            for row in sorted(
                session.scalars(
                    sa.select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant.id)
                ),
                key=lambda row: (row.created_at, row.id),
                reverse=True,
            )
        ]
    for filters in ({}, {"target": "ad_hoc"}):
        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            with sessions() as session:
                page = webhooks.list_deliveries(
                    session, tenant_id=tenant.id, limit=2, cursor=cursor, **filters
                )
            assert 1 <= len(page.items) <= 2
            seen += [view.delivery.id for view in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        wanted = expected
        if filters:
            wanted = [i for i in expected if _row(sessions, i).endpoint_id is None]
        assert seen == wanted  # newest first, each once


def test_retry_gives_a_failed_ad_hoc_delivery_one_more_attempt(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    _cid, ident = _ad_hoc(sessions, local_store, tenant)
    before = _row(sessions, ident)
    _fail(sessions, ident, attempts=3)
    with sessions() as session:
        with pytest.raises(NotFound):
            webhooks.retry_delivery(session, tenant_id=other_tenant.id, delivery_id=ident)
        retried = webhooks.retry_delivery(session, tenant_id=tenant.id, delivery_id=ident)
    assert retried.state is WebhookDeliveryState.PENDING
    assert retried.max_attempts == 4 and retried.attempt_count == 3
    assert retried.event_id == before.event_id  # the same webhook-id
    assert retried.due_at is not None and retried.finished_at is None
    # Once claimed for sending, it cannot be retried until the attempt ends.
    with sessions() as session:
        dispatch_due(session, InlineQueue(), policy=POLICY, only_ids=[ident])
        with pytest.raises(Conflict) as caught:
            webhooks.retry_delivery(session, tenant_id=tenant.id, delivery_id=ident)
    assert caught.value.code == "delivery_in_progress"
    assert _row(sessions, ident).state is WebhookDeliveryState.SENDING


def test_retry_through_the_tenant_wide_log_checks_the_endpoint(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    endpoint: WebhookEndpoint = add_endpoint(sessions, tenant)
    ident = add_ping(sessions, tenant, endpoint)
    _fail(sessions, ident, attempts=1)
    with sessions() as session:
        retried = webhooks.retry_delivery(session, tenant_id=tenant.id, delivery_id=ident)
        assert retried.max_attempts == 2 and retried.endpoint_id == endpoint.id
    _fail(sessions, ident, attempts=2)
    with sessions() as session:
        webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, enabled=False
        )
        with pytest.raises(Conflict) as caught:
            webhooks.retry_delivery(session, tenant_id=tenant.id, delivery_id=ident)
    assert caught.value.code == "webhook_disabled"
    assert _row(sessions, ident).state is WebhookDeliveryState.FAILED


def test_recover_picks_only_failed_ad_hoc_deliveries_since_the_time(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant, url=HOOK)
    to_endpoint = add_ping(sessions, tenant, endpoint)
    first, failed = _ad_hoc(sessions, local_store, tenant)
    _second, also_failed = _ad_hoc(sessions, local_store, tenant)
    _third, too_old = _ad_hoc(sessions, local_store, tenant)
    _fourth, succeeded = _ad_hoc(sessions, local_store, tenant)
    _theirs, theirs = _ad_hoc(sessions, local_store, other_tenant)
    cutoff = utcnow()
    _fail(sessions, failed, also_failed, too_old, to_endpoint, theirs)
    _set(sessions, [too_old], created_at=cutoff - timedelta(hours=2))
    _set(
        sessions,
        [succeeded],
        state=WebhookDeliveryState.SUCCEEDED,
        attempt_count=1,
        due_at=None,
        finished_at=cutoff,
    )
    since = cutoff - timedelta(hours=1)
    with sessions() as session:
        with pytest.raises(InvalidRequest, match="time zone"):
            webhooks.recover_deliveries(
                session, tenant_id=tenant.id, endpoint_id=None, since=datetime(2024, 1, 1)
            )
        only_first = webhooks.recover_deliveries(
            session, tenant_id=tenant.id, endpoint_id=None, since=since, subject_id=first
        )
        assert only_first == [failed]
        rest = webhooks.recover_deliveries(
            session, tenant_id=tenant.id, endpoint_id=None, since=since
        )
    assert rest == [also_failed]  # the first is pending again already
    for ident in (failed, also_failed):
        row = _row(sessions, ident)
        assert row.state is WebhookDeliveryState.PENDING and row.max_attempts == 4
    for ident in (too_old, to_endpoint, theirs):
        assert _row(sessions, ident).state is WebhookDeliveryState.FAILED
    assert _row(sessions, succeeded).state is WebhookDeliveryState.SUCCEEDED
    # The endpoint's recover still covers its own deliveries only.
    with sessions() as session:
        mine = webhooks.recover_deliveries(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, since=since
        )
    assert mine == [to_endpoint]
    with sessions() as session, pytest.raises(NotFound):
        webhooks.recover_deliveries(
            session, tenant_id=other_tenant.id, endpoint_id=endpoint.id, since=since
        )


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
    rows = {d.id: d for d in deliveries_where(sessions)}
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
    (row,) = deliveries_where(sessions)
    assert row.state is WebhookDeliveryState.FAILED and row.last_error == "endpoint_disabled"
    # A manual disable is not an endpoint.disabled event (that one reports automatic ones).
    assert events_where(sessions, type=WebhookEventType.ENDPOINT_DISABLED) == []

"""The webhook dispatcher: due deliveries claimed once (locked rows skipped on PostgreSQL),
lost attempts recorded and sent again; the retry schedule and policy.

Real databases (SQLite and PostgreSQL through ``sessions``); the HTTP side is in
``test_webhooks_delivery.py``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    utcnow,
)
from core.services.webhooks.dispatch import dispatch_due
from core.services.webhooks.policy import DeliveryPolicy, parse_retry_after, retry_delay_s
from tests.support.receivers import InlineQueue
from tests.support.tenants import make_tenant
from tests.support.webhooks import (
    POLICY,
    add_endpoint,
    add_ping,
    deliveries_where,
)

SessionFactory = sessionmaker[Session]


def test_dispatcher_claims_due_deliveries_once(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant)
    due = [add_ping(sessions, tenant, endpoint) for _ in range(3)]
    later = add_ping(sessions, tenant, endpoint)
    with sessions.begin() as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == later)
            .values(due_at=utcnow() + timedelta(minutes=5))
        )
    queue = InlineQueue()
    with sessions() as session:
        report = dispatch_due(session, queue, policy=POLICY)
    assert report.sent == 3 and sorted(d for d, _ in queue.sent) == sorted(due)
    claims = {c for _, c in queue.sent}
    assert len(claims) == 1
    rows = {d.id: d for d in deliveries_where(sessions)}
    for ident in due:
        assert rows[ident].state is WebhookDeliveryState.SENDING
        assert rows[ident].claim_id in claims
    assert rows[later].state is WebhookDeliveryState.PENDING
    # Claimed rows are not due again until their lease expires.
    with sessions() as session:
        assert dispatch_due(session, InlineQueue(), policy=POLICY).sent == 0
    with sessions() as session:
        again = InlineQueue()
        report = dispatch_due(session, again, policy=POLICY, now=utcnow() + timedelta(seconds=61))
    assert report.sent == 3 and {c for _, c in again.sent}.isdisjoint(claims)


def test_dispatcher_only_ids(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant)
    first, second = add_ping(sessions, tenant, endpoint), add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        assert dispatch_due(session, queue, policy=POLICY, only_ids=[]).sent == 0
        assert dispatch_due(session, queue, policy=POLICY, only_ids=[second]).sent == 1
    assert [d for d, _ in queue.sent] == [second]
    assert {d.id: d.state for d in deliveries_where(sessions)}[
        first
    ] is WebhookDeliveryState.PENDING


def test_dispatchers_skip_rows_locked_by_another_on_postgresql(
    pg_sessions: SessionFactory,
) -> None:
    sessions = pg_sessions
    tenant = make_tenant(sessions, "acme")
    endpoint = add_endpoint(sessions, tenant)
    ids = [add_ping(sessions, tenant, endpoint) for _ in range(4)]
    locker = sessions()
    try:
        # Another dispatcher's open transaction holds two rows.
        locker.execute(
            sa.select(WebhookDelivery.id).where(WebhookDelivery.id.in_(ids[:2])).with_for_update()
        ).all()
        queue = InlineQueue()
        with sessions() as session:
            report = dispatch_due(session, queue, policy=POLICY)
        assert report.sent == 2 and sorted(d for d, _ in queue.sent) == sorted(ids[2:])
    finally:
        locker.rollback()
        locker.close()


def test_a_lost_attempt_is_recorded_and_sent_again(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    from core.services.webhooks.delivery import _begin_attempt

    endpoint = add_endpoint(sessions, tenant)
    ident = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=POLICY)
    ((delivery_id, claim),) = queue.sent
    # The task starts posting, then its worker dies (nothing records the outcome).
    prepared = _begin_attempt(sessions, delivery_id, claim, POLICY)
    assert prepared is not None and prepared.number == 1
    later = utcnow() + timedelta(seconds=POLICY.lease_s + 1)
    again = InlineQueue()
    with sessions() as session:
        report = dispatch_due(session, again, policy=POLICY, now=later)
    assert report.lost == 1 and report.sent == 1
    with sessions() as session:
        attempts = list(session.scalars(sa.select(WebhookAttempt)))
        row = session.get_one(WebhookDelivery, ident)
    assert [(a.number, a.error_code) for a in attempts] == [(1, "worker_lost")]
    assert row.state is WebhookDeliveryState.SENDING and row.attempt_count == 1
    # The first claim is stale now: its message does nothing.
    assert _begin_attempt(sessions, delivery_id, claim, POLICY) is None


def test_a_lost_last_attempt_ends_failed(sessions: SessionFactory, tenant: Tenant) -> None:
    from core.services.webhooks.delivery import _begin_attempt

    policy = DeliveryPolicy(schedule_s=(0.0,), jitter=0.0, lease_s=60.0)
    endpoint = add_endpoint(sessions, tenant)
    ident = add_ping(sessions, tenant, endpoint)
    queue = InlineQueue()
    with sessions() as session:
        dispatch_due(session, queue, policy=policy)
    assert _begin_attempt(sessions, ident, queue.sent[0][1], policy) is not None
    with sessions() as session:
        report = dispatch_due(
            session, InlineQueue(), policy=policy, now=utcnow() + timedelta(seconds=61)
        )
    assert report.gave_up == 1 and report.sent == 0
    (row,) = deliveries_where(sessions)
    assert row.state is WebhookDeliveryState.FAILED and row.last_error == "worker_lost"


def test_retry_delay_follows_the_schedule_with_jitter() -> None:
    policy = DeliveryPolicy()  # the default schedule: 0, 5 s, 5 min, 30 min, ... 24 h, +-20 %
    rng = random.Random(1234)
    for attempts_done, base in [(1, 5.0), (2, 300.0), (3, 1800.0), (9, 86400.0), (15, 86400.0)]:
        delays = [retry_delay_s(policy, attempts_done, rng=rng) for _ in range(200)]
        assert min(delays) >= 0.8 * base and max(delays) <= 1.2 * base
        assert max(delays) - min(delays) > 0.2 * base  # the spread is used
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 1) == 5.0
    # Retry-After is a lower bound, capped at 24 h.
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 1, retry_after_s=120.0) == 120.0
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 2, retry_after_s=1.0) == 300.0
    assert retry_delay_s(DeliveryPolicy(jitter=0.0), 1, retry_after_s=1e9) == 86400.0


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(bad, now=now) is None


def test_delivery_policy_from_settings(tmp_path: Any) -> None:
    from tests.support.settings import settings_for

    settings = settings_for(
        tmp_path,
        webhook_allowed_networks="127.0.0.0/8, ::1/128",
        webhooks={"retry_schedule_s": "0,1,2", "timeout_s": 3, "lease_s": 4, "jitter": 0},
    )
    policy = DeliveryPolicy.from_settings(settings)
    assert policy.schedule_s == (0.0, 1.0, 2.0) and policy.max_attempts == 3
    assert policy.timeout_s == 3.0 and policy.lease_s == 4.0 and policy.jitter == 0.0
    assert [str(n) for n in policy.allowed_networks] == ["127.0.0.0/8", "::1/128"]
    assert policy.base_url == settings.api.public_base_url
    defaults = settings_for(tmp_path).webhooks
    assert defaults.retry_schedule_s == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert (defaults.jitter, defaults.timeout_s, defaults.disable_after_s) == (0.2, 15, 432000)
    assert defaults.dispatch_interval_s == 1
    for bad in ({"retry_schedule_s": "5,10"}, {"timeout_s": 30, "lease_s": 20}, {"jitter": 1}):
        with pytest.raises(ValueError):
            settings_for(tmp_path, webhooks=bad)
    with pytest.raises(ValueError, match="CIDR"):
        settings_for(tmp_path, webhook_allowed_networks="127.0.0.1/8")

"""Pre-claimed outbox deliveries: the comparison worker writes its events' deliveries already
claimed and sends their tasks right after its commit, with the dispatcher as the safety net.

Real database (SQLite and PostgreSQL), a real loopback receiver verifying signatures with
``standardwebhooks``.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Tenant,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEventType,
    utcnow,
)
from core.services import runs, webhooks
from core.services.errors import Unavailable
from core.services.lifecycle import AfterCommit
from core.services.webhooks.delivery import deliver
from core.services.webhooks.dispatch import dispatch_due, send_preclaimed
from core.storage import LocalObjectStore
from tests.support.comparisons import add_comparison
from tests.support.receivers import (
    InlineQueue,
    Receiver,
    verify,
)
from tests.support.webhooks import FAST, LOOPBACK

SessionFactory = sessionmaker[Session]

#: The delivery tests' policy: compressed schedule, loopback allowed, a 5 s lease.
POLICY = FAST


class DownQueue:
    """A ``DeliveryQueue`` whose broker is down."""

    def send_delivery(self, delivery_id: uuid.UUID, claim_id: uuid.UUID) -> None:
        raise Unavailable("broker down")


def _deliveries(sessions: SessionFactory) -> list[WebhookDelivery]:
    with sessions() as session:
        return list(session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.url)))


def _run_preclaimed(
    sessions: SessionFactory,
    store: LocalObjectStore,
    tenant: Tenant,
    receiver: Receiver,
    *,
    lease_s: float,
) -> tuple[uuid.UUID, AfterCommit]:
    """An endpoint and an ad-hoc URL; one comparison run with a ``DeliveryClaim``."""
    with sessions() as session:
        webhooks.create_endpoint(
            session,
            tenant_id=tenant.id,
            url=receiver.url("/endpoint"),
            events=[WebhookEventType.COMPARISON_SUCCEEDED.value],
            allowed_networks=LOOPBACK,
        )
    cid = add_comparison(sessions, store, tenant, webhook_url=receiver.url("/adhoc"))
    claim = runs.run_comparison(
        sessions,
        store,
        comparison_id=cid,
        max_crashes=3,
        delivery_claim=webhooks.DeliveryClaim.new(lease_s),
    )
    return cid, claim


def test_deliveries_are_written_claimed_and_sent_after_the_commit(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, receiver: Receiver
) -> None:
    before = utcnow()
    cid, claim = _run_preclaimed(sessions, local_store, tenant, receiver, lease_s=POLICY.lease_s)
    rows = _deliveries(sessions)
    assert sorted(row.id for row in rows) == sorted(claim.delivery_ids)
    assert len(rows) == 2  # the endpoint's and the comparison's own webhook_url
    for row in rows:
        assert row.state == WebhookDeliveryState.SENDING
        assert row.claim_id == claim.claim_id
        assert row.attempt_count == 0 and row.attempt_started_at is None
        assert row.due_at is not None
        lease_end = row.due_at - before
        assert timedelta(seconds=4) < lease_end < timedelta(seconds=10)
    # Already claimed: a dispatcher pass leaves them to the writer.
    with sessions() as session:
        assert dispatch_due(session, InlineQueue(), policy=POLICY).sent == 0
    queue = InlineQueue()
    assert send_preclaimed(queue, claim) == 2
    assert sorted(queue.sent) == sorted((ident, claim.claim_id) for ident in claim.delivery_ids)
    results = queue.drain(sessions, POLICY)
    assert all(r is not None and r.state == WebhookDeliveryState.SUCCEEDED for r in results)
    (request,) = receiver.received("/endpoint")
    with sessions() as session:
        endpoint_secret = webhooks.list_endpoints(session, tenant_id=tenant.id).items[0].secret
        default_secret = webhooks.get_default_secret(session, tenant_id=tenant.id).secret
    assert verify(endpoint_secret, request)["data"]["id"] == str(cid)
    (adhoc,) = receiver.received("/adhoc")
    assert verify(default_secret, adhoc)["data"]["id"] == str(cid)


def test_unsent_preclaimed_delivery_is_dispatched_when_its_lease_ends(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, receiver: Receiver
) -> None:
    # The worker died between its commit and sending the tasks (or the broker was down).
    _, claim = _run_preclaimed(sessions, local_store, tenant, receiver, lease_s=0.3)
    assert send_preclaimed(DownQueue(), claim) == 0
    with sessions() as session:
        assert dispatch_due(session, InlineQueue(), policy=POLICY).sent == 0  # lease held
    time.sleep(0.4)
    queue = InlineQueue()
    with sessions() as session:
        report = dispatch_due(session, queue, policy=POLICY)
    assert report.sent == 2 and report.lost == 0  # no attempt had started: nothing lost
    assert {claim_id for _, claim_id in queue.sent} != {claim.claim_id}
    # A late task of the first claim is a no-op; the dispatcher's claim delivers, once each.
    for ident in claim.delivery_ids:
        assert deliver(sessions, delivery_id=ident, claim_id=claim.claim_id, policy=POLICY) is None
    queue.drain(sessions, POLICY)
    assert len(receiver.received("/endpoint")) == 1
    assert len(receiver.received("/adhoc")) == 1
    assert {row.state for row in _deliveries(sessions)} == {WebhookDeliveryState.SUCCEEDED}


def test_a_task_whose_delivery_never_committed_does_nothing(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, receiver: Receiver
) -> None:
    # The ids are collected as rows are written; a rolled-back write leaves ids without rows.
    # Deleting the committed rows stands for that.
    _, claim = _run_preclaimed(sessions, local_store, tenant, receiver, lease_s=POLICY.lease_s)
    with sessions.begin() as session:
        session.execute(sa.delete(WebhookDelivery))
    queue = InlineQueue()
    assert send_preclaimed(queue, claim) == 2
    assert queue.drain(sessions, POLICY) == [None, None]
    assert receiver.received() == []


def test_without_a_claim_deliveries_are_pending_and_due(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, receiver: Receiver
) -> None:
    cid = add_comparison(sessions, local_store, tenant, webhook_url=receiver.url("/adhoc"))
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    (row,) = _deliveries(sessions)
    assert row.state == WebhookDeliveryState.PENDING and row.claim_id is None


def test_lease_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lease_s"):
        webhooks.DeliveryClaim.new(0)

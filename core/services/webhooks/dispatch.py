"""Webhook dispatch: hand due deliveries to the workers, and the "send it now" use cases.

The schedule lives in the database (``webhook_deliveries.due_at``), never in broker countdowns:

1. The outbox (:mod:`core.services.webhooks.outbox`) writes ``pending`` deliveries, due at once.
2. :func:`dispatch_due` (a periodic task every ``webhooks.dispatch_interval_s``, and right after a
   transaction that wrote deliveries) picks the due rows with ``SELECT ... FOR UPDATE SKIP
   LOCKED`` (PostgreSQL; on SQLite transactions are serialised, so two dispatchers never pick the
   same row), marks them ``sending`` with a fresh ``claim_id`` and a lease
   (``webhooks.lease_s``), commits, then sends one ``diffall.webhooks.deliver`` task per row
   (:mod:`core.services.webhooks.delivery` makes the attempt).
   The comparison worker skips that pass for the events it writes: given an
   ``outbox.DeliveryClaim``, the state machine's transitions write them ``sending`` under a
   claim and lease already and return them, and :func:`send_preclaimed` sends their tasks right
   after the commit.

The API's use cases that make deliveries due (:func:`ping_and_dispatch`,
:func:`retry_and_dispatch`, :func:`recover_and_dispatch`) dispatch them right after their commit
(:func:`dispatch_deliveries`, best effort), so they go out at once; the periodic dispatcher
sends them otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.db.models import WebhookDelivery, WebhookDeliveryState, utcnow
from core.services._common import map_db_errors
from core.services.errors import Unavailable
from core.services.webhooks.delivery import WORKER_LOST, record_lost
from core.services.webhooks.endpoints import create_ping
from core.services.webhooks.log import (
    DeliveryView,
    get_delivery,
    recover_deliveries,
    retry_delivery,
)
from core.services.webhooks.policy import DeliveryPolicy

if TYPE_CHECKING:
    from core.services.lifecycle import AfterCommit

__all__ = [
    "DEFAULT_DISPATCH_LIMIT",
    "DeliveryQueue",
    "DispatchReport",
    "dispatch_deliveries",
    "dispatch_due",
    "ping_and_dispatch",
    "recover_and_dispatch",
    "retry_and_dispatch",
    "send_preclaimed",
]

log = structlog.get_logger(__name__)

#: Most deliveries claimed by one dispatcher pass (a backlog is worked off over several).
DEFAULT_DISPATCH_LIMIT: Final = 500


class DeliveryQueue(Protocol):
    """Hands claimed deliveries to workers."""

    def send_delivery(self, delivery_id: uuid.UUID, claim_id: uuid.UUID) -> None:
        """Send the deliver task of one claimed delivery; ``Unavailable`` if the broker is
        down (the row is re-sent when its lease expires)."""
        ...


@dataclass(frozen=True)
class DispatchReport:
    """What one dispatcher pass did.

    Attributes
    ----------
    sent
        Deliveries claimed and handed to the queue.
    send_failures
        Claimed deliveries whose task could not be sent (re-sent when the lease expires).
    lost
        Claims found expired after their task had started posting (``worker_lost`` recorded).
    gave_up
        Of those, deliveries that had no attempt left and ended ``failed``.
    """

    sent: int = 0
    send_failures: int = 0
    lost: int = 0
    gave_up: int = 0


def dispatch_due(
    session: Session,
    queue: DeliveryQueue,
    *,
    policy: DeliveryPolicy,
    now: datetime | None = None,
    limit: int = DEFAULT_DISPATCH_LIMIT,
    only_ids: Sequence[uuid.UUID] | None = None,
) -> DispatchReport:
    """One dispatcher pass: claim the due deliveries, commit, send one task each.

    Due: ``pending`` rows whose ``due_at`` passed, and ``sending`` rows whose lease expired
    (their task was lost, or its worker died). Rows locked by another dispatcher are skipped
    (``FOR UPDATE SKIP LOCKED``). Each claimed row becomes ``sending`` with this pass's
    ``claim_id`` and ``due_at = now + lease_s``.

    Parameters
    ----------
    session
        A session with no transaction open; committed here.
    queue
        Where to send the deliver tasks.
    policy
        ``lease_s`` and the number of attempts.
    now
        Current time (default: now, UTC).
    limit
        Most rows claimed.
    only_ids
        Claim only these deliveries (when due), e.g. those an API call just created.

    Returns
    -------
    DispatchReport
        Counts of what was done.

    Raises
    ------
    Unavailable
        The database is unavailable (nothing was claimed).
    """
    now = now or utcnow()
    claim_id = uuid.uuid4()
    lost = gave_up = 0
    to_send: list[uuid.UUID] = []
    with map_db_errors("dispatch webhooks"):
        query = sa.select(
            WebhookDelivery.id,
            WebhookDelivery.state,
            WebhookDelivery.attempt_count,
            WebhookDelivery.attempt_started_at,
            WebhookDelivery.max_attempts,
        ).where(
            WebhookDelivery.due_at <= now,
            WebhookDelivery.state.in_((WebhookDeliveryState.PENDING, WebhookDeliveryState.SENDING)),
        )
        if only_ids is not None:
            if not only_ids:
                return DispatchReport()
            query = query.where(WebhookDelivery.id.in_(list(only_ids)))
        rows = session.execute(
            query.order_by(WebhookDelivery.due_at).limit(limit).with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            if row.state == WebhookDeliveryState.SENDING and row.attempt_started_at is not None:
                lost += 1
                record_lost(
                    session, row.id, number=row.attempt_count, started_at=row.attempt_started_at
                )
                log.warning("webhook.worker_lost", delivery_id=str(row.id))
                if row.attempt_count >= (row.max_attempts or policy.max_attempts):
                    gave_up += 1
                    session.execute(
                        sa.update(WebhookDelivery)
                        .where(WebhookDelivery.id == row.id)
                        .values(
                            state=WebhookDeliveryState.FAILED,
                            last_status_code=None,
                            last_error=WORKER_LOST,
                            due_at=None,
                            claim_id=None,
                            attempt_started_at=None,
                            finished_at=now,
                            updated_at=now,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    continue
            to_send.append(row.id)
        for start in range(0, len(to_send), 1000):
            session.execute(
                sa.update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(to_send[start : start + 1000]))
                .values(
                    state=WebhookDeliveryState.SENDING,
                    claim_id=claim_id,
                    due_at=now + timedelta(seconds=policy.lease_s),
                    attempt_started_at=None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
        session.commit()
    failures = 0
    for index, delivery_id in enumerate(to_send):
        try:
            queue.send_delivery(delivery_id, claim_id)
        except Unavailable as exc:
            failures = len(to_send) - index  # the broker is down: the rest would fail too
            log.warning("webhook.dispatch_send_failed", count=failures, error=str(exc))
            break
    report = DispatchReport(
        sent=len(to_send) - failures, send_failures=failures, lost=lost, gave_up=gave_up
    )
    if to_send or lost:
        log.info("webhook.dispatched", **report.__dict__)
    return report


def send_preclaimed(queue: DeliveryQueue, sent: AfterCommit) -> int:
    """Send the tasks of deliveries a state transition wrote pre-claimed (under a
    ``outbox.DeliveryClaim``), after the transaction that wrote them committed: no
    dispatcher pass needed.

    Best effort: if the broker is down, the deliveries stay ``sending`` under the claim and the
    dispatcher re-sends them when the lease (``sent.lease_s``) ends.

    Returns
    -------
    int
        Tasks sent (<= ``len(sent.delivery_ids)``).
    """
    if sent.claim_id is None:
        return 0
    for index, delivery_id in enumerate(sent.delivery_ids):
        try:
            queue.send_delivery(delivery_id, sent.claim_id)
        except Unavailable as exc:
            log.warning(
                "webhook.dispatch_send_failed",
                count=len(sent.delivery_ids) - index,
                error=str(exc),
                retry_after_s=sent.lease_s,
            )
            return index
    return len(sent.delivery_ids)


# -- send now: the API's use cases ------------------------------------------------------------


def dispatch_deliveries(
    session: Session, queue: DeliveryQueue, policy: DeliveryPolicy, ids: Sequence[uuid.UUID]
) -> None:
    """Best effort: send the deliveries just committed now (else the periodic dispatcher does).

    A database or broker outage is logged (``webhook.dispatch_skipped``), never raised: the
    deliveries are committed and due, and the next dispatcher pass sends them.
    """
    if not ids:
        return
    try:
        dispatch_due(session, queue, policy=policy, only_ids=list(ids))
    except Unavailable as exc:
        log.warning("webhook.dispatch_skipped", error=str(exc))


def ping_and_dispatch(
    session: Session,
    queue: DeliveryQueue,
    policy: DeliveryPolicy,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
) -> DeliveryView:
    """Write a ``ping`` event for the endpoint (also when it is disabled), send it at once, and
    return its delivery with its attempts. ``NotFound`` unless the endpoint is the tenant's."""
    delivery = create_ping(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    dispatch_deliveries(session, queue, policy, [delivery.id])
    return get_delivery(
        session, tenant_id=tenant_id, delivery_id=delivery.id, endpoint_id=endpoint_id
    )


def retry_and_dispatch(
    session: Session,
    queue: DeliveryQueue,
    policy: DeliveryPolicy,
    *,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    endpoint_id: uuid.UUID | None = None,
) -> DeliveryView:
    """Retry a delivery (of ``endpoint_id`` when given) once with its original ``webhook-id``
    (:func:`core.services.webhooks.log.retry_delivery`: ``NotFound``, ``Conflict``
    ``delivery_in_progress`` or ``webhook_disabled``), send it at once, and return it."""
    retry_delivery(session, tenant_id=tenant_id, delivery_id=delivery_id, endpoint_id=endpoint_id)
    dispatch_deliveries(session, queue, policy, [delivery_id])
    return get_delivery(
        session, tenant_id=tenant_id, delivery_id=delivery_id, endpoint_id=endpoint_id
    )


def recover_and_dispatch(
    session: Session,
    queue: DeliveryQueue,
    policy: DeliveryPolicy,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID | None,
    since: datetime,
    subject_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Re-send once each ``failed`` delivery of the endpoint (None: each failed ad-hoc one)
    created at or after ``since`` (:func:`core.services.webhooks.log.recover_deliveries`), and
    send them at once. Returns the recovered deliveries' ids."""
    ids = recover_deliveries(
        session,
        tenant_id=tenant_id,
        endpoint_id=endpoint_id,
        since=since,
        subject_id=subject_id,
    )
    dispatch_deliveries(session, queue, policy, ids)
    return ids

"""The webhook delivery log: every delivery with its attempts, read and sent again.

Every delivery, to an endpoint or to an ad-hoc ``webhook_url``, is listed with its attempts
(:func:`list_deliveries`, :func:`get_delivery`: the tenant's, or one endpoint's) and can be sent
again once with its original ``webhook-id`` (:func:`retry_delivery`; :func:`recover_deliveries`
for every ``failed`` one of an endpoint, or every failed ad-hoc one, since a time). Old events
whose deliveries are all final are purged with their log (:func:`purge_old_events`, the
sweeper). Sending at once what these functions made due is
:mod:`core.services.webhooks.dispatch`'s job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.config import DEFAULT_PAGE_SIZE
from core.db.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.services._common import check_page_limit, cut_page, map_db_errors, newest_first
from core.services.errors import Conflict, InvalidRequest, NotFound
from core.services.webhooks.endpoints import load_endpoint

__all__ = [
    "DELIVERY_TARGETS",
    "DeliveryPage",
    "DeliveryView",
    "get_delivery",
    "list_deliveries",
    "purge_old_events",
    "recover_deliveries",
    "retry_delivery",
]

log = structlog.get_logger(__name__)

#: Values of the delivery log's ``target`` filter: deliveries to registered endpoints, or to the
#: ad-hoc ``webhook_url`` of a comparison or a batch (deliveries without an endpoint).
DELIVERY_TARGETS: Final[tuple[str, ...]] = ("endpoint", "ad_hoc")


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its event's type and subject, and every attempt, oldest first."""

    delivery: WebhookDelivery
    event_type: str
    attempts: list[WebhookAttempt] = field(default_factory=list)
    subject_id: uuid.UUID | None = None
    """The comparison, batch or endpoint the event is about."""


@dataclass(frozen=True)
class DeliveryPage:
    """One page of deliveries, newest first."""

    items: list[DeliveryView]
    next_cursor: str | None


def _views(session: Session, rows: list[WebhookDelivery]) -> list[DeliveryView]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    events = {
        event_id: (str(kind), subject_id)
        for event_id, kind, subject_id in session.execute(
            sa.select(WebhookEvent.id, WebhookEvent.type, WebhookEvent.subject_id).where(
                WebhookEvent.id.in_({row.event_id for row in rows})
            )
        )
    }
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {ident: [] for ident in ids}
    for attempt in session.scalars(
        sa.select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
    ):
        attempts[attempt.delivery_id].append(attempt)
    return [
        DeliveryView(
            delivery=row,
            event_type=WebhookEventType(events[row.event_id][0]).value,
            attempts=attempts[row.id],
            subject_id=events[row.event_id][1],
        )
        for row in rows
    ]


def _select_deliveries(
    tenant_id: uuid.UUID,
    *,
    endpoint_id: uuid.UUID | None = None,
    target: str | None = None,
    subject_id: uuid.UUID | None = None,
    event_type: WebhookEventType | str | None = None,
    state: WebhookDeliveryState | str | None = None,
) -> sa.Select[WebhookDelivery]:
    """The query of the tenant's deliveries matching every filter given (None: no filter).

    ``endpoint_id`` keeps one endpoint's; ``target`` (:data:`DELIVERY_TARGETS`) keeps those to
    endpoints or the ad-hoc ones; ``subject_id`` and ``event_type`` select by the delivery's
    event. ``InvalidRequest`` for an unknown target, event type or state.
    """
    query = sa.select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if target is not None:
        if target not in DELIVERY_TARGETS:
            raise InvalidRequest(
                f"unknown delivery target {target!r}; accepted: {', '.join(DELIVERY_TARGETS)}"
            )
        is_ad_hoc = WebhookDelivery.endpoint_id.is_(None)
        query = query.where(is_ad_hoc if target == "ad_hoc" else ~is_ad_hoc)
    if state is not None:
        try:
            query = query.where(WebhookDelivery.state == WebhookDeliveryState(state))
        except ValueError as exc:
            raise InvalidRequest(f"unknown delivery state {state!r}") from exc
    if subject_id is not None or event_type is not None:
        events = sa.select(WebhookEvent.id).where(WebhookEvent.tenant_id == tenant_id)
        if subject_id is not None:
            events = events.where(WebhookEvent.subject_id == subject_id)
        if event_type is not None:
            try:
                events = events.where(WebhookEvent.type == WebhookEventType(event_type))
            except ValueError as exc:
                raise InvalidRequest(f"unknown event type {event_type!r}") from exc
        query = query.where(WebhookDelivery.event_id.in_(events))
    return query


def list_deliveries(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID | None = None,
    target: str | None = None,
    subject_id: uuid.UUID | None = None,
    event_type: WebhookEventType | str | None = None,
    state: WebhookDeliveryState | str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> DeliveryPage:
    """The tenant's deliveries, newest first, with their attempts; keyset-paginated.

    ``InvalidRequest`` for a malformed cursor, an unknown target, event type or state, or a
    limit outside 1..100.

    Parameters
    ----------
    endpoint_id
        Only this endpoint's deliveries (``NotFound`` if it is not the tenant's); None: the
        deliveries of every kind, to endpoints and to ad-hoc ``webhook_url`` targets.
    target
        ``endpoint`` or ``ad_hoc`` (:data:`DELIVERY_TARGETS`); None: both.
    subject_id
        Only the deliveries of events about this comparison, batch or endpoint.
    event_type, state
        Only deliveries of events of this type, or in this state.
    cursor, limit
        ``next_cursor`` of the previous page; page size 1..100.

    Returns
    -------
    DeliveryPage
        The views (delivery, event type and subject, attempts) and the next page's cursor.
    """
    check_page_limit(limit)
    query = _select_deliveries(
        tenant_id,
        endpoint_id=endpoint_id,
        target=target,
        subject_id=subject_id,
        event_type=event_type,
        state=state,
    )
    query = newest_first(
        query, WebhookDelivery.created_at, WebhookDelivery.id, cursor=cursor, limit=limit
    )
    with map_db_errors("list webhook deliveries"):
        if endpoint_id is not None:
            load_endpoint(session, tenant_id, endpoint_id)
        rows, next_cursor = cut_page(
            list(session.scalars(query.execution_options(populate_existing=True))), limit
        )
        views = _views(session, rows)
        session.commit()
    return DeliveryPage(items=views, next_cursor=next_cursor)


def _delivery(
    session: Session,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    *,
    endpoint_id: uuid.UUID | None = None,
    lock: bool = False,
) -> WebhookDelivery:
    """The tenant's delivery (of ``endpoint_id`` when given); ``NotFound`` otherwise."""
    query = (
        _select_deliveries(tenant_id, endpoint_id=endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
        .execution_options(populate_existing=True)  # rows may have changed through Core
    )
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        session.rollback()
        of = "" if endpoint_id is None else f" of webhook endpoint {endpoint_id}"
        raise NotFound(f"delivery {delivery_id}{of} not found")
    return row


def _require_enabled(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """``NotFound`` unless the endpoint is the tenant's; ``Conflict`` (``webhook_disabled``)
    when it is disabled (the transaction is rolled back)."""
    if not load_endpoint(session, tenant_id, endpoint_id).enabled:
        session.rollback()
        raise Conflict(
            f"webhook endpoint {endpoint_id} is disabled: enable it first",
            code="webhook_disabled",
        )


def get_delivery(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    endpoint_id: uuid.UUID | None = None,
) -> DeliveryView:
    """One of the tenant's deliveries (of any kind; of ``endpoint_id`` when given) with its
    attempts; ``NotFound`` otherwise (also for another tenant's id)."""
    with map_db_errors("get webhook delivery"):
        row = _delivery(session, tenant_id, delivery_id, endpoint_id=endpoint_id)
        view = _views(session, [row])[0]
        session.commit()
    return view


def _resend(row: WebhookDelivery, now: datetime) -> None:
    """Make a final delivery ``pending`` again for exactly one more attempt, due now."""
    row.state = WebhookDeliveryState.PENDING
    row.max_attempts = row.attempt_count + 1
    row.due_at = now
    row.claim_id = None
    row.attempt_started_at = None
    row.finished_at = None
    row.updated_at = now


def retry_delivery(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    endpoint_id: uuid.UUID | None = None,
) -> WebhookDelivery:
    """Send a delivery again now, once, with its original ``webhook-id``. Commits.

    Any delivery of the tenant (to an endpoint or an ad-hoc ``webhook_url``); only one of
    ``endpoint_id``'s when it is given. A final delivery (``failed`` or ``succeeded``) gets one
    more attempt; a ``pending`` one is made due now. ``NotFound`` for a delivery that is not
    the tenant's; ``Conflict`` (``delivery_in_progress``) while it is being sent; ``Conflict``
    (``webhook_disabled``) when its endpoint is disabled.

    Returns
    -------
    WebhookDelivery
        The delivery, ``pending`` and due now (dispatch it to send it at once).
    """
    now = utcnow()
    with map_db_errors("retry webhook delivery"):
        row = _delivery(session, tenant_id, delivery_id, endpoint_id=endpoint_id, lock=True)
        if row.endpoint_id is not None:
            _require_enabled(session, tenant_id, row.endpoint_id)
        if row.state == WebhookDeliveryState.SENDING:
            session.rollback()
            raise Conflict(
                f"delivery {delivery_id} is being sent; retry later", code="delivery_in_progress"
            )
        if row.state == WebhookDeliveryState.PENDING:
            row.due_at = now
            row.updated_at = now
        else:
            _resend(row, now)
        session.commit()
    log.info("webhook.delivery_retry", delivery_id=str(delivery_id))
    return row


def recover_deliveries(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID | None,
    since: datetime,
    subject_id: uuid.UUID | None = None,
    limit: int = 10_000,
) -> list[uuid.UUID]:
    """Re-send once each ``failed`` delivery of the endpoint (or each failed ad-hoc one)
    created at or after ``since``.

    Each keeps its original ``webhook-id`` (its event's) and gets exactly one more attempt.
    ``NotFound`` for an endpoint that is not the tenant's; ``Conflict`` (``webhook_disabled``)
    when it is disabled; ``InvalidRequest`` for a naive ``since``. Commits.

    Parameters
    ----------
    endpoint_id
        The endpoint whose deliveries to recover; None: the tenant's ad-hoc deliveries (to the
        ``webhook_url`` of a comparison or a batch), which belong to no endpoint.
    since
        Aware datetime; deliveries created before it are left alone.
    subject_id
        Only the deliveries of events about this comparison or batch.
    limit
        Most deliveries recovered by one call (oldest first); call again for the rest.

    Returns
    -------
    list of uuid.UUID
        The recovered deliveries, now ``pending`` and due.
    """
    if since.tzinfo is None or since.utcoffset() is None:
        raise InvalidRequest("since needs a time zone (e.g. 2024-01-01T00:00:00Z)")
    query = (
        _select_deliveries(
            tenant_id,
            endpoint_id=endpoint_id,
            target=None if endpoint_id is not None else "ad_hoc",
            subject_id=subject_id,
            state=WebhookDeliveryState.FAILED,
        )
        .where(WebhookDelivery.created_at >= since)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update()
    )
    now = utcnow()
    with map_db_errors("recover webhook deliveries"):
        if endpoint_id is not None:
            _require_enabled(session, tenant_id, endpoint_id)
        rows = list(session.scalars(query))
        for row in rows:
            _resend(row, now)
        session.commit()
    log.info(
        "webhook.recovered",
        endpoint_id=str(endpoint_id) if endpoint_id else None,
        subject_id=str(subject_id) if subject_id else None,
        count=len(rows),
    )
    return [row.id for row in rows]


def purge_old_events(session: Session, *, older_than_s: float) -> int:
    """Delete events older than ``older_than_s`` seconds whose deliveries are all final;
    their deliveries and attempts go with them (ON DELETE CASCADE). Commits; returns how many."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    unfinished = sa.exists().where(
        WebhookDelivery.event_id == WebhookEvent.id,
        WebhookDelivery.state.in_([WebhookDeliveryState.PENDING, WebhookDeliveryState.SENDING]),
    )
    with map_db_errors("purge webhook events"):
        result = session.execute(
            sa.delete(WebhookEvent)
            .where(WebhookEvent.created_at < cutoff, ~unfinished)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]

"""Webhook endpoints: the URLs a tenant registers, with the event types each receives.

:func:`create_endpoint` checks the URL by the SSRF rules (:mod:`core.services.webhooks.guard`)
and gives the endpoint its own signing secret (:mod:`core.services.webhooks.secrets`);
:func:`update_endpoint` changes it (disabling fails its pending deliveries);
:func:`disable_endpoint` is also what the delivery task calls on a 410 or after
``webhooks.disable_after_s`` of failures (recording ``endpoint.disabled`` in the outbox);
:func:`create_ping` writes a test event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.config import DEFAULT_PAGE_SIZE
from core.db.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookDisabledReason,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.netguard.classify import IPNetwork
from core.services._common import check_page_limit, cut_page, map_db_errors, newest_first
from core.services.errors import InvalidRequest, NotFound
from core.services.webhooks.guard import validate_webhook_url
from core.services.webhooks.outbox import Target, record_endpoint_disabled, write_event
from core.services.webhooks.secrets import (
    ENDPOINT_SECRETS_DEFERRED,
    SECRET_OVERLAP_S,
    new_secret,
    readable_secret,
)

__all__ = [
    "ENDPOINT_DISABLED",
    "SUBSCRIBABLE_EVENTS",
    "UNSET",
    "EndpointPage",
    "create_endpoint",
    "create_ping",
    "delete_endpoint",
    "disable_endpoint",
    "get_endpoint",
    "list_endpoints",
    "load_endpoint",
    "rotate_endpoint_secret",
    "update_endpoint",
]

log = structlog.get_logger(__name__)

#: Event types an endpoint can subscribe to (``ping`` is sent on request, to one endpoint).
SUBSCRIBABLE_EVENTS: Final[tuple[str, ...]] = (
    WebhookEventType.COMPARISON_SUCCEEDED.value,
    WebhookEventType.COMPARISON_FAILED.value,
    WebhookEventType.BATCH_COMPLETED.value,
    WebhookEventType.ENDPOINT_DISABLED.value,
)
#: Longest endpoint description, in characters.
MAX_DESCRIPTION: Final = 500
#: Error code of deliveries failed because their endpoint was disabled.
ENDPOINT_DISABLED: Final = "endpoint_disabled"


class _Unset:
    """Marker of an argument not given (distinct from None, which clears a value)."""

    def __repr__(self) -> str:
        return "UNSET"


#: Default of :func:`update_endpoint`'s arguments: leave the field as it is.
UNSET: Final = _Unset()


def _check_events(events: Any) -> list[str]:
    """Validate the subscribed event types (None: every type); sorted, without duplicates."""
    if events is None:
        return list(SUBSCRIBABLE_EVENTS)
    if isinstance(events, str) or not isinstance(events, Iterable):
        raise InvalidRequest("events must be a list of event types")
    chosen = list(events)
    if not chosen:
        raise InvalidRequest("events must name at least one event type")
    unknown = sorted({str(e) for e in chosen} - set(SUBSCRIBABLE_EVENTS))
    if unknown:
        raise InvalidRequest(
            f"unknown event type(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(SUBSCRIBABLE_EVENTS)}"
        )
    return [e for e in SUBSCRIBABLE_EVENTS if e in set(chosen)]


def _check_description(description: Any) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidRequest(f"description must be text of at most {MAX_DESCRIPTION} characters")
    return description


def _check_url(url: Any, allowed_networks: Sequence[IPNetwork]) -> str:
    if not isinstance(url, str):
        raise InvalidRequest("url must be a string")
    validate_webhook_url(url, allowed_networks=allowed_networks)  # ForbiddenDestination (422)
    return url


def create_endpoint(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    url: str,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool = True,
    allowed_networks: Sequence[IPNetwork] = (),
) -> WebhookEndpoint:
    """Register a webhook endpoint with a new signing secret. Commits.

    Parameters
    ----------
    session
        Database session.
    tenant_id
        The owner.
    url
        An http(s) URL whose host resolves only to public addresses (or to
        ``allowed_networks``); ``ForbiddenDestination`` (422 ``webhook_url_forbidden``)
        otherwise.
    events
        Event types to receive (:data:`SUBSCRIBABLE_EVENTS`); None means all of them.
    description
        Free text, at most 500 characters.
    enabled
        False registers it disabled (``disabled_reason`` ``manual``).
    allowed_networks
        ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``, parsed.

    Returns
    -------
    WebhookEndpoint
        The new row; its ``secret`` is shown to the client this once.
    """
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        url=_check_url(url, allowed_networks),
        description=_check_description(description),
        events=_check_events(events),
        enabled=bool(enabled),
        disabled_reason=None if enabled else WebhookDisabledReason.MANUAL,
        disabled_at=None if enabled else now,
        secret=new_secret(),
        created_at=now,
        updated_at=now,
    )
    with map_db_errors("create webhook"):
        session.add(endpoint)
        session.commit()
    log.info("webhook.endpoint_created", endpoint_id=str(endpoint.id), tenant_id=str(tenant_id))
    return endpoint


def load_endpoint(
    session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint:
    """The tenant's endpoint (secrets deferred; locked ``FOR UPDATE`` when ``lock``), in the
    caller's transaction; ``NotFound`` (the transaction rolled back) otherwise."""
    query = (
        sa.select(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id)
        .options(*ENDPOINT_SECRETS_DEFERRED)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        session.rollback()
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return row


def get_endpoint(
    session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    """The tenant's endpoint; ``NotFound`` otherwise (also for another tenant's id)."""
    with map_db_errors("get webhook"):
        row = load_endpoint(session, tenant_id, endpoint_id)
        session.commit()
    return row


@dataclass(frozen=True)
class EndpointPage:
    """One page of endpoints, newest first."""

    items: list[WebhookEndpoint]
    next_cursor: str | None


def list_endpoints(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> EndpointPage:
    """The tenant's endpoints, newest first, keyset-paginated like the comparisons.

    ``InvalidRequest`` for a malformed cursor or a limit outside 1..100.
    """
    check_page_limit(limit)
    query = newest_first(
        sa.select(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == tenant_id)
        .options(*ENDPOINT_SECRETS_DEFERRED),
        WebhookEndpoint.created_at,
        WebhookEndpoint.id,
        cursor=cursor,
        limit=limit,
    )
    with map_db_errors("list webhooks"):
        rows = list(session.scalars(query.execution_options(populate_existing=True)))
        session.commit()
    rows, next_cursor = cut_page(rows, limit)
    return EndpointPage(items=rows, next_cursor=next_cursor)


def _fail_pending(session: Session, endpoint_id: uuid.UUID, now: datetime) -> None:
    """Fail the endpoint's ``pending`` deliveries (``endpoint_disabled``; recoverable)."""
    session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.state == WebhookDeliveryState.PENDING,
        )
        .values(
            state=WebhookDeliveryState.FAILED,
            last_error=ENDPOINT_DISABLED,
            due_at=None,
            finished_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def disable_endpoint(
    session: Session, endpoint: WebhookEndpoint, *, reason: WebhookDisabledReason, now: datetime
) -> WebhookEvent | None:
    """Disable an endpoint in the caller's transaction (not committed here).

    Its ``pending`` deliveries end ``failed`` (``endpoint_disabled``; recover them after
    re-enabling it). An automatic disable (``gone``: the receiver answered 410; ``failing``:
    every attempt failed for ``webhooks.disable_after_s``) records an ``endpoint.disabled``
    event, delivered to the tenant's other endpoints subscribed to it.

    Parameters
    ----------
    session
        The open transaction (the endpoint row should be locked by it).
    endpoint
        The endpoint; nothing happens if it is already disabled.
    reason
        Why.
    now
        When (aware UTC).

    Returns
    -------
    WebhookEvent or None
        The ``endpoint.disabled`` event when one was written.
    """
    if not endpoint.enabled:
        return None
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    endpoint.updated_at = now
    session.flush()
    _fail_pending(session, endpoint.id, now)
    log.warning("webhook.endpoint_disabled", endpoint_id=str(endpoint.id), reason=reason.value)
    if reason is WebhookDisabledReason.MANUAL:
        return None
    return record_endpoint_disabled(session, endpoint, now=now)


def update_endpoint(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    url: str | _Unset = UNSET,
    events: Sequence[str] | _Unset | None = UNSET,
    description: str | _Unset | None = UNSET,
    enabled: bool | _Unset = UNSET,
    allowed_networks: Sequence[IPNetwork] = (),
) -> WebhookEndpoint:
    """Change an endpoint's URL, events, description or enabled flag. Commits.

    Arguments left :data:`UNSET` are unchanged. Disabling fails its pending deliveries
    (``endpoint_disabled``); enabling clears the disabled reason and the failure streak (recover
    what failed meanwhile with :func:`core.services.webhooks.log.recover_deliveries`). A new URL
    is checked like at registration and used by every later attempt, pending ones included.

    Returns
    -------
    WebhookEndpoint
        The updated row.
    """
    checked_url = None if isinstance(url, _Unset) else _check_url(url, allowed_networks)
    checked_events = None if isinstance(events, _Unset) else _check_events(events)
    checked_description = (
        None if isinstance(description, _Unset) else _check_description(description)
    )
    now = utcnow()
    with map_db_errors("update webhook"):
        row = load_endpoint(session, tenant_id, endpoint_id, lock=True)
        if checked_url is not None:
            row.url = checked_url
        if checked_events is not None:
            row.events = checked_events
        if not isinstance(description, _Unset):
            row.description = checked_description
        if not isinstance(enabled, _Unset):
            if enabled and not row.enabled:
                row.enabled = True
                row.disabled_reason = None
                row.disabled_at = None
                row.failing_since = None
            elif not enabled and row.enabled:
                disable_endpoint(session, row, reason=WebhookDisabledReason.MANUAL, now=now)
        row.updated_at = now
        session.commit()
    return row


def delete_endpoint(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint with its deliveries and their attempts. Commits.

    A delivery being sent at that moment finishes without being recorded.
    """
    with map_db_errors("delete webhook"):
        # Deliveries before the endpoint row: the order in which a finishing attempt locks
        # them (its delivery, then the endpoint), so the two cannot deadlock.
        row = load_endpoint(session, tenant_id, endpoint_id)
        session.execute(
            sa.delete(WebhookAttempt)
            .where(
                WebhookAttempt.delivery_id.in_(
                    sa.select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == row.id)
                )
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            sa.delete(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == row.id)
            .execution_options(synchronize_session=False)
        )
        session.delete(row)
        session.commit()
    log.info("webhook.endpoint_deleted", endpoint_id=str(endpoint_id))


def rotate_endpoint_secret(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    now: datetime | None = None,
) -> WebhookEndpoint:
    """Give the endpoint a new secret; the old one keeps signing for 24 h. Commits.

    During the overlap each delivery carries two signatures (``v1,<new> v1,<old>``), so a
    receiver holding either secret verifies it. Rotating again within the overlap drops the
    oldest secret.

    Returns
    -------
    WebhookEndpoint
        The row with the new ``secret`` (shown to the client this once).
    """
    now = now or utcnow()
    with map_db_errors("rotate webhook secret"):
        row = load_endpoint(session, tenant_id, endpoint_id, lock=True)
        row.previous_secret = readable_secret(row, "secret")
        row.previous_secret_expires_at = now + timedelta(seconds=SECRET_OVERLAP_S)
        row.secret = new_secret()
        row.updated_at = now
        session.commit()
    log.info("webhook.secret_rotated", endpoint_id=str(endpoint_id))
    return row


def create_ping(
    session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID
) -> WebhookDelivery:
    """Write a ``ping`` event for one endpoint and its delivery, due now. Commits.

    A ping is sent even to a disabled endpoint (to test it before enabling it again).

    Returns
    -------
    WebhookDelivery
        The pending delivery (dispatch it to send it at once).
    """
    now = utcnow()
    with map_db_errors("ping webhook"):
        endpoint = load_endpoint(session, tenant_id, endpoint_id)
        event = write_event(
            session,
            tenant_id=tenant_id,
            event_type=WebhookEventType.PING,
            subject_id=endpoint.id,
            data={
                "object": "ping",
                "endpoint_id": str(endpoint.id),
                "message": "DiffALL webhook test",
                "links": {"endpoint": f"/v1/webhooks/{endpoint.id}"},
            },
            targets=[Target(endpoint_id=endpoint.id, url=endpoint.url)],
            now=now,
        )
        delivery = session.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)
        ).one()
        session.commit()
    return delivery

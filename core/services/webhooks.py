"""Webhooks: endpoints and secrets, the outbox (events and deliveries), the delivery log.

Endpoints
---------
A tenant registers URLs (:func:`create_endpoint`) with the event types each receives. Every
endpoint has its own signing secret, ``whsec_`` + base64 of 32 random bytes, returned when the
endpoint is created or its secret rotated (:func:`rotate_endpoint_secret`: for
:data:`SECRET_OVERLAP_S` (24 h) the previous secret signs too, so a delivery carries two ``v1,``
signatures). A per-comparison or per-batch ``webhook_url`` is an ad-hoc target signed with the
tenant's default secret (:func:`get_default_secret`, created on first need). Secrets are stored in
clear, because signing needs them (see :mod:`core.db.models`).

The outbox
----------
:func:`record_comparison_event` and :func:`record_batch_completed` are called by the job state
machine (:mod:`core.services.lifecycle`) inside the transaction that ends a comparison or
completes a batch: they write one :class:`~core.db.models.WebhookEvent` and one ``pending``
:class:`~core.db.models.WebhookDelivery` per target, due at once (or ``sending`` under a
:class:`DeliveryClaim` the caller passes, for it to send after its commit), so an event exists
if and only if the change it reports was committed. Nothing is written when no target wants
the event.
:mod:`core.services.webhook_delivery` dispatches and sends the deliveries.

Payload
-------
``{"type": ..., "timestamp": ..., "data": {...}}`` (:func:`render_payload`): ``data`` holds the
object's id, state, metadata, scores and verdict (the result contract without its ``regions``,
``ignored`` and ``timings_ms`` lists) and ``links``; it is kept under :data:`MAX_PAYLOAD_BYTES`
(metadata, then the result, are left out of an event that would be larger, with a flag saying so).

The delivery log
----------------
Every delivery, to an endpoint or to an ad-hoc ``webhook_url``, is listed with its attempts
(:func:`list_deliveries`, :func:`get_delivery`: the tenant's, or one endpoint's) and can be sent
again once with its original ``webhook-id`` (:func:`retry_delivery`; :func:`recover_deliveries`
for every ``failed`` one of an endpoint, or every failed ad-hoc one, since a time).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, defer

from core.db.models import (
    Batch,
    Comparison,
    ComparisonState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookDisabledReason,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    WebhookTenantSecret,
    utcnow,
)
from core.db.secretbox import SecretDecryptionError
from core.imaging import VERDICTS
from core.services._common import cut_page, map_db_errors, newest_first
from core.services.errors import Conflict, InvalidRequest, NotFound
from core.services.webhooks_ssrf import IPNetwork, validate_webhook_url

__all__ = [
    "DELIVERY_TARGETS",
    "MAX_PAYLOAD_BYTES",
    "SECRET_OVERLAP_S",
    "SUBSCRIBABLE_EVENTS",
    "UNSET",
    "DeliveryClaim",
    "DeliveryPage",
    "DeliveryView",
    "EndpointPage",
    "create_endpoint",
    "create_ping",
    "delete_endpoint",
    "disable_endpoint",
    "ensure_default_secret",
    "get_default_secret",
    "get_delivery",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "new_secret",
    "readable_secret",
    "record_batch_completed",
    "record_comparison_event",
    "record_endpoint_disabled",
    "recover_deliveries",
    "render_payload",
    "retry_delivery",
    "rotate_default_secret",
    "rotate_endpoint_secret",
    "signing_secrets",
    "update_endpoint",
    "webhook_id",
]

log = structlog.get_logger(__name__)

# Load options leaving the secrets out of a row until they are read: rows are decrypted only to
# sign or to show a secret, so an endpoint whose secret the configured keys cannot open can still
# be listed, updated, disabled, rotated and deleted.
ENDPOINT_SECRETS_DEFERRED: Final = (
    defer(WebhookEndpoint.secret),
    defer(WebhookEndpoint.previous_secret),
)
DEFAULT_SECRETS_DEFERRED: Final = (
    defer(WebhookTenantSecret.secret),
    defer(WebhookTenantSecret.previous_secret),
)

#: Prefix of every signing secret (Standard Webhooks).
SECRET_PREFIX: Final = "whsec_"
#: Random bytes in a signing secret.
SECRET_BYTES: Final = 32
#: Seconds the previous secret keeps signing after a rotation (24 h).
SECRET_OVERLAP_S: Final = 24 * 3600
#: Largest payload (``{type, timestamp, data}``) sent, in bytes of JSON.
MAX_PAYLOAD_BYTES: Final = 20_000
#: Budget of ``data`` when an event is written, in bytes: leaves room for the envelope and for
#: the base URL prepended to the links when sending.
_DATA_BUDGET_BYTES: Final = MAX_PAYLOAD_BYTES - 2_000
#: Event types an endpoint can subscribe to (``ping`` is sent on request, to one endpoint).
SUBSCRIBABLE_EVENTS: Final[tuple[str, ...]] = (
    WebhookEventType.COMPARISON_SUCCEEDED.value,
    WebhookEventType.COMPARISON_FAILED.value,
    WebhookEventType.BATCH_COMPLETED.value,
    WebhookEventType.ENDPOINT_DISABLED.value,
)
#: Longest endpoint description, in characters.
MAX_DESCRIPTION: Final = 500
#: Largest ``limit`` of a listing page.
MAX_PAGE_SIZE: Final = 100
#: Result-contract keys left out of payloads (lists that can be long, or echo the request).
_RESULT_OMITTED: Final = frozenset({"regions", "ignored", "timings_ms"})
#: Error code of deliveries failed because their endpoint was disabled.
ENDPOINT_DISABLED: Final = "endpoint_disabled"


class _Unset:
    """Marker of an argument not given (distinct from None, which clears a value)."""

    def __repr__(self) -> str:
        return "UNSET"


#: Default of :func:`update_endpoint`'s arguments: leave the field as it is.
UNSET: Final = _Unset()


@dataclass(frozen=True)
class DeliveryClaim:
    """A claim the outbox writes deliveries under (``sending``, with a lease) instead of
    ``pending``, so the writer sends their tasks right after its commit
    (``webhook_delivery.send_preclaimed``) without a dispatcher pass.

    Attributes
    ----------
    claim_id
        The claim every delivery written with it carries (the tasks' fencing token).
    lease_s
        Seconds the claim is held (> 0): a delivery whose task is never sent (the writer died
        between its commit and the send) is re-sent by the dispatcher when the lease ends.
    """

    claim_id: uuid.UUID
    lease_s: float

    @classmethod
    def new(cls, lease_s: float) -> DeliveryClaim:
        """A fresh claim with a lease of ``lease_s`` seconds (> 0; ``ValueError`` otherwise)."""
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        return cls(claim_id=uuid.uuid4(), lease_s=lease_s)


# -- secrets ----------------------------------------------------------------------------------


def new_secret() -> str:
    """A new signing secret: ``whsec_`` + standard base64 of 32 random bytes (50 characters)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signing_secrets(
    secret: str, previous: str | None, previous_expires_at: datetime | None, *, now: datetime
) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one while its
    overlap lasts.

    Parameters
    ----------
    secret
        The current secret.
    previous, previous_expires_at
        The secret replaced by the last rotation and the end of its overlap (or None).
    now
        The signing time (aware UTC).

    Returns
    -------
    list of str
        One or two ``whsec_`` secrets, current first.
    """
    found = [secret]
    if previous and previous_expires_at is not None and previous_expires_at > now:
        found.append(previous)
    return found


def webhook_id(event_id: uuid.UUID) -> str:
    """The ``webhook-id`` header of an event: ``msg_`` + its id in hex (same on every retry)."""
    return f"msg_{event_id.hex}"


def readable_secret(row: WebhookEndpoint | WebhookTenantSecret, name: str) -> str | None:
    """``row.<name>`` (``secret`` or ``previous_secret``), or None when the configured keys
    cannot decrypt it (logged with the stable code; such a secret cannot sign anyway)."""
    try:
        value: str | None = getattr(row, name)
    except SecretDecryptionError as exc:
        log.warning("webhook.secret_unreadable", code=exc.code, column=name)
        return None
    return value


def ensure_default_secret(session: Session, tenant_id: uuid.UUID) -> WebhookTenantSecret:
    """The tenant's default secret, created now if it has none (not committed here).

    Safe when two transactions create it at once: the loser reads the winner's row.

    Parameters
    ----------
    session
        An open session (the row is added to its transaction).
    tenant_id
        The tenant.

    Returns
    -------
    WebhookTenantSecret
        The row (its ``secret`` signs ad-hoc ``webhook_url`` deliveries).
    """
    query = sa.select(WebhookTenantSecret).where(WebhookTenantSecret.tenant_id == tenant_id)
    row = session.scalars(query).one_or_none()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = WebhookTenantSecret(tenant_id=tenant_id, secret=new_secret(), created_at=utcnow())
            session.add(row)
        return row
    except sa.exc.IntegrityError:  # created concurrently
        return session.scalars(query.execution_options(populate_existing=True)).one()


def get_default_secret(session: Session, *, tenant_id: uuid.UUID) -> WebhookTenantSecret:
    """The tenant's default secret (created on first call). Commits.

    It signs deliveries to the ``webhook_url`` given with a comparison or a batch. Any API key
    of the tenant may read it again (it may have been created by a delivery, unseen).

    Returns
    -------
    WebhookTenantSecret
        The row; ``secret`` is the ``whsec_`` value.
    """
    with map_db_errors("get webhook secret"):
        row = ensure_default_secret(session, tenant_id)
        session.commit()
    return row


def rotate_default_secret(
    session: Session, *, tenant_id: uuid.UUID, now: datetime | None = None
) -> WebhookTenantSecret:
    """Replace the tenant's default secret; the old one keeps signing for 24 h. Commits.

    Returns
    -------
    WebhookTenantSecret
        The row with the new ``secret`` (``previous_secret_expires_at`` ends the overlap).
    """
    now = now or utcnow()
    with map_db_errors("rotate webhook secret"):
        locked = (
            sa.select(WebhookTenantSecret)
            .where(WebhookTenantSecret.tenant_id == tenant_id)
            .options(*DEFAULT_SECRETS_DEFERRED)  # an unreadable secret is replaced all the same
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = session.scalars(locked).one_or_none()
        if row is None:
            ensure_default_secret(session, tenant_id)
            row = session.scalars(locked).one()
        row.previous_secret = readable_secret(row, "secret")
        row.previous_secret_expires_at = now + timedelta(seconds=SECRET_OVERLAP_S)
        row.secret = new_secret()
        row.rotated_at = now
        session.commit()
    log.info("webhook.default_secret_rotated", tenant_id=str(tenant_id))
    return row


# -- endpoints --------------------------------------------------------------------------------


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


def _endpoint(
    session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, *, lock: bool = False
) -> WebhookEndpoint:
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
        row = _endpoint(session, tenant_id, endpoint_id)
        session.commit()
    return row


@dataclass(frozen=True)
class EndpointPage:
    """One page of endpoints, newest first."""

    items: list[WebhookEndpoint]
    next_cursor: str | None


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be an integer in 1..{MAX_PAGE_SIZE}, not {limit!r}")


def list_endpoints(
    session: Session, *, tenant_id: uuid.UUID, cursor: str | None = None, limit: int = 50
) -> EndpointPage:
    """The tenant's endpoints, newest first, keyset-paginated like the comparisons.

    ``InvalidRequest`` for a malformed cursor or a limit outside 1..100.
    """
    _check_limit(limit)
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
    what failed meanwhile with :func:`recover_deliveries`). A new URL is checked like at
    registration and used by every later attempt, pending ones included.

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
        row = _endpoint(session, tenant_id, endpoint_id, lock=True)
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
        row = _endpoint(session, tenant_id, endpoint_id)
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
        row = _endpoint(session, tenant_id, endpoint_id, lock=True)
        row.previous_secret = readable_secret(row, "secret")
        row.previous_secret_expires_at = now + timedelta(seconds=SECRET_OVERLAP_S)
        row.secret = new_secret()
        row.updated_at = now
        session.commit()
    log.info("webhook.secret_rotated", endpoint_id=str(endpoint_id))
    return row


# -- the outbox -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    endpoint_id: uuid.UUID | None
    url: str


def _endpoint_targets(
    session: Session,
    tenant_id: uuid.UUID,
    event_type: WebhookEventType,
    *,
    exclude: uuid.UUID | None = None,
) -> list[_Target]:
    """The tenant's enabled endpoints subscribed to ``event_type``."""
    rows = session.execute(
        sa.select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.events)
        .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    ).all()
    return [
        _Target(endpoint_id=row.id, url=row.url)
        for row in rows
        if row.id != exclude and event_type.value in (row.events or [])
    ]


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def _fit(data: dict[str, Any]) -> dict[str, Any]:
    """Keep ``data`` within the payload budget: drop metadata first, then the result."""
    if _json_size(data) <= _DATA_BUDGET_BYTES:
        return data
    if data.get("metadata") is not None:
        data = {**data, "metadata": None, "metadata_omitted": True}
        if _json_size(data) <= _DATA_BUDGET_BYTES:
            return data
    if data.get("result") is not None:
        data = {**data, "result": None, "result_omitted": True}
    return data


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _write_event(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    event_type: WebhookEventType,
    subject_id: uuid.UUID | None,
    data: dict[str, Any],
    targets: Sequence[_Target],
    now: datetime,
    claim: DeliveryClaim | None = None,
) -> WebhookEvent:
    """Insert the event and one delivery per target: ``pending`` and due now, or ``sending``
    under ``claim`` (due when its lease ends)."""
    event = WebhookEvent(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        type=event_type,
        subject_id=subject_id,
        data=_fit(data),
        created_at=now,
    )
    session.add(event)
    session.flush()
    if targets:
        ids = [uuid.uuid4() for _ in targets]
        claimed: dict[str, Any] = {
            "state": WebhookDeliveryState.PENDING,
            "claim_id": None,
            "due_at": now,
        }
        if claim is not None:
            claimed = {
                "state": WebhookDeliveryState.SENDING,
                "claim_id": claim.claim_id,
                "due_at": now + timedelta(seconds=claim.lease_s),
            }
        session.execute(
            sa.insert(WebhookDelivery),
            [
                {
                    "id": ident,
                    "tenant_id": tenant_id,
                    "event_id": event.id,
                    "endpoint_id": target.endpoint_id,
                    "url": target.url,
                    "attempt_count": 0,
                    "max_attempts": None,
                    "created_at": now,
                    "updated_at": now,
                    **claimed,
                }
                for ident, target in zip(ids, targets, strict=True)
            ],
        )
    log.info(
        "webhook.event_recorded",
        event_id=str(event.id),
        type=event_type.value,
        deliveries=len(targets),
    )
    return event


def _result_summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result contract without its long lists; ``region_count`` instead of ``regions``."""
    if result is None:
        return None
    summary = {k: v for k, v in result.items() if k not in _RESULT_OMITTED}
    regions = result.get("regions")
    summary["region_count"] = len(regions) if isinstance(regions, list) else 0
    return summary


def comparison_data(comparison: Comparison) -> dict[str, Any]:
    """The ``data`` of a comparison event (links relative to the API's base URL).

    Parameters
    ----------
    comparison
        The comparison row, in a final state.

    Returns
    -------
    dict
        id, state, batch_id, metadata, times, attempts, error {code, message} or None, result
        (scores, verdict, alignment, ``region_count``) or None, links.
    """
    path = f"/v1/comparisons/{comparison.id}"
    succeeded = comparison.state == ComparisonState.SUCCEEDED
    links: dict[str, str | None] = {
        "self": path,
        "heatmap": f"{path}/heatmap" if succeeded and comparison.heatmap_key else None,
        "batch": f"/v1/batches/{comparison.batch_id}" if comparison.batch_id else None,
    }
    error = None
    if comparison.error_code is not None:
        error = {"code": comparison.error_code, "message": comparison.error_message or ""}
    return {
        "id": str(comparison.id),
        "object": "comparison",
        "state": ComparisonState(comparison.state).value,
        "batch_id": str(comparison.batch_id) if comparison.batch_id else None,
        "a": str(comparison.image_a_id),
        "b": str(comparison.image_b_id),
        "metadata": comparison.client_metadata,
        "created_at": _iso(comparison.created_at),
        "started_at": _iso(comparison.started_at),
        "finished_at": _iso(comparison.finished_at),
        "attempts": comparison.attempt,
        "error": error,
        "result": _result_summary(comparison.result) if succeeded else None,
        "links": links,
    }


def record_comparison_event(
    session: Session,
    comparison: uuid.UUID | Comparison,
    *,
    now: datetime | None = None,
    claim: DeliveryClaim | None = None,
) -> WebhookEvent | None:
    """Write ``comparison.succeeded`` or ``comparison.failed`` for a comparison that just ended.

    Call it in the transaction that moved the comparison to its final state, after that write
    (``core.services.lifecycle.comparison_ended`` does). Targets: the tenant's enabled endpoints
    subscribed to the type, and the comparison's own ``webhook_url``. Nothing is written for
    another state (``canceled``) or when there is no target.

    Parameters
    ----------
    session
        The open transaction (not committed here).
    comparison
        The comparison's id, or its row as that write left it (e.g. from ``UPDATE ...
        RETURNING``), which saves reading it again.
    now
        Event time (default: now, UTC).
    claim
        Write the deliveries ``sending`` under this claim (the writer sends their tasks after
        its commit); None: ``pending`` and due, for the dispatcher.

    Returns
    -------
    WebhookEvent or None
        The event written, if any.
    """
    if isinstance(comparison, Comparison):
        tenant_id, state = comparison.tenant_id, comparison.state
        webhook_url = comparison.webhook_url
    else:
        # A narrow read first: most comparisons have no target, and their result can be large.
        head = session.execute(
            sa.select(Comparison.tenant_id, Comparison.state, Comparison.webhook_url).where(
                Comparison.id == comparison
            )
        ).one_or_none()
        if head is None:
            return None
        tenant_id, state, webhook_url = head.tenant_id, head.state, head.webhook_url
    if ComparisonState(state) is ComparisonState.SUCCEEDED:
        event_type = WebhookEventType.COMPARISON_SUCCEEDED
    elif ComparisonState(state) is ComparisonState.FAILED:
        event_type = WebhookEventType.COMPARISON_FAILED
    else:
        return None
    targets = _endpoint_targets(session, tenant_id, event_type)
    if webhook_url:
        targets.append(_Target(endpoint_id=None, url=webhook_url))
    if not targets:
        return None
    if not isinstance(comparison, Comparison):
        comparison = session.scalars(
            sa.select(Comparison)
            .where(Comparison.id == comparison)
            .execution_options(populate_existing=True)
        ).one()
    return _write_event(
        session,
        tenant_id=comparison.tenant_id,
        event_type=event_type,
        subject_id=comparison.id,
        data=comparison_data(comparison),
        targets=targets,
        now=now or utcnow(),
        claim=claim,
    )


def record_batch_completed(
    session: Session,
    batch_id: uuid.UUID,
    *,
    now: datetime | None = None,
    claim: DeliveryClaim | None = None,
) -> WebhookEvent | None:
    """Write ``batch.completed`` for a batch whose ``completed_at`` was just set.

    Call it only from the one transaction that completed the batch
    (``core.services.lifecycle.complete_batch_if_done``), which makes the event exactly-once.
    Targets: the tenant's enabled endpoints subscribed to ``batch.completed`` and the batch's
    ``webhook_url``. ``claim``: as for :func:`record_comparison_event`.

    Returns
    -------
    WebhookEvent or None
        The event written, if there was a target.
    """
    batch = session.scalars(
        sa.select(Batch).where(Batch.id == batch_id).execution_options(populate_existing=True)
    ).one_or_none()
    if batch is None:
        return None
    event_type = WebhookEventType.BATCH_COMPLETED
    targets = _endpoint_targets(session, batch.tenant_id, event_type)
    if batch.webhook_url:
        targets.append(_Target(endpoint_id=None, url=batch.webhook_url))
    if not targets:
        return None
    counts = {state.value: 0 for state in ComparisonState}
    for state, count in session.execute(
        sa.select(Comparison.state, sa.func.count())
        .where(Comparison.batch_id == batch_id)
        .group_by(Comparison.state)
    ):
        counts[ComparisonState(state).value] = int(count)
    verdicts = dict.fromkeys(VERDICTS, 0)
    verdict = Comparison.result["verdict"].as_string()
    for name, count in session.execute(
        sa.select(verdict, sa.func.count())
        .where(Comparison.batch_id == batch_id, Comparison.state == ComparisonState.SUCCEEDED)
        .group_by(verdict)
    ):
        if name is not None:
            verdicts[str(name)] = verdicts.get(str(name), 0) + int(count)
    path = f"/v1/batches/{batch.id}"
    data = {
        "id": str(batch.id),
        "object": "batch",
        "total": batch.total,
        "counts": counts,
        "verdicts": verdicts,
        "metadata": batch.client_metadata,
        "created_at": _iso(batch.created_at),
        "completed_at": _iso(batch.completed_at or now),
        "links": {"self": path, "comparisons": f"{path}/comparisons"},
    }
    return _write_event(
        session,
        tenant_id=batch.tenant_id,
        event_type=event_type,
        subject_id=batch.id,
        data=data,
        targets=targets,
        now=now or utcnow(),
        claim=claim,
    )


def record_endpoint_disabled(
    session: Session, endpoint: WebhookEndpoint, *, now: datetime
) -> WebhookEvent:
    """Write ``endpoint.disabled`` (always recorded; delivered to the tenant's other enabled
    endpoints subscribed to it). Called by :func:`disable_endpoint`.

    Returns
    -------
    WebhookEvent
        The event.
    """
    event_type = WebhookEventType.ENDPOINT_DISABLED
    targets = _endpoint_targets(session, endpoint.tenant_id, event_type, exclude=endpoint.id)
    data = {
        "id": str(endpoint.id),
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "reason": endpoint.disabled_reason.value if endpoint.disabled_reason else None,
        "disabled_at": _iso(endpoint.disabled_at or now),
        "failing_since": _iso(endpoint.failing_since),
        "links": {"self": f"/v1/webhooks/{endpoint.id}"},
    }
    return _write_event(
        session,
        tenant_id=endpoint.tenant_id,
        event_type=event_type,
        subject_id=endpoint.id,
        data=data,
        targets=targets,
        now=now,
    )


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
        endpoint = _endpoint(session, tenant_id, endpoint_id)
        event = _write_event(
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
            targets=[_Target(endpoint_id=endpoint.id, url=endpoint.url)],
            now=now,
        )
        delivery = session.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event.id)
        ).one()
        session.commit()
    return delivery


def render_payload(
    event_type: str, created_at: datetime, data: dict[str, Any], *, base_url: str
) -> str:
    """The JSON body of a delivery: ``{"type", "timestamp", "data"}``, compact.

    Relative links in ``data["links"]`` (starting with ``/``) are made absolute on
    ``base_url``. The same event renders to the same text on every attempt.

    Parameters
    ----------
    event_type
        E.g. ``comparison.succeeded``.
    created_at
        The event time (the payload's ``timestamp``, ISO 8601 UTC).
    data
        The stored event data.
    base_url
        ``settings.api.public_base_url`` (no trailing slash).

    Returns
    -------
    str
        The body, signed and sent as UTF-8.
    """
    body = dict(data)
    links = body.get("links")
    if isinstance(links, dict):
        body["links"] = {
            name: (
                f"{base_url}{value}" if isinstance(value, str) and value.startswith("/") else value
            )
            for name, value in links.items()
        }
    envelope = {"type": str(event_type), "timestamp": _iso(created_at), "data": body}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


# -- the delivery log -------------------------------------------------------------------------

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
    limit: int = 50,
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
    _check_limit(limit)
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
            _endpoint(session, tenant_id, endpoint_id)
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
    if not _endpoint(session, tenant_id, endpoint_id).enabled:
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

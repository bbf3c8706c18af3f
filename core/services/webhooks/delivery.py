"""Webhook delivery: the send task's use case and signing.

:func:`deliver` (the ``diffall.webhooks.deliver`` task, given a delivery the dispatcher,
:mod:`core.services.webhooks.dispatch`, claimed) checks that its claim still holds, counts the
attempt, signs the payload with every active secret (:func:`sign`, ``standardwebhooks``; the
``webhook-id`` is the event's id, the same on every retry; timestamp and signatures are fresh),
posts it through the SSRF guard (:func:`core.services.webhooks.guard.pinned_post`: checked at
send time, no redirects, one total timeout), then records the attempt and the outcome in one
transaction: ``succeeded`` (2xx); ``failed`` for good (410, which also disables the endpoint;
``forbidden_destination``, which no retry can change; or the last attempt of the schedule);
otherwise ``pending`` again, due after the next wait of the schedule with jitter
(:mod:`core.services.webhooks.policy`; 429 and 503: not before ``Retry-After``).

Nothing is lost when a worker dies or the broker forgets a message: a row stays ``sending`` until
its lease expires, then the dispatcher picks it again (an attempt that had started is recorded as
``worker_lost`` and counts, :func:`record_lost`). A stale task whose claim was superseded does
nothing.

An endpoint whose attempts all failed for ``webhooks.disable_after_s`` (5 days) is disabled and
an ``endpoint.disabled`` event recorded; so is one answering 410 Gone.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

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
from core.db.secretbox import SecretDecryptionError
from core.services._common import map_db_errors
from core.services.webhooks.endpoints import ENDPOINT_DISABLED, disable_endpoint
from core.services.webhooks.guard import DeliveryError, pinned_post
from core.services.webhooks.outbox import render_payload, webhook_id
from core.services.webhooks.policy import (
    RETRY_AFTER_STATUSES,
    DeliveryPolicy,
    parse_retry_after,
    retry_delay_s,
)
from core.services.webhooks.secrets import (
    ENDPOINT_SECRETS_DEFERRED,
    ensure_default_secret,
    signing_secrets,
)

__all__ = [
    "USER_AGENT",
    "WORKER_LOST",
    "DeliveryResult",
    "deliver",
    "record_lost",
    "sign",
]

log = structlog.get_logger(__name__)

#: the SSRF rules at send time; only the endpoint's owner or the operator can change that).
FINAL_ERROR_CODES: Final = frozenset({"forbidden_destination"})
#: Error code of an attempt whose worker died while posting.
WORKER_LOST: Final = "worker_lost"
#: Characters of an attempt's error message kept.
MAX_ERROR_MESSAGE: Final = 500
#: User agent of every delivery.
USER_AGENT: Final = "DiffALL-Webhooks/1.0"


def sign(msg_id: str, timestamp: datetime, body: str, secrets: Sequence[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated.

    Computed by the ``standardwebhooks`` library (HMAC-SHA256 of ``id.timestamp.body``).

    Parameters
    ----------
    msg_id
        The ``webhook-id``.
    timestamp
        The ``webhook-timestamp`` (aware UTC; whole seconds are signed).
    body
        The exact body sent.
    secrets
        ``whsec_`` secrets, current first.

    Returns
    -------
    str
        E.g. ``v1,K5oZ... v1,3xSr...``.
    """
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


def record_lost(
    session: Session, delivery_id: uuid.UUID, *, number: int, started_at: datetime
) -> None:
    """Record attempt ``number`` as lost (its worker died while posting), in the caller's
    transaction."""
    session.add(
        WebhookAttempt(
            id=uuid.uuid4(),
            delivery_id=delivery_id,
            number=number,
            started_at=started_at,
            error_code=WORKER_LOST,
            error_message="the worker sending this attempt stopped before it finished",
        )
    )


@dataclass(frozen=True)
class _Prepared:
    """An attempt about to be posted (no ORM object outlives its transaction)."""

    delivery_id: uuid.UUID
    claim_id: uuid.UUID
    number: int
    max_attempts: int
    started_at: datetime
    url: str
    body: str
    msg_id: str
    secrets: list[str]
    endpoint_id: uuid.UUID | None
    event_type: str
    endpoint_failing: bool = False
    """The endpoint had ``failing_since`` set when the attempt began (a success clears it)."""
    secret_error: SecretDecryptionError | None = None
    """Set when no signing secret could be decrypted: the attempt fails without a request."""


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one :func:`deliver` call.

    Attributes
    ----------
    delivery_id
        The delivery.
    number
        The attempt's number (1 for the first).
    state
        The delivery's state afterwards.
    status_code
        The receiver's HTTP status, or None when no answer arrived.
    error_code
        None on success; ``http_<status>``, or the transport's code (``timeout``,
        ``connection_error``, ``forbidden_destination``, ``tls_error``).
    due_at
        When the next attempt is due, if one is scheduled.
    """

    delivery_id: uuid.UUID
    number: int
    state: WebhookDeliveryState
    status_code: int | None
    error_code: str | None
    due_at: datetime | None


def _finalise(row: WebhookDelivery, state: WebhookDeliveryState, now: datetime) -> None:
    row.state = state
    row.due_at = None
    row.claim_id = None
    row.attempt_started_at = None
    row.finished_at = now
    row.updated_at = now


def _begin_attempt(
    sessions: sessionmaker[Session],
    delivery_id: uuid.UUID,
    claim_id: uuid.UUID,
    policy: DeliveryPolicy,
) -> _Prepared | None:
    """Step 1 of :func:`deliver`: check the claim, count the attempt, render and commit."""
    with map_db_errors("begin webhook attempt"), sessions.begin() as session:
        # One round trip: the delivery (locked), its event and its endpoint, if any.
        query = (
            sa.select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .outerjoin(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)
            .with_for_update(of=WebhookDelivery)
            .execution_options(populate_existing=True)
        )
        try:
            found = session.execute(query).one_or_none()
        except SecretDecryptionError:  # the endpoint's secrets are unreadable: fails below
            found = session.execute(query.options(*ENDPOINT_SECRETS_DEFERRED)).one_or_none()
        row, event, endpoint = (None, None, None) if found is None else found
        if (
            row is None
            or event is None
            or row.state != WebhookDeliveryState.SENDING
            or row.claim_id != claim_id
        ):
            log.info("webhook.claim_superseded", state=None if row is None else row.state.value)
            return None
        now = utcnow()
        max_attempts = row.max_attempts or policy.max_attempts
        if row.attempt_started_at is not None:  # this claim's earlier run died while posting
            record_lost(
                session, row.id, number=row.attempt_count, started_at=row.attempt_started_at
            )
            row.last_error = WORKER_LOST
            if row.attempt_count >= max_attempts:
                _finalise(row, WebhookDeliveryState.FAILED, now)
                return None
        event_type = WebhookEventType(event.type)
        if (
            endpoint is not None
            and not endpoint.enabled
            and event_type is not WebhookEventType.PING
        ):
            row.last_error = ENDPOINT_DISABLED
            _finalise(row, WebhookDeliveryState.FAILED, now)
            log.info("webhook.endpoint_disabled_skip", endpoint_id=str(endpoint.id))
            return None
        url = endpoint.url if endpoint is not None else row.url
        secret_error: SecretDecryptionError | None = None
        try:
            holder = endpoint or ensure_default_secret(session, row.tenant_id)
            secrets = signing_secrets(
                holder.secret, holder.previous_secret, holder.previous_secret_expires_at, now=now
            )
        except SecretDecryptionError as exc:  # counted as a failed attempt; nothing is sent
            secrets, secret_error = [], exc
        row.attempt_count += 1
        row.attempt_started_at = now
        row.due_at = now + timedelta(seconds=policy.lease_s)
        row.updated_at = now
        return _Prepared(
            delivery_id=row.id,
            claim_id=claim_id,
            number=row.attempt_count,
            max_attempts=max_attempts,
            started_at=now,
            url=url,
            body=render_payload(
                event_type.value, event.created_at, event.data, base_url=policy.base_url
            ),
            msg_id=webhook_id(event.id),
            secrets=secrets,
            endpoint_id=row.endpoint_id,
            event_type=event_type.value,
            endpoint_failing=endpoint is not None and endpoint.failing_since is not None,
            secret_error=secret_error,
        )


@dataclass(frozen=True)
class _Answer:
    """What happened to one POST."""

    status_code: int | None
    duration_ms: int | None
    error_code: str | None
    error_message: str | None
    response_body: str | None
    retry_after_s: float | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _post(prepared: _Prepared, policy: DeliveryPolicy) -> _Answer:
    """Step 2: sign with fresh timestamp and signatures, and POST (no transaction open)."""
    timestamp = utcnow()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": prepared.msg_id,
        "webhook-timestamp": str(math.floor(timestamp.timestamp())),
        "webhook-signature": sign(prepared.msg_id, timestamp, prepared.body, prepared.secrets),
    }
    try:
        result = pinned_post(
            prepared.url,
            content=prepared.body.encode("utf-8"),
            headers=headers,
            timeout_s=policy.timeout_s,
            allowed_networks=policy.allowed_networks,
        )
    except DeliveryError as exc:
        return _Answer(
            status_code=None,
            duration_ms=exc.duration_ms,
            error_code=exc.code,
            error_message=exc.message[:MAX_ERROR_MESSAGE],
            response_body=None,
            retry_after_s=None,
        )
    status = result.status_code
    message = None
    if 300 <= status < 400:
        location = result.headers.get("location", "")
        message = f"redirects are not followed (Location: {location})"[:MAX_ERROR_MESSAGE]
    elif not 200 <= status < 300:
        message = f"the receiver answered HTTP {status}"
    retry_after = None
    if status in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(result.headers.get("retry-after"), now=utcnow())
    return _Answer(
        status_code=status,
        duration_ms=result.duration_ms,
        error_code=None if 200 <= status < 300 else f"http_{status}",
        error_message=message,
        # PostgreSQL text cannot hold NUL characters.
        response_body=result.body_text.replace("\x00", "\ufffd"),
        retry_after_s=retry_after,
    )


def _record(
    sessions: sessionmaker[Session],
    prepared: _Prepared,
    answer: _Answer,
    policy: DeliveryPolicy,
) -> DeliveryResult | None:
    """Step 3: record the attempt and decide what comes next, if the claim still holds."""
    with map_db_errors("record webhook attempt"), sessions.begin() as session:
        row = session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.id == prepared.delivery_id)
            .with_for_update()
        ).one_or_none()
        if (
            row is None
            or row.state != WebhookDeliveryState.SENDING
            or row.claim_id != prepared.claim_id
            or row.attempt_count != prepared.number
        ):
            log.warning("webhook.attempt_superseded", attempt=prepared.number)
            return None
        now = utcnow()
        session.add(
            WebhookAttempt(
                id=uuid.uuid4(),
                delivery_id=row.id,
                number=prepared.number,
                started_at=prepared.started_at,
                duration_ms=answer.duration_ms,
                status_code=answer.status_code,
                error_code=answer.error_code,
                error_message=answer.error_message,
                response_body=answer.response_body,
            )
        )
        row.last_status_code = answer.status_code
        row.last_error = answer.error_code
        endpoint = None
        if row.endpoint_id is not None and not answer.ok:  # a failure may change the endpoint
            endpoint = session.scalars(
                sa.select(WebhookEndpoint)
                .where(WebhookEndpoint.id == row.endpoint_id)
                .options(*ENDPOINT_SECRETS_DEFERRED)
                .with_for_update()
            ).one_or_none()
        if answer.ok:
            _finalise(row, WebhookDeliveryState.SUCCEEDED, now)
            if row.endpoint_id is not None and prepared.endpoint_failing:
                # Healthy again. (A failure recorded since the attempt began, seen here as
                # ``failing_since`` set while it was not then, is left for the next success.)
                session.execute(
                    sa.update(WebhookEndpoint)
                    .where(
                        WebhookEndpoint.id == row.endpoint_id,
                        WebhookEndpoint.failing_since.is_not(None),
                    )
                    .values(failing_since=None)
                    .execution_options(synchronize_session=False)
                )
        elif answer.status_code == 410:
            _finalise(row, WebhookDeliveryState.FAILED, now)
            if endpoint is not None:
                disable_endpoint(session, endpoint, reason=WebhookDisabledReason.GONE, now=now)
        else:
            give_up = (
                prepared.number >= prepared.max_attempts or answer.error_code in FINAL_ERROR_CODES
            )
            if endpoint is not None and endpoint.enabled:
                if endpoint.failing_since is None:
                    endpoint.failing_since = prepared.started_at
                elif (now - endpoint.failing_since).total_seconds() >= policy.disable_after_s:
                    disable_endpoint(
                        session, endpoint, reason=WebhookDisabledReason.FAILING, now=now
                    )
                    give_up = True
            elif endpoint is not None:  # disabled meanwhile
                give_up = True
            if give_up:
                _finalise(row, WebhookDeliveryState.FAILED, now)
            else:
                delay = retry_delay_s(policy, prepared.number, retry_after_s=answer.retry_after_s)
                row.state = WebhookDeliveryState.PENDING
                row.due_at = now + timedelta(seconds=delay)
                row.claim_id = None
                row.attempt_started_at = None
                row.updated_at = now
        return DeliveryResult(
            delivery_id=row.id,
            number=prepared.number,
            state=WebhookDeliveryState(row.state),
            status_code=answer.status_code,
            error_code=answer.error_code,
            due_at=row.due_at,
        )


def deliver(
    sessions: sessionmaker[Session],
    *,
    delivery_id: uuid.UUID,
    claim_id: uuid.UUID,
    policy: DeliveryPolicy,
) -> DeliveryResult | None:
    """Make one attempt of a claimed delivery (the ``diffall.webhooks.deliver`` task).

    1. In a short transaction: give up unless the delivery is ``sending`` under ``claim_id``
       (a stale or duplicate message: no-op); record a ``worker_lost`` attempt if this claim's
       earlier run died while posting; fail it at once if its endpoint is disabled (except a
       ping); count the attempt and extend the lease past the timeout.
    2. With no transaction open: sign and POST (SSRF-checked, no redirects, one timeout).
    3. In one transaction: record the attempt (status, duration, error, first kilobyte of the
       answer) and the outcome (see the module docstring).

    Parameters
    ----------
    sessions
        Session factory (each step has its own short transaction).
    delivery_id, claim_id
        The task's arguments.
    policy
        Schedule, timeout, lease, base URL, allowed networks.

    Returns
    -------
    DeliveryResult or None
        None when nothing was sent (claim superseded, endpoint disabled, no attempt left) or the
        result could not be recorded (the claim was superseded while posting).

    Raises
    ------
    Unavailable
        The database is unavailable (the task retries; the lease is the safety net).
    """
    prepared = _begin_attempt(sessions, delivery_id, claim_id, policy)
    if prepared is None:
        return None
    if prepared.secret_error is not None:  # never sign with what could not be decrypted
        error = prepared.secret_error
        answer = _Answer(
            status_code=None,
            duration_ms=0,
            error_code=error.code,
            error_message=error.message[:MAX_ERROR_MESSAGE],
            response_body=None,
            retry_after_s=None,
        )
    else:
        answer = _post(prepared, policy)
    result = _record(sessions, prepared, answer, policy)
    log.info(
        "webhook.attempt",
        delivery_id=str(delivery_id),
        attempt=prepared.number,
        status_code=answer.status_code,
        error_code=answer.error_code,
        duration_ms=answer.duration_ms,
        state=None if result is None else result.state.value,
    )
    return result

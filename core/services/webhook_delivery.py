"""Webhook delivery: the dispatcher, the send task's use case, signing and the retry schedule.

The schedule lives in the database (``webhook_deliveries.due_at``), never in broker countdowns:

1. The outbox (:mod:`core.services.webhooks`) writes ``pending`` deliveries, due at once.
2. :func:`dispatch_due` (a periodic task every ``webhooks.dispatch_interval_s``, and right after a
   transaction that wrote deliveries) picks the due rows with ``SELECT ... FOR UPDATE SKIP
   LOCKED`` (PostgreSQL; on SQLite transactions are serialised, so two dispatchers never pick the
   same row), marks them ``sending`` with a fresh ``claim_id`` and a lease
   (``webhooks.lease_s``), commits, then sends one ``diffall.webhooks.deliver`` task per row.
   The comparison worker skips that pass for the events it writes: given a
   ``webhooks.DeliveryClaim``, the state machine's transitions write them ``sending`` under a
   claim and lease already and return them, and :func:`send_preclaimed` sends their tasks right
   after the commit.
3. :func:`deliver` (the task) checks that its claim still holds, counts the attempt, signs the
   payload with every active secret (``standardwebhooks``; the ``webhook-id`` is the event's id,
   the same on every retry; timestamp and signatures are fresh), posts it with
   :func:`core.services.webhooks_ssrf.pinned_post` (SSRF-checked at send time, no redirects, one
   total timeout), then records the attempt and the outcome in one transaction: ``succeeded``
   (2xx); ``failed`` for good (410, which also disables the endpoint; ``forbidden_destination``,
   which no retry can change; or the last attempt of the schedule); otherwise ``pending`` again,
   due after the next wait of the schedule with jitter (429 and 503: not before ``Retry-After``).

Nothing is lost when a worker dies or the broker forgets a message: a row stays ``sending`` until
its lease expires, then the dispatcher picks it again (an attempt that had started is recorded as
``worker_lost`` and counts). A stale task whose claim was superseded does nothing.

An endpoint whose attempts all failed for ``webhooks.disable_after_s`` (5 days) is disabled and
an ``endpoint.disabled`` event recorded; so is one answering 410 Gone.
"""

from __future__ import annotations

import email.utils
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from core.config import DEFAULT_WEBHOOK_SCHEDULE_S
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
from core.services import webhooks
from core.services._common import map_db_errors
from core.services.errors import Unavailable
from core.services.lifecycle import AfterCommit
from core.services.webhooks_ssrf import (
    DeliveryError,
    IPNetwork,
    parse_allowed_networks,
    pinned_post,
)

if TYPE_CHECKING:
    from core.config import Settings

__all__ = [
    "DEFAULT_DISPATCH_LIMIT",
    "MAX_RETRY_AFTER_S",
    "DeliveryPolicy",
    "DeliveryQueue",
    "DeliveryResult",
    "DispatchReport",
    "deliver",
    "dispatch_due",
    "parse_retry_after",
    "retry_delay_s",
    "sign",
]

log = structlog.get_logger(__name__)

#: Most deliveries claimed by one dispatcher pass (a backlog is worked off over several).
DEFAULT_DISPATCH_LIMIT: Final = 500
#: Longest ``Retry-After`` honoured, in seconds (a longer one is capped: 24 h).
MAX_RETRY_AFTER_S: Final = 86_400.0
#: Statuses whose ``Retry-After`` header is honoured.
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
#: Attempt errors that end a delivery ``failed`` at once: retrying cannot help (the URL breaks
#: the SSRF rules at send time; only the endpoint's owner or the operator can change that).
FINAL_ERROR_CODES: Final = frozenset({"forbidden_destination"})
#: Error code of an attempt whose worker died while posting.
WORKER_LOST: Final = "worker_lost"
#: Characters of an attempt's error message kept.
MAX_ERROR_MESSAGE: Final = 500
#: User agent of every delivery.
USER_AGENT: Final = "DiffALL-Webhooks/1.0"

_rng = random.SystemRandom()


@dataclass(frozen=True)
class DeliveryPolicy:
    """What the dispatcher and the send task need from the settings.

    Attributes
    ----------
    schedule_s
        Wait before each attempt, counted from the previous one, in seconds (its length is the
        number of attempts).
    jitter
        Spread of each wait as a fraction in [0, 1): 0.2 gives +-20 %.
    timeout_s
        Total time a receiver has to answer, in seconds.
    disable_after_s
        Continuous failure after which an endpoint is disabled, in seconds.
    lease_s
        Seconds a claimed delivery is reserved for its task (> ``timeout_s``).
    base_url
        The API's public base URL, for the payload's links.
    allowed_networks
        Networks reachable despite the SSRF rules.
    """

    schedule_s: tuple[float, ...] = DEFAULT_WEBHOOK_SCHEDULE_S
    jitter: float = 0.2
    timeout_s: float = 15.0
    disable_after_s: float = 5 * 24 * 3600.0
    lease_s: float = 60.0
    base_url: str = "http://127.0.0.1:8000"
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """Build the policy from ``settings.webhooks``, ``settings.api.public_base_url`` and
        ``settings.webhook_allowed_networks``."""
        hooks = settings.webhooks
        return cls(
            schedule_s=tuple(hooks.retry_schedule_s),
            jitter=hooks.jitter,
            timeout_s=hooks.timeout_s,
            disable_after_s=hooks.disable_after_s,
            lease_s=hooks.lease_s,
            base_url=settings.api.public_base_url,
            allowed_networks=parse_allowed_networks(settings.webhook_allowed_networks),
        )

    @property
    def max_attempts(self) -> int:
        """Attempts of a delivery before it ends ``failed`` (the schedule's length)."""
        return len(self.schedule_s)


# -- the schedule -----------------------------------------------------------------------------


def retry_delay_s(
    policy: DeliveryPolicy,
    attempts_done: int,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt after ``attempts_done`` attempts failed.

    Parameters
    ----------
    policy
        The schedule and jitter.
    attempts_done
        Attempts made so far (>= 1); the wait is ``schedule_s[attempts_done]`` (the last entry
        beyond the schedule, e.g. after manual retries).
    retry_after_s
        The receiver's ``Retry-After`` in seconds, if any: the wait is at least that (capped at
        :data:`MAX_RETRY_AFTER_S`).
    rng
        Random source of the jitter (default: the system's).

    Returns
    -------
    float
        The wait, >= 0: the scheduled wait times a uniform factor in
        [1 - jitter, 1 + jitter], raised to ``retry_after_s``.
    """
    schedule = policy.schedule_s
    base = schedule[min(max(attempts_done, 0), len(schedule) - 1)]
    factor = (rng or _rng).uniform(1.0 - policy.jitter, 1.0 + policy.jitter)
    delay = max(0.0, base * factor)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date).

    Parameters
    ----------
    value
        The header value, or None.
    now
        Current time (aware UTC), for dates.

    Returns
    -------
    float or None
        Seconds (>= 0), or None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


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


# -- sending tasks ----------------------------------------------------------------------------


class DeliveryQueue(Protocol):
    """Hands claimed deliveries to workers."""

    def send_delivery(self, delivery_id: uuid.UUID, claim_id: uuid.UUID) -> None:
        """Send the deliver task of one claimed delivery; ``Unavailable`` if the broker is
        down (the row is re-sent when its lease expires)."""
        ...


# -- the dispatcher ---------------------------------------------------------------------------


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


def _record_lost(
    session: Session, delivery_id: uuid.UUID, *, number: int, started_at: datetime
) -> None:
    """Record attempt ``number`` as lost (its worker died while posting)."""
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
                _record_lost(
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
    ``webhooks.DeliveryClaim``), after the transaction that wrote them committed: no
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


# -- the send task's use case -----------------------------------------------------------------


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
            found = session.execute(
                query.options(*webhooks.ENDPOINT_SECRETS_DEFERRED)
            ).one_or_none()
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
            _record_lost(
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
            row.last_error = webhooks.ENDPOINT_DISABLED
            _finalise(row, WebhookDeliveryState.FAILED, now)
            log.info("webhook.endpoint_disabled_skip", endpoint_id=str(endpoint.id))
            return None
        url = endpoint.url if endpoint is not None else row.url
        secret_error: SecretDecryptionError | None = None
        try:
            holder = endpoint or webhooks.ensure_default_secret(session, row.tenant_id)
            secrets = webhooks.signing_secrets(
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
            body=webhooks.render_payload(
                event_type.value, event.created_at, event.data, base_url=policy.base_url
            ),
            msg_id=webhooks.webhook_id(event.id),
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
                .options(*webhooks.ENDPOINT_SECRETS_DEFERRED)
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
                webhooks.disable_endpoint(
                    session, endpoint, reason=WebhookDisabledReason.GONE, now=now
                )
        else:
            give_up = (
                prepared.number >= prepared.max_attempts or answer.error_code in FINAL_ERROR_CODES
            )
            if endpoint is not None and endpoint.enabled:
                if endpoint.failing_since is None:
                    endpoint.failing_since = prepared.started_at
                elif (now - endpoint.failing_since).total_seconds() >= policy.disable_after_s:
                    webhooks.disable_endpoint(
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

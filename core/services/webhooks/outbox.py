"""The webhook outbox: events and their deliveries, written in the transaction of the change.

:func:`record_comparison_event` and :func:`record_batch_completed` are called by the job state
machine (:mod:`core.services.lifecycle`) inside the transaction that ends a comparison or
completes a batch: they write one :class:`~core.db.models.WebhookEvent` and one ``pending``
:class:`~core.db.models.WebhookDelivery` per target, due at once (or ``sending`` under a
:class:`DeliveryClaim` the caller passes, for it to send after its commit), so an event exists
if and only if the change it reports was committed. Nothing is written when no target wants
the event. :mod:`core.services.webhooks.dispatch` hands the deliveries to the workers,
:mod:`core.services.webhooks.delivery` sends them.

Payload
-------
``{"type": ..., "timestamp": ..., "data": {...}}`` (:func:`render_payload`): ``data`` holds the
object's id, state, metadata, scores and verdict (the result contract without its ``regions``,
``ignored`` and ``timings_ms`` lists) and ``links``; it is kept under :data:`MAX_PAYLOAD_BYTES`
(metadata, then the result, are left out of an event that would be larger, with a flag saying so).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.db.models import (
    Batch,
    Comparison,
    ComparisonState,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    utcnow,
)
from core.imaging import VERDICTS

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "DeliveryClaim",
    "Target",
    "comparison_data",
    "endpoint_targets",
    "iso",
    "record_batch_completed",
    "record_comparison_event",
    "record_endpoint_disabled",
    "render_payload",
    "webhook_id",
    "write_event",
]

log = structlog.get_logger(__name__)

#: Largest payload (``{type, timestamp, data}``) sent, in bytes of JSON.
MAX_PAYLOAD_BYTES: Final = 20_000
#: Budget of ``data`` when an event is written, in bytes: leaves room for the envelope and for
#: the base URL prepended to the links when sending.
_DATA_BUDGET_BYTES: Final = MAX_PAYLOAD_BYTES - 2_000
#: Result-contract keys left out of payloads (lists that can be long, or echo the request).
_RESULT_OMITTED: Final = frozenset({"regions", "ignored", "timings_ms"})


@dataclass(frozen=True)
class DeliveryClaim:
    """A claim the outbox writes deliveries under (``sending``, with a lease) instead of
    ``pending``, so the writer sends their tasks right after its commit
    (``webhooks.dispatch.send_preclaimed``) without a dispatcher pass.

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


@dataclass(frozen=True)
class Target:
    """Where one delivery of an event goes: an endpoint (its id and URL) or an ad-hoc URL."""

    endpoint_id: uuid.UUID | None
    url: str


def endpoint_targets(
    session: Session,
    tenant_id: uuid.UUID,
    event_type: WebhookEventType,
    *,
    exclude: uuid.UUID | None = None,
) -> list[Target]:
    """The tenant's enabled endpoints subscribed to ``event_type``."""
    rows = session.execute(
        sa.select(WebhookEndpoint.id, WebhookEndpoint.url, WebhookEndpoint.events)
        .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    ).all()
    return [
        Target(endpoint_id=row.id, url=row.url)
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


def iso(value: datetime | None) -> str | None:
    """``value`` as ISO 8601 text, UTC written ``Z`` (None stays None)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def write_event(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    event_type: WebhookEventType,
    subject_id: uuid.UUID | None,
    data: dict[str, Any],
    targets: Sequence[Target],
    now: datetime,
    claim: DeliveryClaim | None = None,
) -> WebhookEvent:
    """Insert the event and one delivery per target: ``pending`` and due now, or ``sending``
    under ``claim`` (due when its lease ends). Not committed here; ``data`` is cut to the
    payload budget (metadata, then the result, left out with a flag saying so)."""
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
        "created_at": iso(comparison.created_at),
        "started_at": iso(comparison.started_at),
        "finished_at": iso(comparison.finished_at),
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
    targets = endpoint_targets(session, tenant_id, event_type)
    if webhook_url:
        targets.append(Target(endpoint_id=None, url=webhook_url))
    if not targets:
        return None
    if not isinstance(comparison, Comparison):
        comparison = session.scalars(
            sa.select(Comparison)
            .where(Comparison.id == comparison)
            .execution_options(populate_existing=True)
        ).one()
    return write_event(
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
    targets = endpoint_targets(session, batch.tenant_id, event_type)
    if batch.webhook_url:
        targets.append(Target(endpoint_id=None, url=batch.webhook_url))
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
        "created_at": iso(batch.created_at),
        "completed_at": iso(batch.completed_at or now),
        "links": {"self": path, "comparisons": f"{path}/comparisons"},
    }
    return write_event(
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
    endpoints subscribed to it). Called by
    :func:`core.services.webhooks.endpoints.disable_endpoint`.

    Returns
    -------
    WebhookEvent
        The event.
    """
    event_type = WebhookEventType.ENDPOINT_DISABLED
    targets = endpoint_targets(session, endpoint.tenant_id, event_type, exclude=endpoint.id)
    data = {
        "id": str(endpoint.id),
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "reason": endpoint.disabled_reason.value if endpoint.disabled_reason else None,
        "disabled_at": iso(endpoint.disabled_at or now),
        "failing_since": iso(endpoint.failing_since),
        "links": {"self": f"/v1/webhooks/{endpoint.id}"},
    }
    return write_event(
        session,
        tenant_id=endpoint.tenant_id,
        event_type=event_type,
        subject_id=endpoint.id,
        data=data,
        targets=targets,
        now=now,
    )


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
    envelope = {"type": str(event_type), "timestamp": iso(created_at), "data": body}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def webhook_id(event_id: uuid.UUID) -> str:
    """The ``webhook-id`` header of an event: ``msg_`` + its id in hex (same on every retry)."""
    return f"msg_{event_id.hex}"

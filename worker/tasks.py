"""Thin Celery tasks, registered under the stable names of ``core.services.tasknames``.

Each task opens what it needs (this process's sessions, store, queue), binds the log context,
calls one service function and returns None. Only ``Unavailable`` (database, storage or broker
down) is retried, with exponential backoff and jitter; everything else is recorded by the
service (a corrupt image ends ``failed`` and is never retried).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from celery import Task

from core.services import batches, comparisons, sweeper, webhook_delivery, webhooks
from core.services.errors import Unavailable
from core.services.jobqueue import broker_flags_redeliveries
from core.services.tasknames import (
    ENQUEUE_BATCH,
    RUN_COMPARISON,
    SWEEP,
    SWEEP_UPLOADS,
    WEBHOOK_DELIVER,
    WEBHOOK_DISPATCH,
)
from core.services.upload_sweep import sweep_abandoned_uploads
from core.storage import StorageError
from worker.celery_app import (
    app,
    get_delivery_queue,
    get_queue,
    get_sessions,
    get_store,
    settings,
    webhook_policy,
)

__all__ = [
    "RETRY_BACKOFF_MAX_S",
    "RETRY_MAX",
    "deliver_webhook",
    "dispatch_webhooks",
    "enqueue_batch",
    "run_comparison",
    "sweep",
    "sweep_uploads",
]

log = structlog.get_logger(__name__)

#: Retries of a comparison whose dependencies are unavailable (about 4 minutes in all).
RETRY_MAX = 8
#: Longest wait between two retries, in seconds (before jitter).
RETRY_BACKOFF_MAX_S = 60
#: Task options: retry only ``Unavailable`` (database, storage or broker down), with exponential
#: backoff and jitter.
RETRY_WHEN_UNAVAILABLE: dict[str, Any] = {
    "autoretry_for": (Unavailable,),
    "retry_backoff": True,
    "retry_backoff_max": RETRY_BACKOFF_MAX_S,
    "retry_jitter": True,
    "max_retries": RETRY_MAX,
}


def _uuids(**arguments: str) -> list[uuid.UUID] | None:
    """The task's arguments as UUIDs, in order, or None (logged) if one is malformed: a bad
    message is dropped, never retried."""
    try:
        return [uuid.UUID(value) for value in arguments.values()]
    except (TypeError, ValueError, AttributeError):
        log.error("task.bad_argument", **{k: repr(v)[:100] for k, v in arguments.items()})
        return None


@app.task(
    name=RUN_COMPARISON,
    bind=True,
    **RETRY_WHEN_UNAVAILABLE,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_comparison(self: Task, comparison_id: str) -> None:
    """Run one comparison (``core.services.comparisons.run_comparison``).

    Parameters
    ----------
    comparison_id
        The comparison's UUID as a string (the only argument a message carries).
    """
    parsed = _uuids(comparison_id=comparison_id)
    if parsed is None:
        return
    (ident,) = parsed
    delivery = self.request.delivery_info or {}
    redelivered = bool(delivery.get("redelivered")) if broker_flags_redeliveries(app) else None
    # The outbox rows are written claimed, so their tasks go out right after the commit; also
    # when the task fails after it (ids of rows never committed find nothing).
    with (
        structlog.contextvars.bound_contextvars(
            comparison_id=str(ident), task_id=self.request.id, retries=self.request.retries
        ),
        webhooks.preclaimed_deliveries(webhook_policy.lease_s) as claimed,
    ):
        try:
            comparisons.run_comparison(
                get_sessions(),
                get_store(),
                comparison_id=ident,
                max_crashes=settings.worker.max_attempts,
                lease_s=settings.worker.stale_running_after_s,
                redelivered=redelivered,
                limits=settings.limits,
            )
        finally:
            if claimed.delivery_ids:
                webhook_delivery.send_preclaimed(get_delivery_queue(), claimed)


def _dispatch_now() -> None:
    """Best effort: dispatch the webhook deliveries just committed (the periodic dispatcher
    is the safety net)."""
    try:
        with get_sessions()() as session:
            webhook_delivery.dispatch_due(session, get_delivery_queue(), policy=webhook_policy)
    except Unavailable as exc:
        log.warning("webhook.dispatch_skipped", error=str(exc))


@app.task(
    name=ENQUEUE_BATCH,
    bind=True,
    **RETRY_WHEN_UNAVAILABLE,
    acks_late=True,
    ignore_result=True,
)
def enqueue_batch(self: Task, batch_id: str) -> None:
    """Send the run tasks of a large batch (``core.services.batches.send_batch``).

    Parameters
    ----------
    batch_id
        The batch's UUID as a string.
    """
    parsed = _uuids(batch_id=batch_id)
    if parsed is None:
        return
    (ident,) = parsed
    with structlog.contextvars.bound_contextvars(batch_id=str(ident), task_id=self.request.id):
        batches.send_batch(get_sessions(), get_queue(), batch_id=ident)


@app.task(name=SWEEP, ignore_result=True, acks_late=True)
def sweep() -> None:
    """One pass of the sweeper (``core.services.sweeper.sweep``); beat sends it periodically.

    Not retried: a pass that finds the database or broker down is skipped (the next one runs
    after ``worker.sweep_interval_s``).
    """
    worker = settings.worker
    with structlog.contextvars.bound_contextvars(task="sweep"):
        try:
            sweeper.sweep(
                get_sessions(),
                get_queue(),
                stale_queued_after_s=worker.stale_queued_after_s,
                stale_running_after_s=worker.stale_running_after_s,
                max_crashes=worker.max_attempts,
                webhook_retention_s=settings.webhooks.retention_s,
            )
        except Unavailable as exc:
            log.warning("sweeper.skipped", error=str(exc))


@app.task(name=WEBHOOK_DISPATCH, ignore_result=True, acks_late=True)
def dispatch_webhooks() -> None:
    """One pass of the webhook dispatcher (``core.services.webhook_delivery.dispatch_due``);
    beat sends it every ``webhooks.dispatch_interval_s`` seconds.

    Not retried: a pass that finds the database down is skipped (the next one comes soon).
    """
    with structlog.contextvars.bound_contextvars(task="webhooks.dispatch"):
        _dispatch_now()


@app.task(
    name=WEBHOOK_DELIVER,
    bind=True,
    **RETRY_WHEN_UNAVAILABLE,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver_webhook(self: Task, delivery_id: str, claim_id: str) -> None:
    """Make one attempt of a webhook delivery (``core.services.webhook_delivery.deliver``).

    Parameters
    ----------
    delivery_id, claim_id
        UUIDs as strings: the delivery and the dispatcher's claim (a superseded claim is a
        no-op).
    """
    parsed = _uuids(delivery_id=delivery_id, claim_id=claim_id)
    if parsed is None:
        return
    delivery, claim = parsed
    with structlog.contextvars.bound_contextvars(
        delivery_id=str(delivery), task_id=self.request.id, retries=self.request.retries
    ):
        webhook_delivery.deliver(
            get_sessions(), delivery_id=delivery, claim_id=claim, policy=webhook_policy
        )


@app.task(name=SWEEP_UPLOADS, ignore_result=True, acks_late=True)
def sweep_uploads() -> None:
    """Delete abandoned presigned uploads (``core.services.upload_sweep``); beat sends it hourly.

    Not retried: a pass that finds the database or storage down is skipped (the next resumes).
    """
    max_age_s = max(settings.limits.pending_upload_max_age_s, settings.storage.presign_expiry_s)
    with structlog.contextvars.bound_contextvars(task="sweep_uploads"):
        try:
            sweep_abandoned_uploads(get_sessions(), get_store(), max_age_s=max_age_s)
        except (Unavailable, StorageError) as exc:
            log.warning("uploads.sweep_skipped", error=str(exc))

"""Thin Celery tasks, registered under the stable names of ``core.services.tasknames``.

Each task opens what it needs (this process's sessions, store, queue), binds the log context,
calls one service function and returns None. Only ``Unavailable`` (database, storage or broker
down) is retried, with exponential backoff and jitter; everything else is recorded by the
service (a corrupt image ends ``failed`` and is never retried).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import uuid
from collections.abc import Iterator
from types import FrameType
from typing import Any

import structlog
from billiard.pool import SIG_SOFT_TIMEOUT
from celery import Task

from core.services import batches, runs, sweeper
from core.services.errors import ClaimNotReleased, TimeLimitExceeded, Unavailable
from core.services.jobqueue import broker_flags_redeliveries
from core.services.runs import RunPolicy
from core.services.tasknames import (
    ENQUEUE_BATCH,
    RECOVER,
    RUN_COMPARISON,
    SWEEP,
    SWEEP_UPLOADS,
    WEBHOOK_DELIVER,
    WEBHOOK_DISPATCH,
)
from core.services.upload_sweep import sweep_abandoned_uploads
from core.services.webhooks import dispatch
from core.services.webhooks.delivery import deliver
from core.services.webhooks.outbox import DeliveryClaim
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
    "recover",
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


@contextlib.contextmanager
def soft_time_limit_raises(error: type[Exception]) -> Iterator[None]:
    """Within the block, Celery's soft time limit raises ``error`` (a service exception) instead
    of Celery's ``SoftTimeLimitExceeded``, so the services never see Celery's types.

    The prefork pool signals the soft limit with ``SIG_SOFT_TIMEOUT`` (SIGUSR1) to the pool
    process, whose handler raises in the main thread; this swaps that handler for the block.
    Elsewhere (no such signal, not the main thread: the solo and thread pools, which have no
    soft limit) it does nothing.
    """
    if SIG_SOFT_TIMEOUT is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise error("the soft time limit interrupted the job")

    previous = signal.signal(SIG_SOFT_TIMEOUT, _raise)
    try:
        yield
    finally:
        signal.signal(SIG_SOFT_TIMEOUT, previous)


#: How a comparison is held while it runs: a short lease renewed by a heartbeat thread, and the
#: final write retried while the database is away (the ``worker.*`` settings).
RUN_POLICY = RunPolicy(
    lease_s=settings.worker.lease_s,
    heartbeat_s=settings.worker.heartbeat_interval_s,
    final_write_retry_s=settings.worker.final_write_retry_s,
)
#: Longest wait before resuming a job that could not be given back, in seconds (short: the
#: sweeper takes a job whose lease stays expired for a crash).
RESUME_COUNTDOWN_MAX_S = 2.0


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
def run_comparison(self: Task, comparison_id: str, resume_attempt: int | None = None) -> None:
    """Run one comparison (``core.services.runs.run_comparison``).

    Parameters
    ----------
    comparison_id
        The comparison's UUID as a string (the only argument the API's messages carry).
    resume_attempt
        Set only by this task's own retry after the database stayed away while the job had
        to be given back (``ClaimNotReleased``): that attempt is resumed, with no crash.
    """
    parsed = _uuids(comparison_id=comparison_id)
    if parsed is None:
        return
    if resume_attempt is not None and (
        not isinstance(resume_attempt, int) or isinstance(resume_attempt, bool)
    ):
        log.error("task.bad_argument", resume_attempt=repr(resume_attempt)[:100])
        resume_attempt = None
    (ident,) = parsed
    delivery = self.request.delivery_info or {}
    redelivered = bool(delivery.get("redelivered")) if broker_flags_redeliveries(app) else None
    # The outbox rows are written claimed, so their tasks go out right after the commit.
    with (
        structlog.contextvars.bound_contextvars(
            comparison_id=str(ident), task_id=self.request.id, retries=self.request.retries
        ),
        soft_time_limit_raises(TimeLimitExceeded),
    ):
        try:
            sent = runs.run_comparison(
                get_sessions(),
                get_store(),
                comparison_id=ident,
                max_crashes=settings.worker.max_attempts,
                redelivered=redelivered,
                limits=settings.limits,
                delivery_claim=DeliveryClaim.new(settings.webhooks.preclaim_lease_s),
                policy=RUN_POLICY,
                resume_attempt=resume_attempt,
            )
        except ClaimNotReleased as exc:
            # The job is still ours (attempt exc.attempt): the retry resumes it, no crash.
            raise self.retry(
                exc=exc,
                kwargs={"comparison_id": comparison_id, "resume_attempt": exc.attempt},
                countdown=min(2**self.request.retries, RESUME_COUNTDOWN_MAX_S),
            ) from exc
    if sent.delivery_ids:
        dispatch.send_preclaimed(get_delivery_queue(), sent)


def _dispatch_now() -> None:
    """Best effort: dispatch the webhook deliveries just committed (the periodic dispatcher
    is the safety net)."""
    try:
        with get_sessions()() as session:
            dispatch.dispatch_due(session, get_delivery_queue(), policy=webhook_policy)
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
                lease_confirm_s=worker.lease_confirm_s,
            )
        except Unavailable as exc:
            log.warning("sweeper.skipped", error=str(exc))


@app.task(name=RECOVER, ignore_result=True, acks_late=True)
def recover() -> None:
    """Take back the running jobs of dead workers (``core.services.sweeper.recover``); beat
    sends it every ``worker.recover_interval_s`` seconds. Not retried: a pass that finds the
    database or broker down is skipped."""
    worker = settings.worker
    with structlog.contextvars.bound_contextvars(task="recover"):
        try:
            sweeper.recover(
                get_sessions(),
                get_queue(),
                stale_running_after_s=worker.stale_running_after_s,
                max_crashes=worker.max_attempts,
                lease_confirm_s=worker.lease_confirm_s,
            )
        except Unavailable as exc:
            log.warning("sweeper.recover_skipped", error=str(exc))


@app.task(name=WEBHOOK_DISPATCH, ignore_result=True, acks_late=True)
def dispatch_webhooks() -> None:
    """One pass of the webhook dispatcher (``core.services.webhooks.dispatch.dispatch_due``);
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
    """Make one attempt of a webhook delivery (``core.services.webhooks.delivery.deliver``).

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
        deliver(get_sessions(), delivery_id=delivery, claim_id=claim, policy=webhook_policy)


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

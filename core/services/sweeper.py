"""The sweeper: no lost broker message and no dead worker ever loses a job.

The state changes are the job state machine's (:mod:`core.services.lifecycle`:
``recover_crashed``, ``requeue``); this module chooses when and sends the messages.

Run periodically (Celery beat sends ``diffall.sweeper.sweep`` every
``worker.sweep_interval_s``); every pass is idempotent and safe to run concurrently with the
workers, the API and (on PostgreSQL, thanks to ``FOR UPDATE SKIP LOCKED``) other sweepers.

1. ``running`` jobs whose lease expired (their worker died, or hit the hard time limit, without
   the broker giving the message back; the lease is short and renewed by a heartbeat while the
   job runs, and must stay expired ``lease_confirm_s`` before it counts): a crash is counted;
   below ``max_crashes`` the job goes back to ``queued`` and is re-sent, at ``max_crashes`` it
   ends ``failed`` with ``worker_crashed``. :func:`recover` runs this step, often, with one
   more: when the broker (Redis) started less than ``RESTART_WINDOW_S`` ago, ``queued`` jobs
   sent before its start are sent again at once (a Redis restarted empty lost their messages;
   without this they waited ``stale_queued_after_s``).
2. ``queued`` jobs whose message was never sent (``enqueued_at`` NULL: the broker was down when
   the API tried) are sent; ``queued`` jobs sent more than ``stale_queued_after_s`` ago are
   re-sent, but only once their queue is empty: a job that waits behind 10,000 others is not
   late, and re-sending it would only duplicate messages. Queues are FIFO, so when the queue
   is empty every message sent before now has been delivered: a row still ``queued`` lost its
   message.
3. Expired ``Idempotency-Key`` records are purged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import structlog
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import ComparisonQueue, utcnow
from core.services import lifecycle
from core.services._common import map_db_errors
from core.services.errors import Unavailable
from core.services.idempotency import purge_expired
from core.services.jobqueue import BrokerStart, BulkJobQueue, JobQueue, QueueDepth
from core.services.lifecycle import mark_unsent
from core.services.webhooks.log import purge_old_events

__all__ = ["DEFAULT_SWEEP_LIMIT", "SweepReport", "recover", "sweep"]

log = structlog.get_logger(__name__)

#: Most rows handled per step and pass (a backlog is worked off over several passes).
DEFAULT_SWEEP_LIMIT = 5000
#: Seconds after a broker start during which :func:`recover` looks for jobs whose messages
#: the restart lost (later, the stale-queued step of :func:`sweep` covers them).
RESTART_WINDOW_S = 900.0


@dataclass(frozen=True)
class SweepReport:
    """What one pass did.

    Attributes
    ----------
    resent
        ``queued`` jobs whose message was sent again (or for the first time); those that
        could not be sent are in ``send_failures`` instead.
    requeued
        ``running`` jobs whose lease expired, counted as a crash and made ``queued`` again
        (and sent, unless counted in ``send_failures``).
    crashed
        ``running`` jobs that reached ``max_crashes`` and ended ``failed`` / ``worker_crashed``.
    send_failures
        Jobs whose message could not be sent (broker down); they are retried next pass.
    waiting_queues
        Queues whose stale jobs were left alone because messages still wait in them.
    purged_idempotency_keys
        Expired ``Idempotency-Key`` records deleted.
    purged_webhook_events
        Webhook events past their retention deleted (with their deliveries and attempts).
    """

    resent: int = 0
    requeued: int = 0
    crashed: int = 0
    send_failures: int = 0
    waiting_queues: tuple[str, ...] = field(default_factory=tuple)
    purged_idempotency_keys: int = 0
    purged_webhook_events: int = 0


def _recover_running(
    sessions: sessionmaker[Session],
    *,
    stale_running_after_s: float,
    max_crashes: int,
    limit: int,
    confirm_s: float,
) -> lifecycle.Recovered:
    """Step 1 (``lifecycle.recover_crashed``, one transaction)."""
    with map_db_errors("sweep running"), sessions.begin() as session:
        return lifecycle.recover_crashed(
            session,
            stale_running_after_s=stale_running_after_s,
            max_crashes=max_crashes,
            limit=limit,
            confirm_s=confirm_s,
        )


def _pick_stale_queued(
    sessions: sessionmaker[Session],
    queue: JobQueue,
    *,
    stale_queued_after_s: float,
    limit: int,
) -> tuple[dict[ComparisonQueue, list[uuid.UUID]], tuple[str, ...]]:
    """Step 2: choose the queued jobs to (re-)send and stamp their ``enqueued_at``
    (``lifecycle.requeue``)."""
    waiting: list[ComparisonQueue] = []
    if isinstance(queue, QueueDepth):
        for name in ComparisonQueue:
            depth = queue.depth(name)  # Unavailable: the broker is down, nothing can be sent
            if depth:
                waiting.append(name)
    with map_db_errors("sweep queued"), sessions.begin() as session:
        to_send = lifecycle.requeue(
            session,
            stale_queued_after_s=stale_queued_after_s,
            waiting=tuple(waiting),
            limit=limit,
        )
    return to_send, tuple(q.value for q in waiting)


def _pick_lost_in_restart(
    sessions: sessionmaker[Session], queue: JobQueue, *, limit: int
) -> dict[ComparisonQueue, list[uuid.UUID]]:
    """Step 1b: the ``queued`` jobs sent before the broker last started, when that was less
    than :data:`RESTART_WINDOW_S` ago (a Redis restarted empty lost their messages; with
    persistence the copy sent now is a duplicate, which the claim drops), and those never
    sent. Each is re-sent once: its ``enqueued_at`` moves past the start."""
    if not isinstance(queue, BrokerStart):
        return {}
    try:
        started = queue.broker_started_at()
    except Unavailable:
        return {}  # the broker is down: nothing can be sent now
    if started is None or (utcnow() - started).total_seconds() > RESTART_WINDOW_S:
        return {}
    with map_db_errors("sweep lost messages"), sessions.begin() as session:
        to_send = lifecycle.requeue(
            session, stale_queued_after_s=None, waiting=(), limit=limit, lost_before=started
        )
    if to_send:
        count = sum(map(len, to_send.values()))
        log.warning("sweeper.broker_restarted", started_at=started.isoformat(), resent=count)
    return to_send


def _send(
    sessions: sessionmaker[Session],
    queue: JobQueue,
    to_send: dict[ComparisonQueue, list[uuid.UUID]],
) -> int:
    """Send the messages; returns how many could not be sent (their rows are marked unsent)."""
    failures = 0
    for name, ids in to_send.items():
        try:
            if isinstance(queue, BulkJobQueue):
                queue.enqueue_comparisons(ids, name)
            else:
                for comparison_id in ids:
                    queue.enqueue_comparison(comparison_id, name)
        except Unavailable as exc:
            failures += len(ids)
            log.warning("sweeper.send_failed", queue=name.value, count=len(ids), error=str(exc))
            with sessions() as session:
                mark_unsent(session, ids)
    return failures


def sweep(
    sessions: sessionmaker[Session],
    queue: JobQueue,
    *,
    stale_queued_after_s: float,
    stale_running_after_s: float,
    max_crashes: int,
    limit: int = DEFAULT_SWEEP_LIMIT,
    webhook_retention_s: float | None = None,
    lease_confirm_s: float = 0.0,
) -> SweepReport:
    """One pass of the sweeper (see the module docstring).

    Parameters
    ----------
    sessions
        Session factory (each step runs in its own short transaction).
    queue
        Where to (re-)send jobs; when it implements ``QueueDepth`` (``CeleryJobQueue`` does),
        stale jobs of a queue that still holds messages are left alone.
    stale_queued_after_s
        Seconds after its last send before a ``queued`` job is re-sent (``worker.
        stale_queued_after_s``).
    stale_running_after_s
        For a ``running`` row without a lease (not written by this code, defensive): seconds
        since its last update after which its worker is taken for dead. Rows with a lease
        use it (the worker's claim sets it to ``worker.stale_running_after_s``).
    max_crashes
        Crashes after which a job ends ``failed`` / ``worker_crashed`` (``worker.max_attempts``).
    limit
        Most jobs handled per step in this pass.
    webhook_retention_s
        Webhook events older than this are purged (None: none).
    lease_confirm_s
        Seconds an expired lease must stay expired before a crash is counted
        (``worker.lease_confirm_s``; see ``lifecycle.recover_crashed``); 0: at once.

    Returns
    -------
    SweepReport
        Counts of what was done.

    Raises
    ------
    Unavailable
        The database is unavailable (nothing was changed by the failing step), or the broker
        is unreachable when asked for queue depths.
    """
    recovered = _recover_running(
        sessions,
        stale_running_after_s=stale_running_after_s,
        max_crashes=max_crashes,
        limit=limit,
        confirm_s=lease_confirm_s,
    )
    to_send, crashed = recovered.to_send, recovered.crashed
    failures = _send(sessions, queue, to_send)
    requeued = sum(map(len, to_send.values()))
    try:
        stale, waiting = _pick_stale_queued(
            sessions, queue, stale_queued_after_s=stale_queued_after_s, limit=limit
        )
    except Unavailable:
        if failures:  # the broker is down: what step 1 could not send waits for next time
            return SweepReport(requeued=requeued, crashed=crashed, send_failures=failures)
        raise
    stale_failures = _send(sessions, queue, stale)
    with sessions() as session:
        purged = purge_expired(session)
        if webhook_retention_s is not None:
            purged_events = purge_old_events(session, older_than_s=webhook_retention_s)
        else:
            purged_events = 0
    report = SweepReport(
        resent=sum(map(len, stale.values())) - stale_failures,
        requeued=requeued,
        crashed=crashed,
        send_failures=failures + stale_failures,
        waiting_queues=waiting,
        purged_idempotency_keys=purged,
        purged_webhook_events=purged_events,
    )
    if report.resent or report.requeued or report.crashed or report.send_failures:
        log.info("sweeper.pass", **{k: v for k, v in report.__dict__.items()})
    return report


def recover(
    sessions: sessionmaker[Session],
    queue: JobQueue,
    *,
    stale_running_after_s: float,
    max_crashes: int,
    lease_confirm_s: float,
    limit: int = DEFAULT_SWEEP_LIMIT,
) -> SweepReport:
    """Step 1 of the sweeper alone: take back the jobs of dead workers and send them again;
    after a broker restart, send again the jobs whose messages it lost.

    Cheap (one indexed query on ``running`` rows), so beat runs it every
    ``worker.recover_interval_s`` seconds: with the heartbeat's short lease a dead worker's job
    is queued again within ``lease_s + lease_confirm_s + 2 * recover_interval_s``. Parameters
    as for :func:`sweep`; ``Unavailable`` when the database is unavailable.
    """
    recovered = _recover_running(
        sessions,
        stale_running_after_s=stale_running_after_s,
        max_crashes=max_crashes,
        limit=limit,
        confirm_s=lease_confirm_s,
    )
    failures = _send(sessions, queue, recovered.to_send)
    lost = _pick_lost_in_restart(sessions, queue, limit=limit)
    lost_failures = _send(sessions, queue, lost)
    report = SweepReport(
        resent=sum(map(len, lost.values())) - lost_failures,
        requeued=sum(map(len, recovered.to_send.values())),
        crashed=recovered.crashed,
        send_failures=failures + lost_failures,
    )
    if report.resent or report.requeued or report.crashed:
        log.info("sweeper.recovered", **{k: v for k, v in report.__dict__.items()})
    return report

"""The job state machine: every move of a comparison between states, in one module.

=========================  ===================  ==================================================
from                       to                   function: event
=========================  ===================  ==================================================
(none)                     queued               ``comparisons.create_comparison``,
                                                ``batches.create_batch``: submitted
queued                     queued               :func:`mark_sent`: message sent (``enqueued_at``)
queued                     queued               :func:`mark_unsent`: the broker was down
queued                     running              :func:`claim`: a worker claims it (attempt + 1,
                                                a lease)
running (worker lost)      running / failed     :func:`claim`: the broker gives the message back;
                                                a crash is counted (``worker_crashed`` at
                                                ``max_crashes``)
running                    succeeded            :func:`succeed`: the engine is done
running                    failed               :func:`fail`: bad input, time limit, engine bug
                                                (a stable error code)
running                    queued               :func:`release`: database or storage unavailable
                                                (given back, retried; attempt - 1)
any                        canceled             :func:`cancel`: the client cancels or deletes it
running (lease expired)    queued / failed      :func:`recover_crashed`: its worker vanished; a
                                                crash is counted (``worker_crashed`` at
                                                ``max_crashes``)
running                    running              :func:`renew`: the worker's heartbeat (lease
                                                extended)
queued (message lost)      queued               :func:`requeue`: re-sent once its queue drained
=========================  ===================  ==================================================

Fencing: a worker's writes (:func:`succeed`, :func:`fail`, :func:`release`) hold only while its
attempt does (``UPDATE ... WHERE id = ? AND attempt = ? AND state = 'running'``), so a stale
worker can never overwrite a newer attempt or a cancellation. A crash is counted, and a job
failed ``worker_crashed`` at ``max_crashes``, in one place (:func:`_count_crash`).

Every transition to a final state writes its webhook event (the outbox,
:mod:`core.services.webhooks.outbox`) and completes its batch (``batches.completed_at``, set
once, with its ``batch.completed`` event) in the caller's transaction. A transition given a
:class:`~core.services.webhooks.outbox.DeliveryClaim` writes its deliveries claimed and returns
them in an :class:`AfterCommit`, whose tasks the caller sends once it committed
(``webhooks.dispatch.send_preclaimed``). No function here commits: the caller owns the
transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, aliased

from core.db.models import (
    OPEN_STATES,
    Batch,
    Comparison,
    ComparisonQueue,
    ComparisonState,
    Image,
    WebhookDelivery,
    WebhookEvent,
    utcnow,
)
from core.services.webhooks import outbox
from core.services.webhooks.outbox import DeliveryClaim

__all__ = [
    "WORKER_CRASHED",
    "AfterCommit",
    "Claim",
    "Recovered",
    "cancel",
    "claim",
    "comparison_ended",
    "complete_batch_if_done",
    "fail",
    "mark_sent",
    "mark_unsent",
    "recover_crashed",
    "release",
    "renew",
    "requeue",
    "succeed",
]

log = structlog.get_logger(__name__)

#: Error code of a comparison whose worker died ``max_crashes`` times while running it.
WORKER_CRASHED = "worker_crashed"
#: Longest stored error message, in characters.
MAX_ERROR_MESSAGE = 2000
#: Ids per ``IN (...)`` list of one statement.
_CHUNK = 5000


@dataclass(frozen=True)
class AfterCommit:
    """What the caller sends once the transition's transaction committed.

    Attributes
    ----------
    claim_id
        The delivery claim the deliveries were written under (None: nothing pre-claimed).
    lease_s
        Seconds that claim is held (the dispatcher re-sends unsent deliveries after it).
    delivery_ids
        Webhook deliveries written ``sending`` under the claim, whose tasks go out now.
    """

    claim_id: uuid.UUID | None = None
    lease_s: float = 0.0
    delivery_ids: tuple[uuid.UUID, ...] = ()

    def __add__(self, other: AfterCommit) -> AfterCommit:
        if not other.delivery_ids:
            return self
        if not self.delivery_ids:
            return other
        if self.claim_id != other.claim_id:
            raise ValueError("cannot merge deliveries of two claims")
        return AfterCommit(self.claim_id, self.lease_s, self.delivery_ids + other.delivery_ids)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a comparison (no ORM object outlives the transaction).

    ``comparison_id`` and ``attempt`` are the fencing values of every later write.
    """

    comparison_id: uuid.UUID
    attempt: int
    batch_id: uuid.UUID | None
    key_a: str
    key_b: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover_crashed` did: jobs to send again (by queue) and jobs ended crashed."""

    to_send: dict[ComparisonQueue, list[uuid.UUID]] = field(default_factory=dict)
    crashed: int = 0


# -- what a final state implies ---------------------------------------------------------------


def _claimed_ids(
    session: Session, event: WebhookEvent | None, claim: DeliveryClaim | None
) -> AfterCommit:
    if event is None or claim is None:
        return AfterCommit()
    ids = session.scalars(
        sa.select(WebhookDelivery.id).where(WebhookDelivery.event_id == event.id)
    ).all()
    return AfterCommit(claim.claim_id, claim.lease_s, tuple(ids))


def comparison_ended(
    session: Session,
    comparison: uuid.UUID | Comparison,
    *,
    now: datetime | None = None,
    claim: DeliveryClaim | None = None,
) -> AfterCommit:
    """Write the webhook event of a comparison that reached ``succeeded`` or ``failed``.

    Call it inside the transaction that wrote the final state, after that write. Writes the
    outbox event and one delivery per target (the tenant's subscribed endpoints, the
    comparison's ``webhook_url``), nothing when there is no target or the state is
    ``canceled``. ``comparison``: the id, or the row as the final write left it (saves a read);
    ``now``: event time (default now, UTC); ``claim``: write the deliveries under it.
    """
    event = outbox.record_comparison_event(session, comparison, now=now, claim=claim)
    return _claimed_ids(session, event, claim)


def _complete_batch(
    session: Session, batch_id: uuid.UUID, now: datetime | None, claim: DeliveryClaim | None
) -> tuple[bool, AfterCommit]:
    session.execute(sa.select(Batch.id).where(Batch.id == batch_id).with_for_update())
    remaining = (
        sa.select(Comparison.id)
        .where(Comparison.batch_id == batch_id, Comparison.state.in_(OPEN_STATES))
        .exists()
    )
    result = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.completed_at.is_(None), ~remaining)
        .values(completed_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False, AfterCommit()
    log.info("batch.completed", batch_id=str(batch_id))
    event = outbox.record_batch_completed(session, batch_id, now=now, claim=claim)
    return True, _claimed_ids(session, event, claim)


def complete_batch_if_done(
    session: Session,
    batch_id: uuid.UUID,
    *,
    now: datetime | None = None,
    claim: DeliveryClaim | None = None,
) -> bool:
    """Set ``completed_at`` of the batch if none of its comparisons can still change.

    Call it inside the transaction that moved one of the batch's comparisons to a final state,
    after that update. The batch row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL;
    SQLite transactions are serialised anyway), so of two workers finishing the last two
    comparisons at once, the second to commit sees the first's final state and completes the
    batch; the conditional ``UPDATE ... WHERE completed_at IS NULL`` makes it happen once.

    Returns
    -------
    bool
        True for the one call that completed the batch; that call also writes the
        ``batch.completed`` webhook event, so it exists exactly once per batch.
    """
    return _complete_batch(session, batch_id, now, claim)[0]


def _ended(
    session: Session,
    comparison: uuid.UUID | Comparison,
    batch_id: uuid.UUID | None,
    now: datetime,
    claim: DeliveryClaim | None,
) -> AfterCommit:
    """The event of a final state, then the batch's completion."""
    after = comparison_ended(session, comparison, now=now, claim=claim)
    if batch_id is not None:
        after += _complete_batch(session, batch_id, now, claim)[1]
    return after


def _failed_values(code: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "state": ComparisonState.FAILED,
        "error_code": code,
        "error_message": message[:MAX_ERROR_MESSAGE],
        "result": None,
        "heatmap_key": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }


def _count_crash(session: Session, row: Comparison, *, max_crashes: int, now: datetime) -> bool:
    """The one place a crash is counted: ``crash_count + 1``; at ``max_crashes`` the row ends
    ``failed`` / ``worker_crashed`` (True; the caller then writes what the end implies)."""
    row.crash_count += 1
    row.lease_expires_at = None
    row.updated_at = now
    if row.crash_count < max_crashes:
        return False
    message = f"the worker running this comparison died {row.crash_count} times"
    for key, value in _failed_values(WORKER_CRASHED, message, now).items():
        setattr(row, key, value)
    log.error("comparison.failed", comparison_id=str(row.id), error_code=WORKER_CRASHED)
    return True


# -- the worker's transitions -----------------------------------------------------------------


def claim(
    session: Session,
    comparison_id: uuid.UUID,
    *,
    max_crashes: int,
    lease_s: float,
    redelivered: bool | None,
    resume_attempt: int | None = None,
    delivery_claim: DeliveryClaim | None = None,
    now: datetime | None = None,
) -> tuple[Claim | None, AfterCommit]:
    """``queued`` (or ``running`` left by a dead worker, counting a crash) → ``running``.

    Locks the row, bumps ``attempt`` and takes a lease of ``lease_s`` seconds. Returns (None,
    ...) for an unknown id, a final state, a duplicate message (``redelivered`` False while
    another worker's lease holds), or a job that just reached ``max_crashes`` (it ends
    ``failed`` / ``worker_crashed``; the :class:`AfterCommit` holds its deliveries).

    ``redelivered``: what the broker says about this delivery (True: given back after its
    worker was lost; False: a first delivery; None: the broker cannot tell, and a ``running``
    row is taken for a dead worker's). ``resume_attempt``: the attempt this message's own
    earlier run held and could not give back (the database was away): a ``running`` row still
    at that attempt is taken over as it is, with no crash counted and no new attempt.
    """
    image_a, image_b = aliased(Image), aliased(Image)
    # One round trip: the row (locked) and both images' storage keys (tenant-checked).
    found = session.execute(
        sa.select(Comparison, image_a.storage_key, image_b.storage_key)
        .outerjoin(
            image_a,
            sa.and_(image_a.id == Comparison.image_a_id, image_a.tenant_id == Comparison.tenant_id),
        )
        .outerjoin(
            image_b,
            sa.and_(image_b.id == Comparison.image_b_id, image_b.tenant_id == Comparison.tenant_id),
        )
        .where(Comparison.id == comparison_id)
        .with_for_update(of=Comparison)
    ).one_or_none()
    if found is None:
        log.warning("comparison.unknown")
        return None, AfterCommit()
    row, key_a, key_b = found
    if row.state not in OPEN_STATES:
        log.info("comparison.already_final", state=row.state.value)
        return None, AfterCommit()
    now = now or utcnow()
    resumed = row.state is ComparisonState.RUNNING and row.attempt == resume_attempt
    if resumed:
        log.info("comparison.resumed", attempt=row.attempt)
    elif row.state is ComparisonState.RUNNING:
        lease_held = row.lease_expires_at is not None and row.lease_expires_at > now
        if lease_held and redelivered is False:
            # A second message for a job another worker holds (e.g. a re-send that raced the
            # first delivery): not a crash. If that worker is in fact gone, the sweeper takes
            # over when its lease expires.
            log.info("comparison.duplicate_delivery", attempt=row.attempt)
            return None, AfterCommit()
        log.warning("comparison.worker_lost", attempt=row.attempt, crash_count=row.crash_count + 1)
        if _count_crash(session, row, max_crashes=max_crashes, now=now):
            session.flush()
            return None, _ended(session, row.id, row.batch_id, now, delivery_claim)
    row.state = ComparisonState.RUNNING
    if not resumed:
        row.attempt += 1
    row.started_at = now
    row.lease_expires_at = now + timedelta(seconds=lease_s)
    row.lease_lost_at = None
    row.updated_at = now
    held = Claim(
        comparison_id=row.id,
        attempt=row.attempt,
        batch_id=row.batch_id,
        key_a=key_a or "",
        key_b=key_b or "",
        options=dict(row.options or {}),
    )
    log.info("comparison.claimed", attempt=held.attempt)
    return held, AfterCommit()


def _held(held: Claim) -> sa.ColumnElement[bool]:
    """The fence of a worker's write: its attempt still holds the row."""
    return sa.and_(
        Comparison.id == held.comparison_id,
        Comparison.attempt == held.attempt,
        Comparison.state == ComparisonState.RUNNING,
    )


def _finish(
    session: Session,
    held: Claim,
    values: dict[str, Any],
    delivery_claim: DeliveryClaim | None,
) -> AfterCommit | None:
    """Write a final state if the attempt still holds, its event and the batch's completion."""
    update = (
        sa.update(Comparison)
        .where(_held(held))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    ended: uuid.UUID | Comparison
    if session.get_bind().dialect.update_returning:
        # RETURNING hands the row as written to the outbox: no second read of it.
        row = session.scalars(
            update.returning(Comparison).execution_options(populate_existing=True)
        ).one_or_none()
        if row is None:
            log.warning("comparison.attempt_superseded", attempt=held.attempt)
            return None
        ended = row
    else:  # SQLite before 3.35 has no RETURNING: the outbox reads the row
        if session.execute(update).rowcount != 1:  # type: ignore[attr-defined]
            log.warning("comparison.attempt_superseded", attempt=held.attempt)
            return None
        ended = held.comparison_id
    return _ended(session, ended, held.batch_id, values["finished_at"], delivery_claim)


def succeed(
    session: Session,
    held: Claim,
    *,
    result: dict[str, Any],
    heatmap_key: str,
    delivery_claim: DeliveryClaim | None = None,
    now: datetime | None = None,
) -> AfterCommit | None:
    """``running`` → ``succeeded`` with the result contract and the heatmap's key, if
    ``held``'s attempt still holds (None otherwise: superseded or canceled)."""
    now = now or utcnow()
    values = {
        "state": ComparisonState.SUCCEEDED,
        "result": result,
        "heatmap_key": heatmap_key,
        "error_code": None,
        "error_message": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }
    return _finish(session, held, values, delivery_claim)


def fail(
    session: Session,
    held: Claim,
    *,
    code: str,
    message: str,
    delivery_claim: DeliveryClaim | None = None,
    now: datetime | None = None,
) -> AfterCommit | None:
    """``running`` → ``failed`` with a stable error ``code`` and a message (cut to 2,000
    characters), if ``held``'s attempt still holds (None otherwise)."""
    values = _failed_values(code, message, now or utcnow())
    return _finish(session, held, values, delivery_claim)


def release(session: Session, held: Claim, *, now: datetime | None = None) -> bool:
    """``running`` → ``queued``: give the claim back after a transient error, so the retry
    claims it normally instead of taking it for a crash, and the attempt is not counted
    (``attempt - 1``: ``attempts`` counts runs, not give-backs; the next claim takes the same
    number again, and nothing else holds it). True if the attempt still held."""
    now = now or utcnow()
    result = session.execute(
        sa.update(Comparison)
        .where(_held(held))
        .values(
            state=ComparisonState.QUEUED,
            attempt=Comparison.attempt - 1,
            lease_expires_at=None,
            lease_lost_at=None,
            enqueued_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew(session: Session, held: Claim, *, lease_s: float, now: datetime | None = None) -> bool:
    """``running`` → ``running``, the worker's heartbeat: extend the lease to ``lease_s``
    seconds from now (and clear a ``lease_lost_at`` the sweeper set). False when the attempt no
    longer holds (superseded, canceled, given back): the heartbeat stops."""
    now = now or utcnow()
    result = session.execute(
        sa.update(Comparison)
        .where(_held(held))
        .values(lease_expires_at=now + timedelta(seconds=lease_s), lease_lost_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# -- the client's transition ------------------------------------------------------------------


def cancel(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    comparison_id: uuid.UUID,
    now: datetime | None = None,
) -> tuple[Comparison | None, bool]:
    """Any state → ``canceled`` (result, heatmap key and error cleared); completes the batch if
    this was its last open comparison. Returns (the row or None if the tenant has no such
    comparison, whether it was still open). A ``running`` job's worker finds its fence gone."""
    row = session.scalars(
        sa.select(Comparison)
        .where(Comparison.tenant_id == tenant_id, Comparison.id == comparison_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        return None, False
    now = now or utcnow()
    was_open = row.state in OPEN_STATES
    row.state = ComparisonState.CANCELED
    row.result = None
    row.heatmap_key = None
    row.error_code = None
    row.error_message = None
    row.lease_expires_at = None
    row.updated_at = now
    if row.finished_at is None:
        row.finished_at = now
    session.flush()
    if was_open and row.batch_id is not None:
        _complete_batch(session, row.batch_id, now, None)
    return row, was_open


# -- the sweeper's transitions ----------------------------------------------------------------


def recover_crashed(
    session: Session,
    *,
    stale_running_after_s: float,
    max_crashes: int,
    limit: int,
    confirm_s: float = 0.0,
    now: datetime | None = None,
) -> Recovered:
    """``running`` whose lease expired → ``queued`` (a crash counted; the caller sends them),
    or ``failed`` / ``worker_crashed`` at ``max_crashes``. Rows without a lease (defensive)
    count as expired ``stale_running_after_s`` seconds after their last update. At most
    ``limit`` rows; rows locked by another transaction are skipped.

    ``confirm_s`` > 0: an expired lease is first only marked (``lease_lost_at``); the crash is
    counted by a later pass, once it has stayed expired ``confirm_s`` seconds since. A live
    worker's heartbeat renews it meanwhile: after a database outage every lease has expired,
    but no worker died.
    """
    now = now or utcnow()
    if confirm_s > 0:
        session.execute(
            sa.update(Comparison)
            .where(
                Comparison.state == ComparisonState.RUNNING,
                Comparison.lease_expires_at < now,
                Comparison.lease_lost_at.is_(None),
            )
            .values(lease_lost_at=now)
            .execution_options(synchronize_session=False)
        )
    confirmed = (
        Comparison.lease_lost_at < now - timedelta(seconds=confirm_s)
        if confirm_s > 0
        else sa.true()
    )
    rows = session.scalars(
        sa.select(Comparison)
        .where(
            Comparison.state == ComparisonState.RUNNING,
            sa.or_(
                sa.and_(Comparison.lease_expires_at < now, confirmed),
                sa.and_(
                    Comparison.lease_expires_at.is_(None),
                    Comparison.updated_at < now - timedelta(seconds=stale_running_after_s),
                ),
            ),
        )
        .order_by(Comparison.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    to_send: dict[ComparisonQueue, list[uuid.UUID]] = {}
    failed: list[Comparison] = []
    for row in rows:
        row.lease_lost_at = None
        if _count_crash(session, row, max_crashes=max_crashes, now=now):
            failed.append(row)
        else:
            row.state = ComparisonState.QUEUED
            row.enqueued_at = now
            to_send.setdefault(row.queue, []).append(row.id)
            log.warning(
                "comparison.lease_expired",
                comparison_id=str(row.id),
                attempt=row.attempt,
                crash_count=row.crash_count,
            )
    session.flush()
    for row in failed:  # outbox: comparison.failed, in this same transaction
        comparison_ended(session, row.id, now=now)
    for batch_id in sorted({row.batch_id for row in failed if row.batch_id is not None}):
        _complete_batch(session, batch_id, now, None)
    return Recovered(to_send=to_send, crashed=len(failed))


def requeue(
    session: Session,
    *,
    stale_queued_after_s: float | None,
    waiting: tuple[ComparisonQueue, ...],
    limit: int,
    lost_before: datetime | None = None,
    now: datetime | None = None,
) -> dict[ComparisonQueue, list[uuid.UUID]]:
    """``queued`` with no message → ``queued`` stamped sent now (the caller sends them): rows
    never sent (``enqueued_at`` NULL), rows sent more than ``stale_queued_after_s`` ago (None:
    none) unless their queue is in ``waiting`` (still holds messages), and rows sent before
    ``lost_before`` (the broker restarted then: their messages are gone). At most ``limit``
    rows."""
    now = now or utcnow()
    stale = (
        sa.and_(
            Comparison.enqueued_at < now - timedelta(seconds=stale_queued_after_s),
            Comparison.queue.not_in(waiting) if waiting else sa.true(),
        )
        if stale_queued_after_s is not None
        else sa.false()
    )
    lost = Comparison.enqueued_at < lost_before if lost_before is not None else sa.false()
    rows = session.execute(
        sa.select(Comparison.id, Comparison.queue)
        .where(
            Comparison.state == ComparisonState.QUEUED,
            sa.or_(Comparison.enqueued_at.is_(None), stale, lost),
        )
        .order_by(Comparison.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [row.id for row in rows]
    for start in range(0, len(ids), _CHUNK):
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id.in_(ids[start : start + _CHUNK]))
            .values(enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
    to_send: dict[ComparisonQueue, list[uuid.UUID]] = {}
    for row in rows:
        to_send.setdefault(row.queue, []).append(row.id)
    return to_send


def mark_sent(
    session: Session, *, batch_id: uuid.UUID, now: datetime | None = None
) -> dict[ComparisonQueue, list[uuid.UUID]]:
    """Stamp ``enqueued_at`` of every ``queued`` comparison of a batch; returns their ids by
    the queue stored on each row, in submission order (the caller sends them)."""
    ids: dict[ComparisonQueue, list[uuid.UUID]] = {}
    for row in session.execute(
        sa.select(Comparison.id, Comparison.queue)
        .where(Comparison.batch_id == batch_id, Comparison.state == ComparisonState.QUEUED)
        .order_by(Comparison.created_at, Comparison.id)
    ):
        ids.setdefault(row.queue, []).append(row.id)
    session.execute(
        sa.update(Comparison)
        .where(Comparison.batch_id == batch_id, Comparison.state == ComparisonState.QUEUED)
        .values(enqueued_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return ids


def mark_unsent(session: Session, ids: list[uuid.UUID]) -> None:
    """Best effort, commits: clear ``enqueued_at`` of rows whose message could not be sent, so
    the next sweep re-sends them at once (otherwise it waits for ``stale_queued_after_s``)."""
    try:
        for start in range(0, len(ids), _CHUNK):
            session.execute(
                sa.update(Comparison)
                .where(
                    Comparison.id.in_(ids[start : start + _CHUNK]),
                    Comparison.state == ComparisonState.QUEUED,
                )
                .values(enqueued_at=None)
                .execution_options(synchronize_session=False)
            )
        session.commit()
    except sa.exc.SQLAlchemyError:
        session.rollback()
        log.warning("comparison.mark_unsent_failed", count=len(ids))

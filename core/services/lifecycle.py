"""State transitions shared by the worker's run, the sweeper and cancellation.

One place decides what "a comparison reached a final state" implies: its webhook event
(``comparison.succeeded`` / ``comparison.failed``, :func:`comparison_ended`) and completing its
batch (``batches.completed_at``, set exactly once, with its ``batch.completed`` event), both in
the transaction that made the change (the outbox, :mod:`core.services.webhooks`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.db.models import Batch, Comparison, ComparisonState, utcnow
from core.services import webhooks

__all__ = [
    "NON_FINAL_STATES",
    "WORKER_CRASHED",
    "comparison_ended",
    "complete_batch_if_done",
    "mark_unsent",
]

log = structlog.get_logger(__name__)

#: Error code of a comparison whose worker died ``max_crashes`` times while running it.
WORKER_CRASHED = "worker_crashed"
#: States a comparison can still leave.
NON_FINAL_STATES = (ComparisonState.QUEUED, ComparisonState.RUNNING)


def comparison_ended(
    session: Session, comparison: uuid.UUID | Comparison, *, now: datetime | None = None
) -> None:
    """Record what a comparison reaching ``succeeded`` or ``failed`` implies: its webhook event.

    Call it inside the transaction that wrote the final state, after that write (then call
    :func:`complete_batch_if_done` for a batch's comparison). Writes the outbox event and one
    delivery per target (the tenant's subscribed endpoints, the comparison's ``webhook_url``),
    nothing when there is no target or the state is ``canceled``.

    Parameters
    ----------
    session
        The session of the transaction that finished the comparison (not committed here).
    comparison
        The comparison's id, or its row as the final write left it (saves a read).
    now
        Event time (default: now, UTC).
    """
    webhooks.record_comparison_event(session, comparison, now=now)


def complete_batch_if_done(
    session: Session, batch_id: uuid.UUID, *, now: datetime | None = None
) -> bool:
    """Set ``completed_at`` of the batch if none of its comparisons can still change.

    Call it inside the transaction that moved one of the batch's comparisons to a final state,
    after that update. The batch row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL;
    SQLite transactions are serialised anyway), so of two workers finishing the last two
    comparisons at once, the second to commit sees the first's final state and completes the
    batch; the conditional ``UPDATE ... WHERE completed_at IS NULL`` makes it happen once.

    Parameters
    ----------
    session
        The session of the transaction that finished a comparison (not committed here).
    batch_id
        The comparison's batch.
    now
        Completion time (default: now, UTC).

    Returns
    -------
    bool
        True for the one call that completed the batch; that call also writes the
        ``batch.completed`` webhook event, so it exists exactly once per batch.
    """
    session.execute(sa.select(Batch.id).where(Batch.id == batch_id).with_for_update())
    remaining = (
        sa.select(Comparison.id)
        .where(Comparison.batch_id == batch_id, Comparison.state.in_(NON_FINAL_STATES))
        .exists()
    )
    result = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.completed_at.is_(None), ~remaining)
        .values(completed_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    completed = result.rowcount == 1  # type: ignore[attr-defined]
    if completed:
        log.info("batch.completed", batch_id=str(batch_id))
        webhooks.record_batch_completed(session, batch_id, now=now)
    return completed


def mark_unsent(session: Session, ids: list[uuid.UUID]) -> None:
    """Best effort: clear ``enqueued_at`` of rows whose message could not be sent, so the next
    sweep re-sends them at once (otherwise it waits for ``stale_queued_after_s``)."""
    try:
        for start in range(0, len(ids), 5000):
            session.execute(
                sa.update(Comparison)
                .where(
                    Comparison.id.in_(ids[start : start + 5000]),
                    Comparison.state == ComparisonState.QUEUED,
                )
                .values(enqueued_at=None)
                .execution_options(synchronize_session=False)
            )
        session.commit()
    except sa.exc.SQLAlchemyError:
        session.rollback()
        log.warning("comparison.mark_unsent_failed", count=len(ids))

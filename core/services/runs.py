"""Running a comparison: the worker's use case (:func:`run_comparison`).

Running is safe to repeat: a worker claims the row by bumping ``attempt`` and taking a lease
(``core.services.lifecycle.claim``), works with no transaction open (decode, compare, store the
heatmap), and writes the outcome only while its attempt still holds (``UPDATE ... WHERE id = ?
AND attempt = ? AND state = 'running'``), so a stale worker can never overwrite a newer attempt or
a cancellation. A heartbeat renews the lease while the engine runs; transient database or storage
errors give the job back (no crash counted), final writes are retried for a while.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
import structlog
import tenacity
from sqlalchemy.orm import Session, sessionmaker

from core.config import LimitsSettings
from core.db.models import (
    Comparison,
    ComparisonState,
)
from core.imaging import ImagingError, compare
from core.services import lifecycle
from core.services._common import (
    map_db_errors,
    map_storage_errors,
)
from core.services.comparisons import HEATMAP_KEY
from core.services.errors import (
    ClaimNotReleased,
    ServiceError,
    TimeLimitExceeded,
    Unavailable,
)
from core.services.heartbeat import Heartbeat
from core.services.lifecycle import AfterCommit, Claim
from core.services.options import engine_options
from core.services.webhooks.outbox import DeliveryClaim
from core.storage import ObjectNotFound, ObjectStore

__all__ = ["DEFAULT_LEASE_S", "RunPolicy", "run_comparison"]

log = structlog.get_logger(__name__)

#: Lease of a claimed job when the caller gives none, in seconds (the default
#: ``worker.stale_running_after_s``: hard time limit 150 s + 30 s).
DEFAULT_LEASE_S = 180.0
#: Error codes of failures recorded by the service itself (the engine's codes come from
#: ``core.imaging.ErrorCode``).
IMAGE_MISSING = "image_missing"
TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
INTERNAL_ERROR = "internal_error"

_T = TypeVar("_T")


@dataclass(frozen=True)
class RunPolicy:
    """How the worker holds a job while it runs (the ``worker.*`` settings).

    Attributes
    ----------
    lease_s
        Seconds the claim is held from its last renewal before the sweeper may take the worker
        for dead (``worker.lease_s``; without a heartbeat it must exceed the hard time limit).
    heartbeat_s
        Seconds between two renewals of the lease by a thread beside the job
        (``worker.heartbeat_interval_s``); None: no heartbeat (the lease must then outlast the
        job).
    final_write_retry_s
        Seconds the final write, and the give-back after a transient error, are retried while
        the database is unavailable (``worker.final_write_retry_s``); 0: tried once.
    """

    lease_s: float = DEFAULT_LEASE_S
    heartbeat_s: float | None = None
    final_write_retry_s: float = 0.0


def _write(
    sessions: sessionmaker[Session],
    action: str,
    write: Callable[[Session], _T],
    *,
    retry_s: float,
) -> _T:
    """Run ``write`` in one transaction; while the database is unavailable (``Unavailable``),
    run it again (a new transaction, a fresh connection) for up to ``retry_s`` seconds, with
    exponential backoff from 0.25 s to 4 s and jitter."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Unavailable),
        stop=tenacity.stop_after_delay(retry_s),
        wait=tenacity.wait_exponential_jitter(multiplier=0.25, max=4.0, jitter=0.5),
        before_sleep=lambda state: log.warning(
            "comparison.write_retried", action=action, tries=state.attempt_number
        ),
        reraise=True,
    )
    for attempt in retrying:
        with attempt, map_db_errors(action), sessions.begin() as session:
            return write(session)
    raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises


def _fail(
    sessions: sessionmaker[Session],
    claim: Claim,
    code: str,
    message: str,
    delivery_claim: DeliveryClaim | None,
    policy: RunPolicy,
) -> AfterCommit:
    after = _write(
        sessions,
        "finish",
        lambda session: lifecycle.fail(
            session, claim, code=code, message=message, delivery_claim=delivery_claim
        ),
        retry_s=policy.final_write_retry_s,
    )
    if after is None:
        return AfterCommit()
    log.info("comparison.failed", attempt=claim.attempt, error_code=code, error=message)
    return after


def _release(sessions: sessionmaker[Session], claim: Claim, policy: RunPolicy) -> bool:
    """After a transient error: give the claim back (``queued``, the attempt not counted) so
    the retry claims it normally instead of taking it for a crash. False if the database
    stayed away (the claim still holds)."""
    try:
        _write(
            sessions,
            "release",
            lambda session: lifecycle.release(session, claim),
            retry_s=policy.final_write_retry_s,
        )
    except Unavailable:
        log.warning("comparison.release_failed", attempt=claim.attempt)
        return False
    return True


def _drop_heatmap_if_canceled(
    sessions: sessionmaker[Session], store: ObjectStore, claim: Claim, key: str
) -> None:
    """Best effort: a job canceled while it ran must not leave its heatmap behind (a newer
    attempt, if any, writes the same key and keeps it)."""
    try:
        with sessions.begin() as session:
            state = session.scalar(
                sa.select(Comparison.state).where(Comparison.id == claim.comparison_id)
            )
        if state is ComparisonState.CANCELED:
            store.delete(key)
    except Exception:
        log.warning("comparison.heatmap_cleanup_failed", attempt=claim.attempt)


def _imaging_message(exc: ImagingError) -> str:
    return f"image {exc.image}: {exc.message}" if exc.image else exc.message


def run_comparison(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    *,
    comparison_id: uuid.UUID,
    max_crashes: int,
    lease_s: float | None = None,
    redelivered: bool | None = None,
    limits: LimitsSettings | None = None,
    delivery_claim: DeliveryClaim | None = None,
    policy: RunPolicy | None = None,
    resume_attempt: int | None = None,
) -> AfterCommit:
    """The worker's use case; safe to run twice (idempotent).

    1. Claim in a short transaction (``lifecycle.claim``): ``queued`` (or ``running`` left by a
       dead worker, which counts a crash) becomes ``running`` with ``attempt + 1`` and a lease;
       final states and unknown ids are a no-op. A job whose worker died ``max_crashes`` times
       ends ``failed`` with ``worker_crashed``.
    2. With the lease renewed by a heartbeat thread (``policy.heartbeat_s``): read both
       images, run ``core.imaging.compare`` with no transaction open, write the heatmap to
       ``HEATMAP_KEY``.
    3. In one transaction, only if the attempt still holds: store the result and
       ``succeeded`` (``lifecycle.succeed``), or ``failed`` with the engine's error code
       (``lifecycle.fail``; permanent: never retried). While the database is unavailable the
       write is retried for ``policy.final_write_retry_s`` seconds.
    Transient errors (storage or database unavailable) give the job back (``queued``, the
    attempt not counted) and propagate as ``Unavailable`` for the task to retry with backoff.

    Parameters
    ----------
    sessions
        Session factory (each step opens its own short transaction).
    store
        Object store holding the images; receives the heatmap.
    comparison_id
        The job.
    max_crashes
        Worker deaths after which the job ends ``failed`` / ``worker_crashed`` (>= 1).
    lease_s
        Overrides ``policy.lease_s`` (seconds the claim is held before the sweeper may take
        the worker for dead).
    redelivered
        What the broker says about this delivery. ``True``: a message given back after its
        worker was lost. ``False`` (the broker would have said so): a first delivery, so a
        ``running`` row whose lease is still held belongs to a live worker and the message is
        a duplicate: no-op. ``None`` (the broker cannot tell; the default): a ``running`` row
        is taken for a dead worker's, as in step 1.
    limits
        The API's limits (``settings.limits``): the engine decodes up to the size the images
        were accepted at (default: the settings' defaults).
    delivery_claim
        Write the webhook deliveries of the final state under this claim (the caller sends
        their tasks after this returns: ``webhooks.dispatch.send_preclaimed``); None: they are
        written ``pending`` for the dispatcher.
    policy
        Lease, heartbeat and retry of the final write (default: a 180 s lease, no heartbeat,
        no retry).
    resume_attempt
        Set by the retry of a run that could not give the job back (``ClaimNotReleased``): a
        ``running`` row still at this attempt is taken over with no crash counted.

    Returns
    -------
    AfterCommit
        The deliveries committed under ``delivery_claim`` (none without one).

    Raises
    ------
    Unavailable
        The database or storage is unavailable; the claim was given back (``queued``), for
        the task's retry.
    ClaimNotReleased
        The database stayed unavailable, so the claim could not be given back either: the
        retry must pass ``resume_attempt=exc.attempt``.

    Notes
    -----
    Other failures end the job ``failed`` for good: the engine's codes (``corrupt_image``,
    ``size_mismatch``, ...), ``image_missing`` (an image's bytes are gone from storage),
    ``time_limit_exceeded`` (``TimeLimitExceeded``, raised by the worker when its soft time
    limit interrupts the comparison) and ``internal_error`` (an unexpected exception in the
    engine, logged with its traceback).
    """
    if max_crashes < 1:
        raise ValueError("max_crashes must be >= 1")
    policy = policy or RunPolicy()
    lease = policy.lease_s if lease_s is None else lease_s
    claim, after = _write(
        sessions,
        "claim",
        lambda session: lifecycle.claim(
            session,
            comparison_id,
            max_crashes=max_crashes,
            lease_s=lease,
            redelivered=redelivered,
            resume_attempt=resume_attempt,
            delivery_claim=delivery_claim,
        ),
        retry_s=0.0,
    )
    if claim is None:
        return after
    try:
        with contextlib.ExitStack() as stack:
            if policy.heartbeat_s is not None:
                stack.enter_context(
                    Heartbeat(sessions, claim, lease_s=lease, interval_s=policy.heartbeat_s)
                )
            return _run_claimed(sessions, store, claim, limits, delivery_claim, policy)
    except ServiceError as exc:
        if not isinstance(exc, Unavailable):
            exc = Unavailable(exc.message)  # e.g. storage refusing access: retry, then give up
        if not _release(sessions, claim, policy):
            raise ClaimNotReleased(exc.message, attempt=claim.attempt) from exc
        raise exc from exc.__cause__


def _run_claimed(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    claim: Claim,
    limits: LimitsSettings | None,
    delivery_claim: DeliveryClaim | None,
    policy: RunPolicy,
) -> AfterCommit:
    """Steps 2 and 3 of :func:`run_comparison` (transient errors propagate)."""
    try:
        try:
            with map_storage_errors("read images"):
                data_a = store.get(claim.key_a)
                data_b = store.get(claim.key_b)
        except (ObjectNotFound, ValueError) as exc:
            message = f"an image's bytes are missing: {exc}"
            return _fail(sessions, claim, IMAGE_MISSING, message, delivery_claim, policy)
        try:
            result = compare(data_a, data_b, engine_options(claim.options, limits))
        except ImagingError as exc:
            message = _imaging_message(exc)
            return _fail(sessions, claim, exc.code.value, message, delivery_claim, policy)
        except TimeLimitExceeded:
            raise
        except Exception as exc:  # an engine bug: record it, do not retry it
            log.exception("comparison.engine_error")
            message = f"internal error: {type(exc).__name__}"
            return _fail(sessions, claim, INTERNAL_ERROR, message, delivery_claim, policy)
        heatmap_key = HEATMAP_KEY.format(comparison_id=claim.comparison_id)
        with map_storage_errors("write heatmap"):
            store.put(heatmap_key, result.heatmap_png, content_type="image/png")
        written = _write(
            sessions,
            "finish",
            lambda session: lifecycle.succeed(
                session,
                claim,
                result=result.to_dict(),
                heatmap_key=heatmap_key,
                delivery_claim=delivery_claim,
            ),
            retry_s=policy.final_write_retry_s,
        )
    except TimeLimitExceeded:
        message = "the comparison took too long"
        return _fail(sessions, claim, TIME_LIMIT_EXCEEDED, message, delivery_claim, policy)
    if written is None:
        _drop_heatmap_if_canceled(sessions, store, claim, heatmap_key)
        return AfterCommit()
    log.info(
        "comparison.succeeded",
        attempt=claim.attempt,
        verdict=result.verdict,
        timings_ms=result.timings_ms,
    )
    return written

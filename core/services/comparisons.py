"""Comparisons: create (commit, then enqueue), read, list, cancel; and run (the worker's job).

Running a comparison (:func:`run_comparison`) is safe to repeat: a worker claims the row by
bumping ``attempt`` and taking a lease, works with no transaction open, and writes the outcome
only while its attempt still holds (``UPDATE ... WHERE id = ? AND attempt = ? AND state =
'running'``), so a stale worker can never overwrite a newer attempt or a cancellation.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
import tenacity
from sqlalchemy.orm import Session, sessionmaker

from core.config import DEFAULT_BIG_IMAGE_PIXELS, DEFAULT_PAGE_SIZE, LimitsSettings
from core.db.models import (
    Comparison,
    ComparisonState,
    Image,
    ImageStatus,
    utcnow,
)
from core.imaging import ImagingError, compare
from core.netguard.classify import IPNetwork
from core.services import lifecycle, previews
from core.services._common import (
    check_page_limit,
    cut_page,
    map_db_errors,
    map_storage_errors,
    newest_first,
    validate_metadata,
)
from core.services.errors import (
    ClaimNotReleased,
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceError,
    TimeLimitExceeded,
    Unavailable,
)
from core.services.heartbeat import Heartbeat
from core.services.jobqueue import JobQueue
from core.services.lifecycle import AfterCommit, Claim, mark_unsent
from core.services.options import ComparisonOptions, engine_options, parse_options
from core.services.routing import choose_queue, pair_pixels
from core.services.webhooks.guard import check_ad_hoc_url
from core.services.webhooks.outbox import DeliveryClaim
from core.storage import ObjectNotFound, ObjectStore

__all__ = [
    "DEFAULT_LEASE_S",
    "HEATMAP_KEY",
    "ComparisonVersion",
    "Page",
    "create_comparison",
    "delete_comparison",
    "get_comparison",
    "get_comparison_version",
    "list_comparison_versions",
    "list_comparisons",
    "page_version",
    "run_comparison",
]

log = structlog.get_logger(__name__)

#: Storage key of a comparison's heatmap (deterministic, so a re-run overwrites it).
HEATMAP_KEY = "heatmaps/{comparison_id}.png"
#: Lease of a claimed job when the caller gives none, in seconds (the default
#: ``worker.stale_running_after_s``: hard time limit 150 s + 30 s).
DEFAULT_LEASE_S = 180.0
#: Error codes of failures recorded by the service itself (the engine's codes come from
#: ``core.imaging.ErrorCode``).
IMAGE_MISSING = "image_missing"
TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
INTERNAL_ERROR = "internal_error"

_T = TypeVar("_T")
_Select = TypeVar("_Select", bound="sa.Select[*tuple[Any, ...]]")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ready_images(
    session: Session, tenant_id: uuid.UUID, image_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[ImageStatus, int | None, int | None]]:
    """Status, width and height of each of the tenant's images among ``image_ids``."""
    rows = session.execute(
        sa.select(Image.id, Image.status, Image.width, Image.height).where(
            Image.tenant_id == tenant_id, Image.id.in_(image_ids)
        )
    ).all()
    return {row.id: (row.status, row.width, row.height) for row in rows}


def create_comparison(
    session: Session,
    queue: JobQueue,
    *,
    tenant_id: uuid.UUID,
    image_a_id: uuid.UUID,
    image_b_id: uuid.UUID,
    options: ComparisonOptions | dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    webhook_url: str | None,
    allowed_networks: Sequence[IPNetwork] = (),
    big_image_pixels: int = DEFAULT_BIG_IMAGE_PIXELS,
) -> Comparison:
    """Write a ``queued`` comparison on the interactive queue (``big`` when the larger image
    has more than ``big_image_pixels`` pixels: ``core.services.routing``), COMMIT, then
    enqueue it.

    Both images must be the tenant's ``ready`` images (``NotFound`` / ``Conflict``). If the
    broker is down the row stays ``queued`` (the sweeper re-sends it) and this still succeeds.

    ``InvalidRequest`` for bad options (``core.services.options.parse_options``), ``metadata``
    that is not a JSON object of at most 16 KiB, or a ``webhook_url`` that is not an http(s)
    URL. The ``Conflict`` code is ``image_not_ready``.
    """
    normalised = parse_options(options).to_stored()
    metadata = validate_metadata(metadata)
    webhook_url = check_ad_hoc_url(webhook_url, allowed_networks=allowed_networks)
    with map_db_errors("create comparison"):
        statuses = _ready_images(session, tenant_id, [image_a_id, image_b_id])
        for name, image_id in (("a", image_a_id), ("b", image_b_id)):
            found = statuses.get(image_id)
            if found is None:
                session.commit()
                raise NotFound(f"image {name} ({image_id}) not found")
            if found[0] is not ImageStatus.READY:
                session.commit()
                raise Conflict(
                    f"image {name} ({image_id}) is not finalised yet", code="image_not_ready"
                )
        target = choose_queue(
            in_batch=False,
            pixels=pair_pixels(*(statuses[i][1:] for i in (image_a_id, image_b_id))),
            big_image_pixels=big_image_pixels,
        )
        now = utcnow()
        comparison = Comparison(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            image_a_id=image_a_id,
            image_b_id=image_b_id,
            options=normalised,
            client_metadata=metadata,
            webhook_url=webhook_url,
            queue=target,
            state=ComparisonState.QUEUED,
            attempt=0,
            crash_count=0,
            created_at=now,
            updated_at=now,
            enqueued_at=now,
        )
        session.add(comparison)
        session.commit()
    try:
        queue.enqueue_comparison(comparison.id, target)
    except Unavailable as exc:
        log.warning("comparison.enqueue_failed", comparison_id=str(comparison.id), error=str(exc))
        mark_unsent(session, [comparison.id])
        comparison.enqueued_at = None
    return comparison


def get_comparison(
    session: Session, *, tenant_id: uuid.UUID, comparison_id: uuid.UUID
) -> Comparison:
    """The tenant's comparison; ``NotFound`` otherwise."""
    with map_db_errors("get comparison"):
        row = session.scalars(
            sa.select(Comparison).where(
                Comparison.tenant_id == tenant_id, Comparison.id == comparison_id
            )
        ).one_or_none()
    if row is None:
        raise NotFound(f"comparison {comparison_id} not found")
    return row


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated listing, newest first."""

    items: list[Comparison]
    next_cursor: str | None


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidRequest(f"{name} needs a time zone (e.g. 2024-01-01T00:00:00Z)")
    return value


def _listing_filters(
    query: _Select,
    *,
    tenant_id: uuid.UUID,
    state: ComparisonState | None,
    batch_id: uuid.UUID | None,
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: str | None,
    limit: int,
) -> _Select:
    """``query`` restricted to the tenant and the filters, newest first, one page (+1 row)."""
    check_page_limit(limit)
    _aware(created_after, "created_after")
    _aware(created_before, "created_before")
    query = query.where(Comparison.tenant_id == tenant_id)
    if state is not None:
        try:
            query = query.where(Comparison.state == ComparisonState(state))
        except ValueError as exc:
            raise InvalidRequest(f"unknown state {state!r}") from exc
    if batch_id is not None:
        query = query.where(Comparison.batch_id == batch_id)
    if created_after is not None:
        query = query.where(Comparison.created_at >= created_after)
    if created_before is not None:
        query = query.where(Comparison.created_at < created_before)
    return newest_first(query, Comparison.created_at, Comparison.id, cursor=cursor, limit=limit)


def list_comparisons(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    state: ComparisonState | None = None,
    batch_id: uuid.UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Page:
    """Newest first, keyset-paginated on (created_at, id); ``cursor`` is opaque (from a previous
    page's ``next_cursor``); ``InvalidRequest`` for a malformed cursor or limit outside 1..100.

    ``created_after`` is inclusive, ``created_before`` exclusive; both must be timezone-aware.
    ``next_cursor`` is None on the last page. Rows created after the first page was read do
    not appear on later pages (they sort before the cursor).
    """
    query = _listing_filters(
        sa.select(Comparison),
        tenant_id=tenant_id,
        state=state,
        batch_id=batch_id,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit,
    )
    with map_db_errors("list comparisons"):
        rows, next_cursor = cut_page(list(session.scalars(query)), limit)
    return Page(items=rows, next_cursor=next_cursor)


# -- versions: what a conditional GET (ETag / If-None-Match) compares -------------------------


@dataclass(frozen=True)
class ComparisonVersion:
    """What changes exactly when a comparison's representation does.

    Every UPDATE of a comparison sets ``updated_at`` (explicitly, or the column's
    ``onupdate``) and ``updated_at`` is part of the representation, so ``(id, updated_at)``
    changes with it; ``state`` and ``attempt`` are kept beside it as a guard against two
    writes within one microsecond.
    """

    id: uuid.UUID
    updated_at: datetime
    state: ComparisonState
    attempt: int

    @classmethod
    def of(cls, row: Any) -> ComparisonVersion:
        """The version of a comparison row (or of a row with these four columns)."""
        return cls(row.id, row.updated_at, ComparisonState(row.state), int(row.attempt))

    def key(self) -> tuple[str, ...]:
        """The version as strings, for an ETag."""
        return (str(self.id), self.updated_at.isoformat(), self.state.value, str(self.attempt))


_VERSION_COLUMNS = (Comparison.id, Comparison.updated_at, Comparison.state, Comparison.attempt)


def get_comparison_version(
    session: Session, *, tenant_id: uuid.UUID, comparison_id: uuid.UUID
) -> ComparisonVersion:
    """The version of the tenant's comparison, reading four columns by primary key (not the
    result or options); ``NotFound`` otherwise, exactly as :func:`get_comparison`."""
    with map_db_errors("get comparison"):
        row = session.execute(
            sa.select(*_VERSION_COLUMNS).where(
                Comparison.tenant_id == tenant_id, Comparison.id == comparison_id
            )
        ).one_or_none()
    if row is None:
        raise NotFound(f"comparison {comparison_id} not found")
    return ComparisonVersion.of(row)


def page_version(items: Sequence[Any], next_cursor: str | None) -> tuple[str, ...]:
    """The version of a listing page: each item's :class:`ComparisonVersion` in order, and the
    next cursor."""
    parts = [part for item in items for part in ComparisonVersion.of(item).key()]
    return (*parts, next_cursor or "")


def list_comparison_versions(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    state: ComparisonState | None = None,
    batch_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[str, ...]:
    """The :func:`page_version` of the page :func:`list_comparisons` would return for the same
    arguments, reading only the version columns (and ``created_at`` for the cursor)."""
    query = _listing_filters(
        sa.select(*_VERSION_COLUMNS, Comparison.created_at),
        tenant_id=tenant_id,
        state=state,
        batch_id=batch_id,
        created_after=None,
        created_before=None,
        cursor=cursor,
        limit=limit,
    )
    with map_db_errors("list comparisons"):
        rows, next_cursor = cut_page(list(session.execute(query)), limit)
    return page_version(rows, next_cursor)


def delete_comparison(
    session: Session, store: ObjectStore, *, tenant_id: uuid.UUID, comparison_id: uuid.UUID
) -> Comparison:
    """Cancel a comparison that has not started (state becomes ``canceled``), or delete the
    result and heatmap of a finished one (its row stays, ``canceled`` with no result).
    Returns the updated row. Commits.

    A ``running`` comparison is canceled too: its worker's outcome is discarded when it
    finishes (the final write requires ``state = 'running'``). Canceling twice is harmless.
    The heatmap object is deleted after the commit (``Unavailable`` if storage is down: the
    call can be repeated). Completes the comparison's batch if it was the last open one.
    """
    with map_db_errors("delete comparison"):
        row, was_open = lifecycle.cancel(session, tenant_id=tenant_id, comparison_id=comparison_id)
        session.commit()
    if row is None:
        raise NotFound(f"comparison {comparison_id} not found")
    with map_storage_errors("delete heatmap"):
        store.delete(HEATMAP_KEY.format(comparison_id=comparison_id))
    previews.delete_previews(store, comparison_id)
    log.info("comparison.canceled", comparison_id=str(comparison_id), was_open=was_open)
    return row


# -- the worker's use case --------------------------------------------------------------------


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

"""Comparisons: create (commit, then enqueue), read, list, their versions for conditional GETs,
cancel and delete. Running one is the worker's use case, in ``core.services.runs``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.config import DEFAULT_BIG_IMAGE_PIXELS, DEFAULT_PAGE_SIZE
from core.db.models import (
    Comparison,
    ComparisonState,
    Image,
    ImageStatus,
    utcnow,
)
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
    Conflict,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from core.services.jobqueue import JobQueue
from core.services.lifecycle import mark_unsent
from core.services.options import ComparisonOptions, parse_options
from core.services.routing import choose_queue, pair_pixels
from core.services.webhooks.guard import check_ad_hoc_url
from core.storage import ObjectStore

__all__ = [
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
]

log = structlog.get_logger(__name__)

#: Storage key of a comparison's heatmap (deterministic, so a re-run overwrites it).
HEATMAP_KEY = "heatmaps/{comparison_id}.png"

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

"""Abandoned presigned uploads: ``pending`` images older than a limit, deleted with their bytes.

``POST /v1/images/presign`` creates a ``pending`` image and a URL to PUT its bytes to
(``uploads/<image_id>``); the client is expected to finalise it. One that never does would keep
its row and, if it PUT something, its object forever. :func:`sweep_abandoned_uploads` (a periodic
task every :data:`UPLOAD_SWEEP_INTERVAL_S`) deletes the pending images created more than
``limits.pending_upload_max_age_s`` ago: first the stored object (deleting a missing one does
nothing), then the row, only if it is still ``pending`` and no comparison refers to it, so an
upload finalised meanwhile is never touched. A pass interrupted by a database or storage outage
is simply resumed by the next one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Comparison, Image, ImageStatus, utcnow
from core.services._common import map_db_errors
from core.storage import ObjectStore

__all__ = ["UPLOAD_SWEEP_INTERVAL_S", "UploadSweepReport", "sweep_abandoned_uploads"]

log = structlog.get_logger(__name__)

#: Seconds between two passes of the upload sweep (beat's schedule).
UPLOAD_SWEEP_INTERVAL_S: Final = 3600.0
#: Most pending images deleted in one pass (the next pass takes the rest).
DEFAULT_BATCH: Final = 500


@dataclass(frozen=True)
class UploadSweepReport:
    """What one pass did: pending images deleted, and those left (finalised or referenced)."""

    deleted: int
    skipped: int


def sweep_abandoned_uploads(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    *,
    max_age_s: float,
    now: datetime | None = None,
    limit: int = DEFAULT_BATCH,
) -> UploadSweepReport:
    """Delete the ``pending`` images created more than ``max_age_s`` seconds ago, and their
    stored bytes.

    Parameters
    ----------
    sessions
        Session factory (one short transaction per image).
    store
        The object store holding the uploads.
    max_age_s
        Age, in seconds (> 0), after which a pending upload counts as abandoned.
    now
        The current time (UTC, aware); None means now.
    limit
        Most images handled in this pass (>= 1).

    Returns
    -------
    UploadSweepReport
        How many were deleted, and how many were left because they changed meanwhile.

    Raises
    ------
    Unavailable
        The database is unavailable (nothing is lost: the next pass resumes).
    StorageError
        The store failed (the row is kept, so the next pass tries again).
    """
    if not max_age_s > 0 or limit < 1:
        raise ValueError("max_age_s > 0 and limit >= 1 are required")
    cutoff = (now or utcnow()) - timedelta(seconds=max_age_s)
    with map_db_errors("find abandoned uploads"), sessions() as session:
        candidates: list[tuple[uuid.UUID, str]] = [
            (row.id, row.storage_key)
            for row in session.execute(
                sa.select(Image.id, Image.storage_key)
                .where(Image.status == ImageStatus.PENDING, Image.created_at < cutoff)
                .order_by(Image.created_at)
                .limit(limit)
            )
        ]
    deleted = skipped = 0
    for image_id, key in candidates:
        store.delete(key)  # first the bytes: a failure keeps the row for the next pass
        with map_db_errors("delete an abandoned upload"), sessions.begin() as session:
            referenced = sa.exists().where(
                sa.or_(Comparison.image_a_id == image_id, Comparison.image_b_id == image_id)
            )
            result = session.execute(
                sa.delete(Image)
                .where(
                    Image.id == image_id,
                    Image.status == ImageStatus.PENDING,
                    ~referenced,
                )
                .execution_options(synchronize_session=False)
            )
        if int(result.rowcount):  # type: ignore[attr-defined]
            deleted += 1
        else:
            skipped += 1
    if candidates:
        log.info("uploads.swept", deleted=deleted, skipped=skipped, max_age_s=max_age_s)
    return UploadSweepReport(deleted=deleted, skipped=skipped)

"""The viewer's previews of a comparison: rendered on first view, then kept next to the heatmap.

Two PNGs on A's pixel grid (see ``core.imaging.previews``): ``previews/<comparison_id>/a.png``
(A as decoded) and ``previews/<comparison_id>/b.png`` (B warped into A's frame by the applied
alignment, else B as decoded). They are rendered when a person first asks for them, not by the
worker: measured with ``bench/bench_viewer.py``, rendering them costs 1.4x the comparison itself
(1080p), and most results of a high-volume batch are never looked at. Only ``succeeded``
comparisons have previews; deleting a comparison deletes them.
"""

from __future__ import annotations

import threading
import uuid
from typing import Final, Literal

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, aliased

from core.config import LimitsSettings
from core.db.models import Comparison, ComparisonState, Image
from core.imaging import ImagingError
from core.imaging.previews import render_previews
from core.services._common import map_db_errors, map_storage_errors
from core.services.errors import NotFound
from core.storage import ObjectNotFound, ObjectStore

__all__ = [
    "PREVIEW_MAX_PIXELS",
    "PREVIEW_NAMES",
    "PREVIEW_NOT_AVAILABLE",
    "delete_previews",
    "get_preview",
    "preview_key",
]

log = structlog.get_logger(__name__)

PreviewName = Literal["a", "b", "heatmap"]
#: The rendered previews of one comparison (the heatmap is the worker's).
PREVIEW_NAMES: Final[tuple[Literal["a", "b"], ...]] = ("a", "b")
#: Error code of a preview that does not exist (not succeeded, or too large to render).
PREVIEW_NOT_AVAILABLE: Final = "preview_not_available"
#: Largest image A (width x height, pixels) whose previews are rendered on request: two 8K
#: frames. Above it the viewer shows the heatmap alone.
PREVIEW_MAX_PIXELS: Final = 2 * 7680 * 4320

_locks_guard = threading.Lock()
_locks: dict[uuid.UUID, threading.Lock] = {}


def preview_key(comparison_id: uuid.UUID, name: Literal["a", "b"]) -> str:
    """Storage key of one rendered preview (deterministic)."""
    return f"previews/{comparison_id}/{name}.png"


def _not_available(comparison_id: uuid.UUID, why: str) -> NotFound:
    return NotFound(f"comparison {comparison_id} has no preview: {why}", code=PREVIEW_NOT_AVAILABLE)


def _lock(comparison_id: uuid.UUID) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 1024:  # forget idle locks
            for key in [k for k, v in _locks.items() if not v.locked()]:
                del _locks[key]
        return _locks.setdefault(comparison_id, threading.Lock())


def get_preview(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    comparison_id: uuid.UUID,
    name: PreviewName,
    limits: LimitsSettings | None = None,
) -> bytes:
    """One preview PNG of a ``succeeded`` comparison of the tenant, rendered if not stored yet.

    Parameters
    ----------
    session
        A session; its transaction is committed before storage is read (none is held while
        rendering).
    store
        The object store holding the images and the heatmap.
    tenant_id, comparison_id
        Whose comparison; another tenant's is not found.
    name
        ``"a"``, ``"b"`` (B in A's frame) or ``"heatmap"``.
    limits
        Decoding limits (default: the settings' defaults).

    Raises
    ------
    NotFound
        ``not_found`` (no such comparison for the tenant) or ``preview_not_available`` (not
        succeeded, A over :data:`PREVIEW_MAX_PIXELS`, or the images are gone).
    Unavailable
        The database or storage is unavailable.
    """
    with map_db_errors("read comparison"):
        image_a, image_b = aliased(Image), aliased(Image)
        found = session.execute(
            sa.select(Comparison, image_a.storage_key, image_b.storage_key)
            .join(image_a, image_a.id == Comparison.image_a_id)
            .join(image_b, image_b.id == Comparison.image_b_id)
            .where(Comparison.tenant_id == tenant_id, Comparison.id == comparison_id)
        ).one_or_none()
        session.commit()
    if found is None:
        raise NotFound(f"comparison {comparison_id} not found")
    row, key_a, key_b = found
    if row.state != ComparisonState.SUCCEEDED or not row.result:
        raise _not_available(comparison_id, f"state {row.state}")
    if name == "heatmap":
        if row.heatmap_key is None:
            raise _not_available(comparison_id, "no heatmap")
        return _read(store, row.heatmap_key, comparison_id)
    key = preview_key(comparison_id, name)
    with _lock(comparison_id):  # one rendering per comparison at a time in this process
        with map_storage_errors("read preview"):
            try:
                return store.get(key)
            except ObjectNotFound:
                pass
        if int(row.result.get("width", 0)) * int(row.result.get("height", 0)) > PREVIEW_MAX_PIXELS:
            raise _not_available(comparison_id, "image A is too large to preview")
        rendered = _render(store, comparison_id, key_a, key_b, row.result, limits)
    return rendered[name]


def _read(store: ObjectStore, key: str, comparison_id: uuid.UUID) -> bytes:
    with map_storage_errors("read preview"):
        try:
            return store.get(key)
        except ObjectNotFound:
            raise _not_available(comparison_id, "its stored object is gone") from None


def _render(
    store: ObjectStore,
    comparison_id: uuid.UUID,
    key_a: str,
    key_b: str,
    result: dict[str, object],
    limits: LimitsSettings | None,
) -> dict[str, bytes]:
    limits = limits or LimitsSettings()
    data_a, data_b = _read(store, key_a, comparison_id), _read(store, key_b, comparison_id)
    alignment = result.get("alignment")
    homography = None
    if isinstance(alignment, dict) and alignment.get("applied"):
        homography = alignment.get("homography")
    try:
        previews = render_previews(
            data_a,
            data_b,
            homography,
            max_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
        )
    except (ImagingError, ValueError) as exc:
        log.warning("comparison.preview_failed", comparison_id=str(comparison_id), error=str(exc))
        raise _not_available(comparison_id, "it cannot be rendered") from exc
    rendered = {"a": previews.a_png, "b": previews.b_png}
    with map_storage_errors("write previews"):
        for name in PREVIEW_NAMES:
            store.put(preview_key(comparison_id, name), rendered[name], content_type="image/png")
    return rendered


def delete_previews(store: ObjectStore, comparison_id: uuid.UUID) -> None:
    """Delete a comparison's rendered previews (missing ones are fine).

    Raises
    ------
    Unavailable
        Storage is unavailable.
    """
    with map_storage_errors("delete previews"):
        for name in PREVIEW_NAMES:
            store.delete(preview_key(comparison_id, name))

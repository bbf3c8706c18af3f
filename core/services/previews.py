"""The viewer's previews of a comparison, stored next to its heatmap.

After a comparison succeeds the worker stores two PNGs on A's pixel grid (see
``core.imaging.previews``): ``previews/<comparison_id>/a.png`` (A as decoded) and
``previews/<comparison_id>/b.png`` (B warped into A's frame when alignment was applied, else B
as decoded). They are a convenience for people looking at a result: a preview that cannot be
rendered is logged and skipped, never a reason to fail the comparison. The API serves them only
while the comparison is ``succeeded``; deleting a comparison deletes them.
"""

from __future__ import annotations

import uuid
from typing import Any, Final, Literal

import structlog

from core.config import LimitsSettings
from core.imaging import ImagingError
from core.imaging.previews import render_previews
from core.services._common import map_storage_errors
from core.storage import ObjectStore

__all__ = ["PREVIEW_NAMES", "delete_previews", "preview_key", "store_previews"]

log = structlog.get_logger(__name__)

PreviewName = Literal["a", "b"]
#: The previews of one comparison.
PREVIEW_NAMES: Final[tuple[PreviewName, ...]] = ("a", "b")


def preview_key(comparison_id: uuid.UUID, name: PreviewName) -> str:
    """Storage key of one preview (deterministic: a re-run overwrites it)."""
    return f"previews/{comparison_id}/{name}.png"


def store_previews(
    store: ObjectStore,
    comparison_id: uuid.UUID,
    data_a: bytes,
    data_b: bytes,
    result: dict[str, Any],
    limits: LimitsSettings | None = None,
) -> bool:
    """Render and store the previews of a succeeded comparison; True when stored.

    Parameters
    ----------
    store
        Where the heatmap went.
    comparison_id
        The comparison.
    data_a, data_b
        The compared images' bytes.
    result
        The result contract (``result.to_dict()``): its ``alignment`` says whether and how B
        was warped.
    limits
        Decoding limits (those the comparison ran with; default: the settings' defaults).

    Raises
    ------
    Unavailable
        Storage is unavailable (as for the heatmap: the job is retried).
    """
    limits = limits or LimitsSettings()
    alignment = result.get("alignment") or {}
    homography = alignment.get("homography") if alignment.get("applied") else None
    try:
        previews = render_previews(
            data_a,
            data_b,
            homography,
            max_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
        )
    except (ImagingError, ValueError) as exc:
        log.warning("comparison.preview_skipped", comparison_id=str(comparison_id), error=str(exc))
        return False
    with map_storage_errors("write previews"):
        store.put(preview_key(comparison_id, "a"), previews.a_png, content_type="image/png")
        store.put(preview_key(comparison_id, "b"), previews.b_png, content_type="image/png")
    return True


def delete_previews(store: ObjectStore, comparison_id: uuid.UUID) -> None:
    """Delete a comparison's previews (missing ones are fine).

    Raises
    ------
    Unavailable
        Storage is unavailable.
    """
    with map_storage_errors("delete previews"):
        for name in PREVIEW_NAMES:
            store.delete(preview_key(comparison_id, name))

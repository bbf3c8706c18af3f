"""Misregistration: a mirrored B found by the correlation of thumbnails, a transform found
(not applied) to explain a pixel-mode pair, and the alignment records of both."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from core.imaging.align.estimate import estimate_alignment
from core.imaging.align.geometry import is_identity
from core.imaging.align.result import Alignment
from core.imaging.regions import Region
from core.imaging.verdict import THUMB_SIDE

__all__ = [
    "FLIPS",
    "FLIP_MIN_CORRELATION",
    "FLIP_MIN_GAIN",
    "THUMB_DIRECT_MAX_PIXELS",
    "area_thumbnail",
    "diagnose",
    "flip_alignment",
    "thumbnail_correlation",
]

#: A mirrored B is adopted when its thumbnail correlation with A reaches this...
FLIP_MIN_CORRELATION = 0.95
#: ... and beats the direct comparison's by this much.
FLIP_MIN_GAIN = 0.02
#: The flips tried: name, and the axes of ``numpy.flip``.
FLIPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("horizontal", (1,)),
    ("vertical", (0,)),
    ("both", (0, 1)),
)


#: Images of more pixels than this are reduced to their thumbnails in row bands (see
#: ``area_thumbnail``), so that no full-size float plane is ever held.
THUMB_DIRECT_MAX_PIXELS = 16_000_000
#: Pixels per band of that reduction.
THUMB_BAND_PIXELS = 1 << 22


def area_thumbnail(
    plane_rows: Callable[[int, int], np.ndarray], height: int, width: int, size: tuple[int, int]
) -> np.ndarray:
    """A ``float32`` plane reduced to ``size`` (width, height) by area averaging.

    ``plane_rows(r0, r1)`` gives rows ``r0 .. r1 - 1`` of the plane as ``float32``. Up to
    ``THUMB_DIRECT_MAX_PIXELS`` the whole plane is resized at once (``cv2.INTER_AREA``); a
    bigger plane is first averaged over ``f`` x ``f`` blocks band by band (``f`` = the shorter
    side over 8 thumbnail sides), then that reduction is resized: the same averages up to the
    weights of the pixels that straddle two thumbnail pixels, in a band's memory.
    """
    if height * width <= THUMB_DIRECT_MAX_PIXELS:
        return np.asarray(cv2.resize(plane_rows(0, height), size, interpolation=cv2.INTER_AREA))
    f = max(1, min(height, width) // (8 * THUMB_SIDE))
    rows = f * max(1, THUMB_BAND_PIXELS // (width * f))
    out_width = max(1, width // f)
    parts = []
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        out_height = max(1, round((r1 - r0) / f))
        parts.append(
            cv2.resize(plane_rows(r0, r1), (out_width, out_height), interpolation=cv2.INTER_AREA)
        )
    return np.asarray(cv2.resize(np.vstack(parts), size, interpolation=cv2.INTER_AREA))


def thumbnail_correlation(
    pa: np.ndarray,
    pb: np.ndarray,
    valid: np.ndarray | None,
    *,
    holes: Sequence[Region] = (),
) -> float:
    """Pearson correlation (-1..1) of grey thumbnails of A and B over the compared pixels.

    Thumbnails have a longer side of ``THUMB_SIDE`` px (area averaging, ``area_thumbnail``);
    only thumbnail pixels wholly inside ``valid`` and outside every box of ``holes`` count
    (the holes are ignored when they would leave no pixel). Flat images (no variance)
    correlate 1 when their means agree within 2 % of the range, else 0.
    """
    height, width = pa.shape[:2]
    k = THUMB_SIDE / max(height, width)
    size = (max(1, round(width * k)), max(1, round(height * k)))
    scale = 1.0 / 257.0 if pa.dtype == np.uint16 else 1.0

    def grey_rows(img: np.ndarray) -> Callable[[int, int], np.ndarray]:
        def rows(r0: int, r1: int) -> np.ndarray:
            # The channel mean, summed in place (one float32 plane, not a float32 copy of
            # every channel): the same operations in the same order as ``mean(axis=2)``.
            band = img[r0:r1]
            channels = min(img.shape[2], 3)
            grey = band[..., 0].astype(np.float32)
            for c in range(1, channels):
                grey += band[..., c]
            grey /= np.float32(channels)
            grey *= scale
            return grey

        return rows

    ta = area_thumbnail(grey_rows(pa), height, width, size)
    tb = area_thumbnail(grey_rows(pb), height, width, size)

    def mask_rows(with_holes: bool) -> Callable[[int, int], np.ndarray]:
        def rows(r0: int, r1: int) -> np.ndarray:
            if valid is None:
                band = np.ones((r1 - r0, width), dtype=np.float32)
            else:
                band = valid[r0:r1].astype(np.float32)
            for box in holes if with_holes else ():
                top, bottom = max(box.y, r0), min(box.y + box.height, r1)
                if top < bottom:
                    band[top - r0 : bottom - r0, box.x : box.x + box.width] = 0.0
            return band

        return rows

    if valid is not None or holes:
        inside = area_thumbnail(mask_rows(True), height, width, size)
        if holes and not (inside > 0).any():  # the holes left nothing: compare without them
            inside = area_thumbnail(mask_rows(False), height, width, size)
        keep = inside >= 0.999
        ta, tb = ta[keep], tb[keep]
    ta, tb = ta.ravel().astype(np.float64), tb.ravel().astype(np.float64)
    if ta.size < 2:
        return 0.0
    sa, sb = float(ta.std()), float(tb.std())
    if sa < 1e-3 or sb < 1e-3:
        return 1.0 if abs(float(ta.mean()) - float(tb.mean())) <= 0.02 * 255 else 0.0
    return float(np.mean((ta - ta.mean()) * (tb - tb.mean())) / (sa * sb))


def flip_alignment(axis: str, shape: tuple[int, int]) -> Alignment:
    height, width = shape
    h = np.eye(3)
    if axis in ("horizontal", "both"):
        h[0, 0], h[0, 2] = -1.0, width - 1.0
    if axis in ("vertical", "both"):
        h[1, 1], h[1, 2] = -1.0, height - 1.0
    h.flags.writeable = False
    return Alignment(
        applied=True,
        method=f"flip-{axis}",
        homography=h,
        inliers=0,
        inlier_ratio=0.0,
        reprojection_error=None,
        translation=None,
        rotation_deg=180.0 if axis == "both" else None,
        scale=1.0,
        overlap_ratio=1.0,
        reason=None,
    )


def diagnose(pa: np.ndarray, pb: np.ndarray) -> Alignment | None:
    """In pixel mode: find (not apply) a non-identity transform that explains the differences."""
    found = estimate_alignment(pa, pb)
    if not found.applied or found.homography is None:
        return None
    if is_identity(found.homography, pa.shape[:2]):
        return None
    return found

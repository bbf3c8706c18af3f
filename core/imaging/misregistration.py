"""Misregistration: a mirrored B found by the correlation of thumbnails, a transform found
(not applied) to explain a pixel-mode pair, and the alignment records of both."""

from __future__ import annotations

import cv2
import numpy as np

from core.imaging.align.estimate import estimate_alignment
from core.imaging.align.geometry import is_identity
from core.imaging.align.result import Alignment
from core.imaging.verdict import THUMB_SIDE

__all__ = [
    "FLIPS",
    "FLIP_MIN_CORRELATION",
    "FLIP_MIN_GAIN",
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


def thumbnail_correlation(pa: np.ndarray, pb: np.ndarray, valid: np.ndarray | None) -> float:
    """Pearson correlation (-1..1) of grey thumbnails of A and B over the compared pixels.

    Thumbnails have a longer side of ``THUMB_SIDE`` px (area averaging); only thumbnail
    pixels wholly inside ``valid`` count. Flat images (no variance) correlate 1 when their
    means agree within 2 % of the range, else 0.
    """
    height, width = pa.shape[:2]
    k = THUMB_SIDE / max(height, width)
    size = (max(1, round(width * k)), max(1, round(height * k)))
    scale = 1.0 / 257.0 if pa.dtype == np.uint16 else 1.0

    def thumb(img: np.ndarray) -> np.ndarray:
        # The channel mean, summed in place (one float32 plane, not a float32 copy of every
        # channel): the same operations in the same order as ``mean(axis=2)``, the same bits.
        channels = min(img.shape[2], 3)
        grey = img[..., 0].astype(np.float32)
        for c in range(1, channels):
            grey += img[..., c]
        grey /= np.float32(channels)
        grey *= scale
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    ta, tb = thumb(pa), thumb(pb)
    if valid is not None:
        keep = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.999
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

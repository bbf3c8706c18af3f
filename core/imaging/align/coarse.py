"""The coarse fit of B -> A to the ratio-test matches: a MAGSAC homography, or when it is
degenerate a partial affine (rotation, uniform scale, shift), or the reason there is none."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.imaging.align.geometry import degenerate_reason

#: MAGSAC threshold in px of the reduced copy (multiplied by the reduction factor).
COARSE_THRESHOLD_PX = 3.0


@dataclass
class CoarseFit:
    """A coarse B -> A transform and the feature matches (full-resolution px) that agree
    with it; ``ratio`` is inliers / ratio-test matches (0..1)."""

    homography: np.ndarray
    model: str  # "magsac-homography" or "partial-affine"
    inlier_b: np.ndarray
    inlier_a: np.ndarray
    inliers: int
    ratio: float


@dataclass
class Refusal:
    """Why one try found no trustworthy transform, with the best support it had."""

    reason: str
    inliers: int = 0
    ratio: float = 0.0


def fit_coarse(
    pts_b: np.ndarray,
    pts_a: np.ndarray,
    b_shape: tuple[int, int],
    threshold: float,
    min_inliers: int,
) -> CoarseFit | Refusal:
    """Robust fit of B -> A to the ratio-test matches, or why there is none."""
    n = len(pts_b)
    if n < min_inliers:
        return Refusal(f"too few matches ({n} < {min_inliers})")
    src = pts_b.astype(np.float32)
    dst = pts_a.astype(np.float32)
    refusal = Refusal("no homography found")
    h, mask = cv2.findHomography(
        src, dst, cv2.USAC_MAGSAC, threshold, maxIters=5000, confidence=0.999
    )
    if h is not None and mask is not None:
        keep = mask.ravel().astype(bool)
        count = int(keep.sum())
        if count < min_inliers:
            return Refusal(
                f"too few inliers ({count} < {min_inliers} of {n} matches)", count, count / n
            )
        h = h / h[2, 2]
        bad = degenerate_reason(h, b_shape)
        if bad is None:
            return CoarseFit(h, "magsac-homography", pts_b[keep], pts_a[keep], count, count / n)
        refusal = Refusal(bad)
    m, mask = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=threshold,
        maxIters=5000,
        confidence=0.999,
    )
    if m is None or mask is None:
        return refusal
    keep = mask.ravel().astype(bool)
    count = int(keep.sum())
    if count < min_inliers:
        return Refusal(
            f"{refusal.reason}; partial affine: too few inliers ({count} < {min_inliers})",
            count,
            count / n,
        )
    h = np.vstack([m.astype(np.float64), [0.0, 0.0, 1.0]])
    bad = degenerate_reason(h, b_shape)
    if bad is not None:
        return Refusal(f"{refusal.reason}; partial affine: {bad}")
    return CoarseFit(h, "partial-affine", pts_b[keep], pts_a[keep], count, count / n)

"""SSIM floors: what an unchanged pair cannot exceed once it went through a transform. The
resampling floor (A warped into B's frame and back, after an alignment) and the rendering floor
(A moved a fraction of a pixel: the same page rendered again); the verdict judges a pair's SSIM
against them."""

from __future__ import annotations

import cv2
import numpy as np

from core.imaging.align.warp import warp_into
from core.imaging.metrics import ssim
from core.imaging.verdict import IDENTICAL_MAX_CHANGED, IDENTICAL_MIN_SSIM

__all__ = [
    "RENDER_MIN_NOISE",
    "RENDER_NOISE_DOMINANCE",
    "RENDER_SHIFT_PX",
    "rendering_floor",
    "round_trip",
]

#: The rendering floor (``rendering_floor``) is estimated only when rendering noise dominates:
#: at least this share of the compared pixels anti-aliased ...
RENDER_MIN_NOISE = 0.01
#: ... and at least this many times the pixels still changed.
RENDER_NOISE_DOMINANCE = 3.0
#: The sub-pixel offset (px, along both axes) of the rendering floor's copy of A.
RENDER_SHIFT_PX = 0.25


def round_trip(pa: np.ndarray, homography: np.ndarray, b_shape: tuple[int, int]) -> np.ndarray:
    """A resampled into B's frame (bilinear, as most editors resample) and back onto A's grid
    with ``warp_into``: what an untouched, warped copy of A looks like after alignment. Its
    SSIM against A is the resampling floor (``ssim_floor``)."""
    height, width = b_shape
    inverse = np.linalg.inv(homography)
    there = cv2.warpPerspective(
        pa, inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if there.ndim == 2:
        there = there[..., None]
    back, _ = warp_into(np.ascontiguousarray(there), homography, pa.shape[:2])
    return back


def rendering_floor(
    pa: np.ndarray,
    score: float,
    changed_ratio: float,
    noise_ratio: float,
    valid: np.ndarray | None,
    data_range: int,
) -> float | None:
    """SSIM of A against A moved by ``RENDER_SHIFT_PX`` px (bilinear): what rendering the same
    content a fraction of a pixel away costs (another glyph positioning, device scale or
    transform), the floor below which an otherwise unchanged re-rendered page cannot go.

    Estimated only where it can decide the verdict: no significant region, few pixels still
    changed, SSIM below ``IDENTICAL_MIN_SSIM``, and rendering noise dominating the changed
    pixels (``RENDER_MIN_NOISE``, ``RENDER_NOISE_DOMINANCE``); else None.
    """
    if (
        score >= IDENTICAL_MIN_SSIM
        or changed_ratio > IDENTICAL_MAX_CHANGED
        or noise_ratio < RENDER_MIN_NOISE
        or noise_ratio < RENDER_NOISE_DOMINANCE * changed_ratio
    ):
        return None
    shift = np.array([[1.0, 0.0, RENDER_SHIFT_PX], [0.0, 1.0, RENDER_SHIFT_PX]], np.float32)
    moved = cv2.warpAffine(
        pa,
        shift,
        (pa.shape[1], pa.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    moved = np.asarray(moved)
    if moved.ndim < pa.ndim:
        moved = moved[..., None]
    return ssim(pa, moved, data_range=data_range, mask=valid, keep_map=False).score

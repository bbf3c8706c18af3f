"""The outcome of aligning B onto A (:class:`Alignment`): whether a transform was applied, how it
was found, the homography, its support (inliers, ratio, residual), what it does (shift,
rotation, scale), the overlap, or the reason for a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """The outcome of aligning B onto A.

    Attributes
    ----------
    applied
        True only when a trustworthy transform was found.
    method
        How it was found: detector, coarse model and, when refined, ``+lk-`` and the model
        of the final fit, e.g. ``"orb+magsac-homography+lk-similarity"`` or
        ``"sift+partial-affine"`` (``refine=False``); None when nothing was found.
    homography
        3x3 float64 matrix mapping a point ``(x, y, 1)`` of B to its place in A, normalised so
        ``homography[2, 2] == 1``; None when nothing was found.
    inliers
        Correspondences that agree with the transform: tracked points when refined, feature
        matches otherwise. For a refusal, the most inliers of a non-degenerate feature fit
        (0 if there was none).
    inlier_ratio
        Feature-match inliers / ratio-test matches, 0..1.
    reprojection_error
        RMS distance in A's pixels between the inliers' positions in A and their mapped
        positions from B.
    translation
        ``(dx, dy)`` in px: ``homography[0, 2], homography[1, 2]``.
    rotation_deg
        Rotation applied to B, degrees, counter-clockwise positive as displayed (y down).
    scale
        ``sqrt(|det|)`` of the 2x2 linear part: > 1 when B's content is enlarged to fit A.
    overlap_ratio
        Share of A's pixels covered by the warped B, 0..1.
    reason
        Why no transform was applied (None when applied).
    """

    applied: bool
    method: str | None
    homography: np.ndarray | None = field(compare=False)
    inliers: int
    inlier_ratio: float
    reprojection_error: float | None
    translation: tuple[float, float] | None
    rotation_deg: float | None
    scale: float | None
    overlap_ratio: float | None
    reason: str | None

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict (homography as a 3x3 list of floats, tuples as lists)."""
        return {
            "applied": self.applied,
            "method": self.method,
            "homography": (
                None
                if self.homography is None
                else [[float(v) for v in row] for row in self.homography]
            ),
            "inliers": int(self.inliers),
            "inlier_ratio": float(self.inlier_ratio),
            "reprojection_error": _opt_float(self.reprojection_error),
            "translation": None
            if self.translation is None
            else [float(v) for v in self.translation],
            "rotation_deg": _opt_float(self.rotation_deg),
            "scale": _opt_float(self.scale),
            "overlap_ratio": _opt_float(self.overlap_ratio),
            "reason": self.reason,
        }


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def failed_alignment(
    reason: str, *, method: str | None = None, inliers: int = 0, ratio: float = 0.0
) -> Alignment:
    """An alignment that applies nothing, for ``reason``."""
    return Alignment(
        applied=False,
        method=method,
        homography=None,
        inliers=inliers,
        inlier_ratio=ratio,
        reprojection_error=None,
        translation=None,
        rotation_deg=None,
        scale=None,
        overlap_ratio=None,
        reason=reason,
    )

"""Alignment of B onto A, end to end: grey copies, then ORB and, when it finds no trustworthy
transform, SIFT: keypoints, matches, the coarse fit, its checks, the refinement, the result
(the algorithm is described in :mod:`core.imaging.align`)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from core.imaging.align.coarse import COARSE_THRESHOLD_PX, Refusal, fit_coarse
from core.imaging.align.features import (
    DEFAULT_MAX_FEATURES,
    DETECT_MAX_SIDE,
    FLAT_STD,
    ORB_FAST_THRESHOLD,
    ORB_RATIO,
    SIFT_CONTRAST,
    SIFT_MAX_SIDE,
    SIFT_RATIO,
    detect_features,
    grey_pair,
    match_features,
    reduce_grey,
    reduction_factor,
    validate_image,
)
from core.imaging.align.geometry import (
    apply_homography,
    covered_share,
    degenerate_reason,
    describe_homography,
)
from core.imaging.align.refine import refine_coarse, rms_residual
from core.imaging.align.result import Alignment, failed_alignment
from core.imaging.errors import ErrorCode, ImagingError

#: Default smallest number of agreeing correspondences for a trustworthy transform. Unrelated
#: photograph pairs give at most ~15 MAGSAC inliers, and those transforms are degenerate.
DEFAULT_MIN_INLIERS = 20


def estimate_alignment(
    a: np.ndarray,
    b: np.ndarray,
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    min_inliers: int = DEFAULT_MIN_INLIERS,
    refine: bool = True,
) -> Alignment:
    """Find the homography that maps image B onto image A, or say why there is none.

    Parameters
    ----------
    a, b
        ``HxWxC`` (C = 3 or 4) ``uint8`` or ``uint16`` arrays; sizes may differ.
    max_features
        Keypoints kept per image and detector (>= 10).
    min_inliers
        Smallest number of agreeing correspondences for a trustworthy transform (>= 4).
    refine
        Refine the feature estimate to sub-pixel accuracy by Lucas-Kanade tracking, which also
        verifies it (see the module docstring).

    Returns
    -------
    Alignment
        ``applied=True`` with the B -> A homography, or ``applied=False`` with a ``reason``.

    Raises
    ------
    ImagingError
        ``UNSUPPORTED_FORMAT`` for arrays that are not 2-D/3-D ``uint8``/``uint16`` images;
        ``INVALID_OPTIONS`` for ``max_features < 10`` or ``min_inliers < 4``.
    """
    validate_image(a, "a")
    validate_image(b, "b")
    if max_features < 10 or min_inliers < 4:
        raise ImagingError(
            ErrorCode.INVALID_OPTIONS, "max_features must be >= 10 and min_inliers >= 4"
        )
    ga, gb = grey_pair(a, b)
    for name, grey in (("A", ga), ("B", gb)):
        _, std = cv2.meanStdDev(reduce_grey(grey, reduction_factor(grey.shape, DETECT_MAX_SIDE)))
        if float(std[0, 0]) < FLAT_STD:
            return failed_alignment(f"image {name} is flat: nothing to align on")
    detectors: list[tuple[str, cv2.Feature2D, int, float, int, bool]] = [
        (
            "orb",
            cv2.ORB.create(nfeatures=max_features, fastThreshold=ORB_FAST_THRESHOLD),
            cv2.NORM_HAMMING,
            ORB_RATIO,
            DETECT_MAX_SIDE,
            False,
        ),
        (
            "sift",
            cv2.SIFT.create(nfeatures=max_features, contrastThreshold=SIFT_CONTRAST),
            cv2.NORM_L2,
            SIFT_RATIO,
            SIFT_MAX_SIDE,
            True,
        ),
    ]
    reasons: list[str] = []
    best = Refusal("", 0, 0.0)
    for name, detector, norm, ratio, max_side, equalise in detectors:
        found = _attempt(ga, gb, detector, norm, ratio, max_side, equalise, min_inliers, refine)
        if isinstance(found, Alignment):
            return replace(found, method=f"{name}+{found.method}")
        reasons.append(f"{name}: {found.reason}")
        if found.inliers > best.inliers:
            best = found
    return failed_alignment("; ".join(reasons), inliers=best.inliers, ratio=best.ratio)


def _attempt(
    ga: np.ndarray,
    gb: np.ndarray,
    detector: cv2.Feature2D,
    norm: int,
    ratio: float,
    max_side: int,
    equalise: bool,
    min_inliers: int,
    refine: bool,
) -> Alignment | Refusal:
    """One detector's try: features, matches, coarse fit, checks, refinement."""
    fa = detect_features(ga, detector, max_side, equalise=equalise)
    if len(fa.points) < min_inliers:
        return Refusal(f"too few features in A ({len(fa.points)} < {min_inliers})")
    fb = detect_features(gb, detector, max_side, equalise=equalise)
    if len(fb.points) < min_inliers:
        return Refusal(f"too few features in B ({len(fb.points)} < {min_inliers})")
    pts_b, pts_a = match_features(fa, fb, norm, ratio)
    threshold = COARSE_THRESHOLD_PX * reduction_factor(ga.shape, max_side)
    coarse = fit_coarse(pts_b, pts_a, gb.shape, threshold, min_inliers)
    if isinstance(coarse, Refusal):
        return coarse
    method = coarse.model
    h = coarse.homography
    inliers = coarse.inliers
    rms = rms_residual(h, coarse.inlier_b, coarse.inlier_a)
    if refine:
        candidates = np.vstack([fa.points, apply_homography(h, fb.points)])
        responses = np.concatenate([fa.responses, fb.responses])
        refined = refine_coarse(ga, gb, coarse, candidates, responses, min_inliers)
        if isinstance(refined, str):
            return Refusal(refined, coarse.inliers, coarse.ratio)
        bad = degenerate_reason(refined.homography, gb.shape)
        if bad is not None:
            return Refusal(f"refined {bad}", coarse.inliers, coarse.ratio)
        h, inliers, rms = refined.homography, refined.inliers, refined.rms
        if refined.improved:
            method += f"+lk-{refined.model}"
    overlap = covered_share(h, gb.shape, ga.shape)
    if overlap <= 0.0:
        return Refusal("the warped B does not overlap A", coarse.inliers, coarse.ratio)
    rotation, scale, _ = describe_homography(h)
    h = h.copy()
    h.flags.writeable = False
    return Alignment(
        applied=True,
        method=method,
        homography=h,
        inliers=inliers,
        inlier_ratio=coarse.ratio,
        reprojection_error=rms,
        translation=(float(h[0, 2]), float(h[1, 2])),
        rotation_deg=rotation,
        scale=scale,
        overlap_ratio=overlap,
        reason=None,
    )

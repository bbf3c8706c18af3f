"""Feature-based alignment of image B onto image A: a homography, checked, refined, explained.

Algorithm
---------
1. **Grey copies.** Both images become ``uint8`` greyscale (16-bit input is scaled by one factor
   shared by A and B; RGBA is premultiplied by alpha, so transparent areas are black).
2. **Coarse match.** Keypoints and descriptors are found on copies reduced by an integer factor
   (``k x k`` block averages, so the longest side is at most ``DETECT_MAX_SIDE``; a 1920x1080
   frame becomes 960x540), matched by brute force (k=2) with Lowe's ratio test, and a homography
   B -> A is fitted with ``cv2.findHomography(..., cv2.USAC_MAGSAC)`` in full-resolution
   coordinates. ORB runs first (about 10 ms per 1080p image); when it yields no trustworthy
   transform, SIFT on CLAHE-equalised copies (about 10x slower, far better on low-contrast or
   heavily rescaled content) is tried.
3. **Sanity checks.** A homography is degenerate when it mirrors or folds B (a corner of B maps
   behind the camera, or the determinant is not positive), scales outside
   ``[MIN_SCALE, MAX_SCALE]``, shears beyond ``MAX_ANISOTROPY`` or has strong perspective (the
   projective denominator varies over B by more than ``MAX_PERSPECTIVE``). A degenerate
   homography falls back to ``cv2.estimateAffinePartial2D`` (rotation, uniform scale, shift).
4. **Refinement and verification** (``refine=True``). Feature positions are good to 0.3-3 px at
   full resolution (worse at A's corners when B covers only part of A), so: B's grey copy is
   warped into A's frame with the coarse estimate (full resolution up to ``REFINE_MAX_SIDE``),
   its tones are mapped onto A's (a monotone curve fitted on the overlap, so exposure, contrast
   or gamma changes do not bias the tracks), and up to ``REFINE_POINTS`` well-spread keypoints
   are tracked with pyramidal Lucas-Kanade (sub-pixel, forward-backward checked). Tracks that
   agree within ``REFINE_THRESHOLD_PX`` (RANSAC) must number at least ``min_inliers`` and
   ``MIN_TRACK_AGREEMENT`` of all tracks, otherwise the transform is refused. The final map is
   the least-squares fit of the simplest adequate model (similarity, affine or homography,
   chosen by an F-test plus a minimum gain, because spurious perspective terms extrapolate
   badly to A's corners). It is kept only if it lowers the RMS residual of the tracks; on the
   test photographs it cuts the corner error from 0.26-7.2 px to 0.004-0.16 px.

Conventions
-----------
The homography maps a point ``(x, y, 1)`` of B (pixel centres at integer coordinates) to its
place in A. ``rotation_deg`` is the rotation that homography applies to B, counter-clockwise
positive as displayed (y axis pointing down): if B is A turned 6 degrees counter-clockwise,
``rotation_deg`` is about -6. ``scale`` > 1 means B's content appears larger in A than in B.

Cost (1920x1080 RGB pair, measured on 2 cores shared with other work): ``estimate_alignment``
takes about 55-60 ms of CPU on the ORB path (detection ~15, matching ~15, refinement ~25) and
``warp_into`` about 35 (bicubic warp ~30, mask ~4); wall-clock medians of both together were
80-180 ms depending on the load. A pair that needs SIFT, or that has no transform at all
(both detectors run), costs 200-600 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from core.imaging.errors import ErrorCode, ImagingError

# Coarse stage ------------------------------------------------------------------------------
#: Longest side, in px, of the reduced grey copies ORB runs on (integer reduction factor).
DETECT_MAX_SIDE = 1024
#: Longest side of the reduced copies SIFT (the fallback detector) runs on.
SIFT_MAX_SIDE = 800
#: ORB's FAST threshold (grey levels): low, so low-contrast photographs still give keypoints.
ORB_FAST_THRESHOLD = 8
#: SIFT's contrast threshold (OpenCV's default), applied after CLAHE equalisation.
SIFT_CONTRAST = 0.04
#: Clip limit of the CLAHE equalisation of SIFT's copies.
CLAHE_CLIP = 2.0
#: Default number of keypoints kept per image (matching cost grows with its square).
DEFAULT_MAX_FEATURES = 1000
#: Default smallest number of agreeing correspondences for a trustworthy transform. Unrelated
#: photograph pairs give at most ~15 MAGSAC inliers, and those transforms are degenerate.
DEFAULT_MIN_INLIERS = 20
#: Lowe ratio-test thresholds (best / second-best descriptor distance).
ORB_RATIO = 0.8
SIFT_RATIO = 0.75
#: MAGSAC threshold in px of the reduced copy (multiplied by the reduction factor).
COARSE_THRESHOLD_PX = 3.0
#: An image whose reduced grey copy has a standard deviation below this (levels) is flat.
FLAT_STD = 1.0

# Sanity checks ------------------------------------------------------------------------------
#: Accepted range of ``scale`` (square root of the determinant of the linear part).
MIN_SCALE, MAX_SCALE = 0.2, 5.0
#: Largest ratio of the two singular values of the linear part (shear, anisotropic scale).
MAX_ANISOTROPY = 3.0
#: Largest ratio of the projective denominators over B's corners (1 for an affine map).
MAX_PERSPECTIVE = 2.0

# Refinement --------------------------------------------------------------------------------
#: Longest side of A's grey copy used for refinement (integer reduction beyond it).
REFINE_MAX_SIDE = 4096
#: Most points tracked (spread over an 8x8 grid of A).
REFINE_POINTS = 400
#: Lucas-Kanade window side (px), pyramid levels, forward-backward tolerance (px).
LK_WINDOW = 21
LK_LEVELS = 2
LK_FB_MAX_PX = 0.5
#: RANSAC threshold (px) for tracks to agree with a homography.
REFINE_THRESHOLD_PX = 1.0
#: Share of the tracked points that must agree with the transform.
MIN_TRACK_AGREEMENT = 0.5
#: Tone curve: longest side of the copies it is fitted on, level bins, fewest samples per bin
#: and in all.
TONE_MAX_SIDE = 512
TONE_BINS = 32
TONE_MIN_BIN = 20
TONE_MIN_SAMPLES = 500
#: Model selection: a richer model must pass this F-statistic and lower the RMS residual of
#: the tracks by this share. Track errors are partly systematic (a few 0.01 px), so the
#: F-test alone adopts spurious terms; a real shear or perspective lowers the RMS 2x or more.
MODEL_F_THRESHOLD = 10.0
MODEL_MIN_GAIN = 0.25

# Warping ------------------------------------------------------------------------------------
#: Interpolation of ``warp_into``. Bicubic costs about twice bilinear (~15 vs ~6 ms for a
#: 1080p RGB frame) but bilinear blurs: after a 6-degree rotation it leaves 0.2-0.4 % of the
#: pixels more than 10/255 off the original, bicubic about 0.01 %.
WARP_INTERPOLATION = cv2.INTER_CUBIC
#: ``warp_into``'s valid mask is eroded by this many px of A beyond the exact tap footprint.
VALID_ERODE_PX = 1


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


def _failed(
    reason: str, *, method: str | None = None, inliers: int = 0, ratio: float = 0.0
) -> Alignment:
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


# --------------------------------------------------------------------------------------------
# Geometry helpers


def _corners(shape: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of an image of ``shape`` (height, width), as 4x2 float64."""
    h, w = shape
    return np.array([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]])


def _apply(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map Nx2 points through a 3x3 homography (float64)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hom = np.c_[pts, np.ones(len(pts))] @ np.asarray(homography, dtype=np.float64).T
    return hom[:, :2] / hom[:, 2:3]


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) < 2 or int(shape[0]) <= 0 or int(shape[1]) <= 0:
        raise ImagingError(
            ErrorCode.INVALID_OPTIONS, f"shape must be (height, width) > 0, got {shape}"
        )
    return int(shape[0]), int(shape[1])


def _check_homography(homography: np.ndarray) -> np.ndarray:
    h = np.asarray(homography, dtype=np.float64)
    if h.shape != (3, 3) or not np.all(np.isfinite(h)):
        raise ImagingError(ErrorCode.INVALID_OPTIONS, "homography must be a finite 3x3 matrix")
    return h


def is_identity(
    homography: np.ndarray, shape: tuple[int, int], *, tolerance_px: float = 0.5
) -> bool:
    """Whether ``homography`` moves no corner of an image of ``shape`` by more than a tolerance.

    Parameters
    ----------
    homography
        3x3 matrix mapping points of B into A.
    shape
        ``(height, width)`` in pixels of the image whose corners are tested.
    tolerance_px
        Largest corner displacement, in pixels, still counted as the identity (>= 0).

    Returns
    -------
    bool
        True when every corner pixel centre moves by at most ``tolerance_px``.
    """
    h = _check_homography(homography)
    corners = _corners(_check_shape(shape))
    moved = _apply(h, corners)
    return bool(np.all(np.hypot(*(moved - corners).T) <= tolerance_px))


def corner_error(h_est: np.ndarray, h_true: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest misregistration, in A's pixels, at the corners of A's frame.

    For each corner ``c`` of an image of ``shape`` (A's frame), the point of B that ``h_est``
    puts at ``c`` is ``h_est^-1(c)``; the truth puts it at ``h_true(h_est^-1(c))``. The error is
    the largest distance between the two, over the four corners.

    Parameters
    ----------
    h_est, h_true
        3x3 homographies mapping B's points into A (estimate and ground truth).
    shape
        ``(height, width)`` of A in pixels.

    Returns
    -------
    float
        Maximum corner displacement in pixels, >= 0 (``inf`` if ``h_est`` is singular).
    """
    est = _check_homography(h_est)
    true = _check_homography(h_true)
    corners = _corners(_check_shape(shape))
    try:
        back = _apply(np.linalg.inv(est), corners)
    except np.linalg.LinAlgError:
        return float("inf")
    err = np.hypot(*(_apply(true, back) - corners).T)
    return float(np.max(err)) if np.all(np.isfinite(err)) else float("inf")


def _describe(homography: np.ndarray) -> tuple[float, float, float]:
    """Rotation (deg, CCW positive as displayed), scale and anisotropy of the linear part."""
    lin = homography[:2, :2]
    rotation = float(np.degrees(np.arctan2(lin[0, 1] - lin[1, 0], lin[0, 0] + lin[1, 1])))
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    sv = np.linalg.svd(lin, compute_uv=False)
    anisotropy = float(sv[0] / sv[1]) if sv[1] > 0 else float("inf")
    return rotation, scale, anisotropy


def _degenerate(homography: np.ndarray, b_shape: tuple[int, int]) -> str | None:
    """Why ``homography`` (B -> A) is not a plausible photograph-to-photograph map, or None."""
    h = homography
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return "degenerate transform (not finite)"
    h = h / h[2, 2]
    corners = _corners(b_shape)
    w = corners @ h[2, :2] + 1.0
    if np.any(w <= 0):
        return "degenerate transform (B folds over the horizon)"
    if float(w.max() / w.min()) > MAX_PERSPECTIVE:
        return "degenerate transform (extreme perspective)"
    # Jacobian determinant of the projective map at B's corners: det(H) / w^3 must be > 0.
    if np.linalg.det(h) <= 0:
        return "degenerate transform (mirrored or singular)"
    _, scale, anisotropy = _describe(h)
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return f"degenerate transform (scale {scale:.2f} outside {MIN_SCALE}-{MAX_SCALE})"
    if anisotropy > MAX_ANISOTROPY:
        return f"degenerate transform (anisotropy {anisotropy:.1f} > {MAX_ANISOTROPY})"
    return None


def _overlap_ratio(
    homography: np.ndarray, b_shape: tuple[int, int], a_shape: tuple[int, int]
) -> float:
    """Share of A's pixel area covered by B's warped pixel area (exact polygon clipping)."""
    hb, wb = b_shape
    ha, wa = a_shape
    b_box = np.array([[-0.5, -0.5], [wb - 0.5, -0.5], [wb - 0.5, hb - 0.5], [-0.5, hb - 0.5]])
    a_box = np.array([[-0.5, -0.5], [wa - 0.5, -0.5], [wa - 0.5, ha - 0.5], [-0.5, ha - 0.5]])
    poly = _apply(homography, b_box).astype(np.float32)
    area, _ = cv2.intersectConvexConvex(poly, a_box.astype(np.float32))
    return float(min(max(area / (wa * ha), 0.0), 1.0))


# --------------------------------------------------------------------------------------------
# Grey copies and features


def _validate(img: np.ndarray, name: str) -> None:
    if (
        not isinstance(img, np.ndarray)
        or img.ndim not in (2, 3)
        or img.dtype
        not in (
            np.uint8,
            np.uint16,
        )
    ):
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT,
            "expected an HxWxC uint8 or uint16 array",
            image=name,
        )
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"expected 1, 3 or 4 channels, got {img.shape[2]}",
            image=name,
        )
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ImagingError(ErrorCode.UNSUPPORTED_FORMAT, "image has no pixels", image=name)


def _grey(img: np.ndarray) -> np.ndarray:
    """Greyscale copy in the input dtype; RGBA premultiplied by alpha."""
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1:
        return img[..., 0]
    grey = cv2.cvtColor(img[..., :3] if channels == 4 else img, cv2.COLOR_RGB2GRAY)
    if channels == 4:
        alpha = img[..., 3]
        full = 255 if img.dtype == np.uint8 else 65535
        if int(alpha.min()) < full:
            grey = cv2.multiply(grey, alpha, scale=1.0 / full)
    return grey


def _grey_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit grey copies of A and B; 16-bit input is scaled by one factor shared by both."""
    ga, gb = _grey(a), _grey(b)
    if ga.dtype == np.uint8 and gb.dtype == np.uint8:
        return ga, gb
    top = max(
        int(ga.max()) * (257 if ga.dtype == np.uint8 else 1),
        int(gb.max()) * (257 if gb.dtype == np.uint8 else 1),
        1,
    )

    def to8(g: np.ndarray) -> np.ndarray:
        factor = 255.0 / top * (257 if g.dtype == np.uint8 else 1)
        return cv2.convertScaleAbs(g, alpha=factor)

    return to8(ga), to8(gb)


@dataclass
class _Features:
    points: np.ndarray  # Nx2 float64, full-resolution pixel coordinates
    descriptors: np.ndarray | None
    responses: np.ndarray  # N float


def _factor(shape: tuple[int, ...], max_side: int) -> int:
    """Smallest integer reduction that brings the longest side to at most ``max_side``."""
    return max(1, -(-max(shape[:2]) // max_side))


def _reduce(grey: np.ndarray, k: int) -> np.ndarray:
    """Average ``k x k`` blocks (the last partial row/column of blocks is dropped).

    Integer factors keep ``cv2.resize(..., INTER_AREA)`` on its fast path (0.1 ms instead of
    4 ms for a 1080p frame); pixel centre ``x`` of the copy is ``(x + 0.5) * k - 0.5`` here.
    """
    if k == 1:
        return grey
    h, w = grey.shape
    nh, nw = max(1, h // k), max(1, w // k)
    return cv2.resize(grey[: nh * k, : nw * k], (nw, nh), interpolation=cv2.INTER_AREA)


def _detect(
    grey: np.ndarray, detector: cv2.Feature2D, max_side: int, *, equalise: bool
) -> _Features:
    k = _factor(grey.shape, max_side)
    small = _reduce(grey, k)
    if equalise:
        small = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(8, 8)).apply(small)
    keypoints, descriptors = detector.detectAndCompute(small, None)
    if not keypoints or descriptors is None:
        return _Features(np.zeros((0, 2)), None, np.zeros(0))
    pts = np.array([kp.pt for kp in keypoints], dtype=np.float64)
    pts = (pts + 0.5) * k - 0.5
    return _Features(pts, descriptors, np.array([kp.response for kp in keypoints]))


def _match(fa: _Features, fb: _Features, norm: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Ratio-test matches as two Nx2 arrays: points in B and their partners in A."""
    if fa.descriptors is None or fb.descriptors is None or len(fa.points) < 2 or len(fb.points) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    matcher = cv2.BFMatcher(norm)
    pairs = matcher.knnMatch(fb.descriptors, fa.descriptors, k=2)
    ib, ia = [], []
    for pair in pairs:
        if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
            ib.append(pair[0].queryIdx)
            ia.append(pair[0].trainIdx)
    return fb.points[ib], fa.points[ia]


# --------------------------------------------------------------------------------------------
# Estimation


@dataclass
class _Coarse:
    homography: np.ndarray
    model: str  # "magsac-homography" or "partial-affine"
    inlier_b: np.ndarray
    inlier_a: np.ndarray
    inliers: int
    ratio: float


@dataclass
class _Refusal:
    reason: str
    inliers: int = 0
    ratio: float = 0.0


def _coarse(
    pts_b: np.ndarray,
    pts_a: np.ndarray,
    b_shape: tuple[int, int],
    threshold: float,
    min_inliers: int,
) -> _Coarse | _Refusal:
    """Robust fit of B -> A to the ratio-test matches, or why there is none."""
    n = len(pts_b)
    if n < min_inliers:
        return _Refusal(f"too few matches ({n} < {min_inliers})")
    src = pts_b.astype(np.float32)
    dst = pts_a.astype(np.float32)
    refusal = _Refusal("no homography found")
    h, mask = cv2.findHomography(
        src, dst, cv2.USAC_MAGSAC, threshold, maxIters=5000, confidence=0.999
    )
    if h is not None and mask is not None:
        keep = mask.ravel().astype(bool)
        count = int(keep.sum())
        if count < min_inliers:
            return _Refusal(
                f"too few inliers ({count} < {min_inliers} of {n} matches)", count, count / n
            )
        h = h / h[2, 2]
        bad = _degenerate(h, b_shape)
        if bad is None:
            return _Coarse(h, "magsac-homography", pts_b[keep], pts_a[keep], count, count / n)
        refusal = _Refusal(bad)
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
        return _Refusal(
            f"{refusal.reason}; partial affine: too few inliers ({count} < {min_inliers})",
            count,
            count / n,
        )
    h = np.vstack([m.astype(np.float64), [0.0, 0.0, 1.0]])
    bad = _degenerate(h, b_shape)
    if bad is not None:
        return _Refusal(f"{refusal.reason}; partial affine: {bad}")
    return _Coarse(h, "partial-affine", pts_b[keep], pts_a[keep], count, count / n)


def _spread(
    points: np.ndarray, responses: np.ndarray, shape: tuple[int, int], limit: int
) -> np.ndarray:
    """Indices of at most ``limit`` points, the strongest few of each cell of an 8x8 grid."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.intp)
    h, w = shape
    grid = 8
    cx = np.clip((points[:, 0] / w * grid).astype(int), 0, grid - 1)
    cy = np.clip((points[:, 1] / h * grid).astype(int), 0, grid - 1)
    cell = cy * grid + cx
    order = np.lexsort((-responses, cell))
    sorted_cells = cell[order]
    first = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(len(order)) - first
    per_cell = max(1, -(-limit // (grid * grid)) * 2)
    chosen = order[rank < per_cell]
    if len(chosen) > limit:
        chosen = chosen[np.argsort(-responses[chosen])[:limit]]
    return chosen


def _match_tones(
    warped: np.ndarray, ref: np.ndarray, h_r: np.ndarray, b_shape: tuple[int, int]
) -> np.ndarray:
    """Map ``warped``'s grey levels onto ``ref``'s by a monotone tone curve fitted on the overlap.

    Lucas-Kanade assumes equal brightness; a global tone change between A and B (exposure,
    gamma, contrast) would bias or break the tracks. Both images are reduced to a longest side
    of at most ``TONE_MAX_SIDE`` px and blurred (so residual misregistration, noise and blur
    differences do not matter); inside B's warped outline, the median level of A for each of
    ``TONE_BINS`` level bins of B gives the curve.
    """
    k = _factor(ref.shape, TONE_MAX_SIDE)
    small_ref = cv2.GaussianBlur(_reduce(ref, k), (0, 0), 1.5)
    small = cv2.GaussianBlur(_reduce(warped, k), (0, 0), 1.5)
    sh, sw = small.shape
    to_small = np.array([[1.0 / k, 0.0, 0.5 / k - 0.5], [0.0, 1.0 / k, 0.5 / k - 0.5], [0, 0, 1]])
    outline = _apply(to_small @ h_r, _corners(b_shape))
    mask = np.zeros((sh, sw), dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(outline).astype(np.int32), 255)
    mask = cv2.erode(mask, np.ones((7, 7), np.uint8))
    if cv2.countNonZero(mask) < TONE_MIN_SAMPLES:
        return warped
    joint = cv2.calcHist([small, small_ref], [0, 1], mask, [TONE_BINS, 256], [0, 256, 0, 256])
    counts = joint.sum(axis=1)
    filled = counts >= TONE_MIN_BIN
    if np.count_nonzero(filled) < 2:
        return warped
    cdf = np.cumsum(joint[filled], axis=1) / counts[filled, None]
    medians = np.argmax(cdf >= 0.5, axis=1).astype(np.float64)
    medians = np.maximum.accumulate(medians)
    width = 256 / TONE_BINS
    centres = (np.flatnonzero(filled) + 0.5) * width - 0.5
    lut = np.interp(np.arange(256.0), centres, medians)
    # Beyond the outermost filled bins, continue with slope 1 rather than flattening.
    lut = np.where(np.arange(256) < centres[0], medians[0] + np.arange(256) - centres[0], lut)
    lut = np.where(np.arange(256) > centres[-1], medians[-1] + np.arange(256) - centres[-1], lut)
    return cv2.LUT(warped, np.clip(np.round(lut), 0, 255).astype(np.uint8))


@dataclass
class _Refined:
    homography: np.ndarray
    inliers: int
    rms: float
    improved: bool
    model: str


def _refine(
    ga: np.ndarray,
    gb: np.ndarray,
    coarse: _Coarse,
    candidates: np.ndarray,
    responses: np.ndarray,
    min_inliers: int,
) -> _Refined | str:
    """Track points into B warped by the coarse estimate; fit the final map to the tracks.

    ``candidates`` are points of A's full-resolution frame (A's keypoints and B's keypoints
    mapped by the coarse estimate) with their detector ``responses``.
    """
    hb, wb = gb.shape
    k = _factor(ga.shape, REFINE_MAX_SIDE)
    ga_r = _reduce(ga, k)
    r = 1.0 / k
    to_r = np.array([[r, 0.0, 0.5 * r - 0.5], [0.0, r, 0.5 * r - 0.5], [0.0, 0.0, 1.0]])
    h_r = to_r @ coarse.homography
    h_r_inv = np.linalg.inv(h_r)
    pts = (candidates + 0.5) * r - 0.5
    # Keep points whose LK window (plus a margin) maps inside B.
    half = LK_WINDOW / 2 + 2
    inside = np.ones(len(pts), dtype=bool)
    for dx, dy in ((-half, -half), (half, -half), (half, half), (-half, half)):
        q = _apply(h_r_inv, pts + np.array([dx, dy]))
        inside &= (q[:, 0] >= 0) & (q[:, 0] <= wb - 1) & (q[:, 1] >= 0) & (q[:, 1] <= hb - 1)
    inside &= (pts[:, 0] >= half) & (pts[:, 0] <= ga_r.shape[1] - 1 - half)
    inside &= (pts[:, 1] >= half) & (pts[:, 1] <= ga_r.shape[0] - 1 - half)
    idx = np.flatnonzero(inside)
    idx = idx[_spread(pts[idx], responses[idx], ga_r.shape, REFINE_POINTS)]
    if len(idx) < min_inliers:
        return f"refinement: too few trackable points ({len(idx)} < {min_inliers})"
    p = pts[idx].astype(np.float32).reshape(-1, 1, 2)
    warped = cv2.warpPerspective(
        gb,
        h_r,
        (ga_r.shape[1], ga_r.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    warped = _match_tones(warped, ga_r, h_r, gb.shape)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
    win = (LK_WINDOW, LK_WINDOW)
    q, st, _ = cv2.calcOpticalFlowPyrLK(
        ga_r,
        warped,
        p,
        p.copy(),
        winSize=win,
        maxLevel=LK_LEVELS,
        criteria=criteria,
        flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
    )
    back, st2, _ = cv2.calcOpticalFlowPyrLK(
        warped,
        ga_r,
        q,
        p.copy(),
        winSize=win,
        maxLevel=LK_LEVELS,
        criteria=criteria,
        flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
    )
    p2, q2, back2 = p.reshape(-1, 2), q.reshape(-1, 2), back.reshape(-1, 2)
    ok = st.ravel().astype(bool) & st2.ravel().astype(bool)
    ok &= np.hypot(*(back2 - p2).T) <= LK_FB_MAX_PX
    tracked = int(ok.sum())
    if tracked < min_inliers:
        return f"refinement: too few points tracked ({tracked} < {min_inliers})"
    src, dst = q2[ok], p2[ok]
    if coarse.model == "partial-affine":
        m, mask = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=REFINE_THRESHOLD_PX, maxIters=2000
        )
        corr = None if m is None else np.vstack([m.astype(np.float64), [0.0, 0.0, 1.0]])
    else:
        corr, mask = cv2.findHomography(src, dst, cv2.RANSAC, REFINE_THRESHOLD_PX, maxIters=2000)
    if corr is None or mask is None:
        return "refinement: no correction found"
    keep = mask.ravel().astype(bool)
    agree = int(keep.sum())
    if agree < min_inliers or agree < MIN_TRACK_AGREEMENT * tracked:
        return f"refinement: only {agree} of {tracked} tracked points agree"
    b_pts = _apply(h_r_inv, src[keep])
    a_pts = dst[keep].astype(np.float64)
    before = _rms(h_r, b_pts, a_pts)
    models = ("similarity",) if coarse.model == "partial-affine" else _MODELS
    model, fitted = _select_model(b_pts, a_pts, models)
    after = _rms(fitted, b_pts, a_pts)
    improved = after < before - 0.01
    new_r = fitted if improved else h_r
    new = np.linalg.inv(to_r) @ new_r
    new /= new[2, 2]
    return _Refined(new, agree, (after if improved else before) / r, improved, model)


def _rms(homography: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """Root-mean-square distance between ``homography(src)`` and ``dst``, in px."""
    return float(np.sqrt(np.mean(np.sum((_apply(homography, src) - dst) ** 2, axis=1))))


_MODELS = ("similarity", "affine", "homography")
_DOF = {"similarity": 4, "affine": 6, "homography": 8}


def _fit(model: str, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares fit of ``model`` mapping ``src`` to ``dst`` (Nx2 float64), as a 3x3."""
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    x, y = (src - cs).T
    u, v = (dst - cd).T
    one, zero = np.ones_like(x), np.zeros_like(x)
    if model == "similarity":
        design = np.r_[np.c_[x, -y, one, zero], np.c_[y, x, zero, one]]
        (sa, sb, tx, ty), *_ = np.linalg.lstsq(design, np.r_[u, v], rcond=None)
        lin = np.array([[sa, -sb], [sb, sa]])
        t = np.array([tx, ty])
    elif model == "affine":
        coef, *_ = np.linalg.lstsq(np.c_[x, y, one], np.c_[u, v], rcond=None)
        lin, t = coef[:2].T, coef[2]
    else:
        h, _ = cv2.findHomography(src, dst, 0)
        return None if h is None else h / h[2, 2]
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = t + cd - lin @ cs
    return out


def _select_model(
    src: np.ndarray, dst: np.ndarray, models: tuple[str, ...]
) -> tuple[str, np.ndarray]:
    """The simplest of ``models`` that fits ``src -> dst`` as well as the richer ones.

    A richer model replaces a simpler one only if its extra parameters explain the residual:
    the F statistic ``((rss_simple - rss_rich) / extra) / (rss_rich / (2n - dof_rich))`` is
    above ``MODEL_F_THRESHOLD`` and the RMS residual drops by at least ``MODEL_MIN_GAIN``.
    Track errors are partly systematic (a few hundredths of a pixel), so the F-test alone
    would pick up spurious terms; those barely matter inside the tracked area but grow at A's
    corners when they lie far outside it (B a small crop of A, or B zoomed in). A real
    perspective or shear lowers the RMS residual by a factor of 2 or more.
    """
    n = len(src)
    chosen, best = "", np.eye(3)
    best_rss = 0.0
    for model in models:
        h = _fit(model, src, dst)
        if h is None or not np.all(np.isfinite(h)) or 2 * n <= _DOF[model]:
            continue
        rss = _rms(h, src, dst) ** 2 * n
        if not chosen:
            chosen, best, best_rss = model, h, rss
            continue
        extra = _DOF[model] - _DOF[chosen]
        residual = max(rss, 1e-12) / (2 * n - _DOF[model])
        significant = (best_rss - rss) / extra / residual > MODEL_F_THRESHOLD
        if significant and rss < (1.0 - MODEL_MIN_GAIN) ** 2 * best_rss:
            chosen, best, best_rss = model, h, rss
    return chosen, best


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
    _validate(a, "a")
    _validate(b, "b")
    if max_features < 10 or min_inliers < 4:
        raise ImagingError(
            ErrorCode.INVALID_OPTIONS, "max_features must be >= 10 and min_inliers >= 4"
        )
    ga, gb = _grey_pair(a, b)
    for name, grey in (("A", ga), ("B", gb)):
        _, std = cv2.meanStdDev(_reduce(grey, _factor(grey.shape, DETECT_MAX_SIDE)))
        if float(std[0, 0]) < FLAT_STD:
            return _failed(f"image {name} is flat: nothing to align on")
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
    best = _Refusal("", 0, 0.0)
    for name, detector, norm, ratio, max_side, equalise in detectors:
        found = _attempt(ga, gb, detector, norm, ratio, max_side, equalise, min_inliers, refine)
        if isinstance(found, Alignment):
            return replace(found, method=f"{name}+{found.method}")
        reasons.append(f"{name}: {found.reason}")
        if found.inliers > best.inliers:
            best = found
    return _failed("; ".join(reasons), inliers=best.inliers, ratio=best.ratio)


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
) -> Alignment | _Refusal:
    """One detector's try: features, matches, coarse fit, checks, refinement."""
    fa = _detect(ga, detector, max_side, equalise=equalise)
    if len(fa.points) < min_inliers:
        return _Refusal(f"too few features in A ({len(fa.points)} < {min_inliers})")
    fb = _detect(gb, detector, max_side, equalise=equalise)
    if len(fb.points) < min_inliers:
        return _Refusal(f"too few features in B ({len(fb.points)} < {min_inliers})")
    pts_b, pts_a = _match(fa, fb, norm, ratio)
    threshold = COARSE_THRESHOLD_PX * _factor(ga.shape, max_side)
    coarse = _coarse(pts_b, pts_a, gb.shape, threshold, min_inliers)
    if isinstance(coarse, _Refusal):
        return coarse
    method = coarse.model
    h = coarse.homography
    inliers = coarse.inliers
    rms = _rms(h, coarse.inlier_b, coarse.inlier_a)
    if refine:
        candidates = np.vstack([fa.points, _apply(h, fb.points)])
        responses = np.concatenate([fa.responses, fb.responses])
        refined = _refine(ga, gb, coarse, candidates, responses, min_inliers)
        if isinstance(refined, str):
            return _Refusal(refined, coarse.inliers, coarse.ratio)
        bad = _degenerate(refined.homography, gb.shape)
        if bad is not None:
            return _Refusal(f"refined {bad}", coarse.inliers, coarse.ratio)
        h, inliers, rms = refined.homography, refined.inliers, refined.rms
        if refined.improved:
            method += f"+lk-{refined.model}"
    overlap = _overlap_ratio(h, gb.shape, ga.shape)
    if overlap <= 0.0:
        return _Refusal("the warped B does not overlap A", coarse.inliers, coarse.ratio)
    rotation, scale, _ = _describe(h)
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


def warp_into(
    b: np.ndarray, homography: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp B into A's frame.

    Parameters
    ----------
    b
        ``HxWxC`` ``uint8`` or ``uint16`` image.
    homography
        3x3 matrix mapping B's points to A's (as in :class:`Alignment`).
    shape
        ``(height, width)`` of A in pixels.

    Returns
    -------
    warped, valid
        ``warped``: B resampled on A's pixel grid (bicubic, edge pixels replicated outside B),
        same dtype and channels as ``b``. ``valid``: bool ``height x width``, True where all
        16 bicubic taps lie inside B, eroded by ``VALID_ERODE_PX`` more pixels of A so no
        interpolation fringe at B's border is ever compared.

    Raises
    ------
    ImagingError
        ``UNSUPPORTED_FORMAT`` for a bad ``b``; ``INVALID_OPTIONS`` for a bad homography or shape.
    """
    _validate(b, "b")
    h = _check_homography(homography)
    height, width = _check_shape(shape)
    warped = cv2.warpPerspective(
        b, h, (width, height), flags=WARP_INTERPOLATION, borderMode=cv2.BORDER_REPLICATE
    )
    if warped.ndim == 2 and b.ndim == 3:
        warped = warped[..., None]
    return warped, _valid_mask(h, (b.shape[0], b.shape[1]), (height, width))


def _valid_mask(h: np.ndarray, b_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of A whose source lies in B at least 1 px from its edge, shrunk by VALID_ERODE_PX.

    Bicubic interpolation reads one pixel beyond the two bilinear taps, so the source point
    must lie in ``[1, w - 2] x [1, h - 2]`` of B. The outline of that box in A is rasterised
    directly (a convex quadrilateral when B lies wholly in front of the camera), otherwise a
    mask of B is warped.
    """
    height, width = shape
    hb, wb = b_shape
    if hb < 3 or wb < 3:
        return np.zeros((height, width), dtype=bool)
    # Rasterise on a canvas padded beyond A's frame, so erosion treats A's edges like any other.
    pad = VALID_ERODE_PX + 1
    shifted = _translation(pad, pad) @ h
    size = (width + 2 * pad, height + 2 * pad)
    inner = _corners((hb - 2, wb - 2)) + 1.0
    depth = inner @ shifted[2, :2] + shifted[2, 2]
    outline = _apply(shifted, inner) * 16 if np.all(depth > 0) or np.all(depth < 0) else None
    if outline is not None and np.all(np.abs(outline) < 2**30):
        cover = np.zeros((size[1], size[0]), dtype=np.uint8)
        cv2.fillConvexPoly(cover, np.round(outline).astype(np.int32), 255, cv2.LINE_8, shift=4)
    else:
        src = np.zeros((hb, wb), dtype=np.uint8)
        src[1:-1, 1:-1] = 255
        warped = cv2.warpPerspective(
            src, shifted, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        cover = np.where(warped == 255, np.uint8(255), np.uint8(0))
    side = 2 * VALID_ERODE_PX + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    valid = cv2.erode(cover, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return valid[pad : pad + height, pad : pad + width] == 255

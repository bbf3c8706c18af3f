"""Refinement and verification of a coarse homography: B's grey copy warped into A's frame, its
tones mapped onto A's, well-spread keypoints tracked with pyramidal Lucas-Kanade, and the
simplest adequate model (similarity, affine, homography) fitted to the agreeing tracks."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.imaging.align.coarse import CoarseFit
from core.imaging.align.features import reduce_grey, reduction_factor
from core.imaging.align.geometry import apply_homography, corners_of

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
    k = reduction_factor(ref.shape, TONE_MAX_SIDE)
    small_ref = cv2.GaussianBlur(reduce_grey(ref, k), (0, 0), 1.5)
    small = cv2.GaussianBlur(reduce_grey(warped, k), (0, 0), 1.5)
    sh, sw = small.shape
    to_small = np.array([[1.0 / k, 0.0, 0.5 / k - 0.5], [0.0, 1.0 / k, 0.5 / k - 0.5], [0, 0, 1]])
    outline = apply_homography(to_small @ h_r, corners_of(b_shape))
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
class Refined:
    """The refined transform: agreeing tracks, their RMS residual (px), whether it beat the
    coarse fit, and the model fitted."""

    homography: np.ndarray
    inliers: int
    rms: float
    improved: bool
    model: str


def refine_coarse(
    ga: np.ndarray,
    gb: np.ndarray,
    coarse: CoarseFit,
    candidates: np.ndarray,
    responses: np.ndarray,
    min_inliers: int,
) -> Refined | str:
    """Track points into B warped by the coarse estimate; fit the final map to the tracks.

    ``candidates`` are points of A's full-resolution frame (A's keypoints and B's keypoints
    mapped by the coarse estimate) with their detector ``responses``.
    """
    hb, wb = gb.shape
    k = reduction_factor(ga.shape, REFINE_MAX_SIDE)
    ga_r = reduce_grey(ga, k)
    r = 1.0 / k
    to_r = np.array([[r, 0.0, 0.5 * r - 0.5], [0.0, r, 0.5 * r - 0.5], [0.0, 0.0, 1.0]])
    h_r = to_r @ coarse.homography
    h_r_inv = np.linalg.inv(h_r)
    pts = (candidates + 0.5) * r - 0.5
    # Keep points whose LK window (plus a margin) maps inside B.
    half = LK_WINDOW / 2 + 2
    inside = np.ones(len(pts), dtype=bool)
    for dx, dy in ((-half, -half), (half, -half), (half, half), (-half, half)):
        q = apply_homography(h_r_inv, pts + np.array([dx, dy]))
        inside &= (q[:, 0] >= 0) & (q[:, 0] <= wb - 1) & (q[:, 1] >= 0) & (q[:, 1] <= hb - 1)
    inside &= (pts[:, 0] >= half) & (pts[:, 0] <= ga_r.shape[1] - 1 - half)
    inside &= (pts[:, 1] >= half) & (pts[:, 1] <= ga_r.shape[0] - 1 - half)
    idx = np.flatnonzero(inside)
    idx = idx[_spread(pts[idx], responses[idx], ga_r.shape, REFINE_POINTS)]
    if len(idx) < min_inliers:
        return f"refinement: too few trackable points ({len(idx)} < {min_inliers})"
    p = pts[idx].astype(np.float32).reshape(-1, 1, 2)
    raw = cv2.warpPerspective(
        gb,
        h_r,
        (ga_r.shape[1], ga_r.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    warped = _match_tones(raw, ga_r, h_r, gb.shape)
    p2, q2, ok = _track(ga_r, warped, p)
    if int(ok.sum()) < min_inliers and warped is not raw:
        # The tone curve can be wrong where the coarse fit is a few pixels off on thin strokes
        # (a text page: B's ink meets A's paper, and the curve washes the ink out): try the
        # levels as they are.
        p2, q2, ok = _track(ga_r, raw, p)
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
    b_pts = apply_homography(h_r_inv, src[keep])
    a_pts = dst[keep].astype(np.float64)
    before = rms_residual(h_r, b_pts, a_pts)
    models = ("similarity",) if coarse.model == "partial-affine" else _MODELS
    model, fitted = _select_model(b_pts, a_pts, models)
    after = rms_residual(fitted, b_pts, a_pts)
    improved = after < before - 0.01
    new_r = fitted if improved else h_r
    new = np.linalg.inv(to_r) @ new_r
    new /= new[2, 2]
    return Refined(new, agree, (after if improved else before) / r, improved, model)


def _track(
    ga_r: np.ndarray, warped: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lucas-Kanade tracks of the points ``p`` (``N x 1 x 2`` float32, A's reduced frame) into
    ``warped``, checked forward and backward: ``(points, tracked positions, ok)``, ``ok`` True
    where both directions succeeded within ``LK_FB_MAX_PX``."""
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
    return p2, q2, ok


def rms_residual(homography: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """Root-mean-square distance between ``homography(src)`` and ``dst``, in px."""
    return float(np.sqrt(np.mean(np.sum((apply_homography(homography, src) - dst) ** 2, axis=1))))


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
        rss = rms_residual(h, src, dst) ** 2 * n
        if not chosen:
            chosen, best, best_rss = model, h, rss
            continue
        extra = _DOF[model] - _DOF[chosen]
        residual = max(rss, 1e-12) / (2 * n - _DOF[model])
        significant = (best_rss - rss) / extra / residual > MODEL_F_THRESHOLD
        if significant and rss < (1.0 - MODEL_MIN_GAIN) ** 2 * best_rss:
            chosen, best, best_rss = model, h, rss
    return chosen, best

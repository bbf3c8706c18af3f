"""Homography geometry for the alignment: points mapped, identity and corner-error measures, the
shift / rotation / scale a homography applies, the sanity checks that call one degenerate, and
the share of A a warped B covers."""

from __future__ import annotations

import cv2
import numpy as np

from core.imaging.errors import ErrorCode, ImagingError

#: Accepted range of ``scale`` (square root of the determinant of the linear part).
MIN_SCALE, MAX_SCALE = 0.2, 5.0


#: Largest ratio of the two singular values of the linear part (shear, anisotropic scale).
MAX_ANISOTROPY = 3.0


#: Largest ratio of the projective denominators over B's corners (1 for an affine map).
MAX_PERSPECTIVE = 2.0


def corners_of(shape: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of an image of ``shape`` (height, width), as 4x2 float64."""
    h, w = shape
    return np.array([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]])


def apply_homography(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map Nx2 points through a 3x3 homography (float64)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hom = np.c_[pts, np.ones(len(pts))] @ np.asarray(homography, dtype=np.float64).T
    return hom[:, :2] / hom[:, 2:3]


def translation_matrix(dx: float, dy: float) -> np.ndarray:
    """The 3x3 homography of a shift by ``(dx, dy)`` px."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` as ints, both > 0 (else ``INVALID_OPTIONS``)."""
    if len(shape) < 2 or int(shape[0]) <= 0 or int(shape[1]) <= 0:
        raise ImagingError(
            ErrorCode.INVALID_OPTIONS, f"shape must be (height, width) > 0, got {shape}"
        )
    return int(shape[0]), int(shape[1])


def check_homography(homography: np.ndarray) -> np.ndarray:
    """``homography`` as a finite 3x3 float64 matrix (else ``INVALID_OPTIONS``)."""
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
    h = check_homography(homography)
    corners = corners_of(check_shape(shape))
    moved = apply_homography(h, corners)
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
    est = check_homography(h_est)
    true = check_homography(h_true)
    corners = corners_of(check_shape(shape))
    try:
        back = apply_homography(np.linalg.inv(est), corners)
    except np.linalg.LinAlgError:
        return float("inf")
    err = np.hypot(*(apply_homography(true, back) - corners).T)
    return float(np.max(err)) if np.all(np.isfinite(err)) else float("inf")


def describe_homography(homography: np.ndarray) -> tuple[float, float, float]:
    """Rotation (deg, CCW positive as displayed), scale and anisotropy of the linear part."""
    lin = homography[:2, :2]
    rotation = float(np.degrees(np.arctan2(lin[0, 1] - lin[1, 0], lin[0, 0] + lin[1, 1])))
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    sv = np.linalg.svd(lin, compute_uv=False)
    anisotropy = float(sv[0] / sv[1]) if sv[1] > 0 else float("inf")
    return rotation, scale, anisotropy


def degenerate_reason(homography: np.ndarray, b_shape: tuple[int, int]) -> str | None:
    """Why ``homography`` (B -> A) is not a plausible photograph-to-photograph map, or None."""
    h = homography
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return "degenerate transform (not finite)"
    h = h / h[2, 2]
    corners = corners_of(b_shape)
    w = corners @ h[2, :2] + 1.0
    if np.any(w <= 0):
        return "degenerate transform (B folds over the horizon)"
    if float(w.max() / w.min()) > MAX_PERSPECTIVE:
        return "degenerate transform (extreme perspective)"
    # Jacobian determinant of the projective map at B's corners: det(H) / w^3 must be > 0.
    if np.linalg.det(h) <= 0:
        return "degenerate transform (mirrored or singular)"
    _, scale, anisotropy = describe_homography(h)
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return f"degenerate transform (scale {scale:.2f} outside {MIN_SCALE}-{MAX_SCALE})"
    if anisotropy > MAX_ANISOTROPY:
        return f"degenerate transform (anisotropy {anisotropy:.1f} > {MAX_ANISOTROPY})"
    return None


def covered_share(
    homography: np.ndarray, b_shape: tuple[int, int], a_shape: tuple[int, int]
) -> float:
    """Share of A's pixel area covered by B's warped pixel area (exact polygon clipping)."""
    hb, wb = b_shape
    ha, wa = a_shape
    b_box = np.array([[-0.5, -0.5], [wb - 0.5, -0.5], [wb - 0.5, hb - 0.5], [-0.5, hb - 0.5]])
    a_box = np.array([[-0.5, -0.5], [wa - 0.5, -0.5], [wa - 0.5, ha - 0.5], [-0.5, ha - 0.5]])
    poly = apply_homography(homography, b_box).astype(np.float32)
    area, _ = cv2.intersectConvexConvex(poly, a_box.astype(np.float32))
    return float(min(max(area / (wa * ha), 0.0), 1.0))

"""Grey copies and keypoints for the alignment: both images as ``uint8`` greyscale (16-bit scaled
by one shared factor, RGBA premultiplied), reduced by an integer factor, ORB or SIFT keypoints
and descriptors, and brute-force matches that pass Lowe's ratio test."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.imaging.errors import ErrorCode, ImagingError

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


#: Lowe ratio-test thresholds (best / second-best descriptor distance).
ORB_RATIO = 0.8


SIFT_RATIO = 0.75


#: An image whose reduced grey copy has a standard deviation below this (levels) is flat.
FLAT_STD = 1.0


def validate_image(img: np.ndarray, name: str) -> None:
    """Refuse (``UNSUPPORTED_FORMAT``) what is not a 2-D or 3-D ``uint8``/``uint16`` image."""
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


def grey_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
class Features:
    """Keypoints of one grey image, their descriptors and detector responses."""

    points: np.ndarray  # Nx2 float64, full-resolution pixel coordinates
    descriptors: np.ndarray | None
    responses: np.ndarray  # N float


def reduction_factor(shape: tuple[int, ...], max_side: int) -> int:
    """Smallest integer reduction that brings the longest side to at most ``max_side``."""
    return max(1, -(-max(shape[:2]) // max_side))


def reduce_grey(grey: np.ndarray, k: int) -> np.ndarray:
    """Average ``k x k`` blocks (the last partial row/column of blocks is dropped).

    Integer factors keep ``cv2.resize(..., INTER_AREA)`` on its fast path (0.1 ms instead of
    4 ms for a 1080p frame); pixel centre ``x`` of the copy is ``(x + 0.5) * k - 0.5`` here.
    """
    if k == 1:
        return grey
    h, w = grey.shape
    nh, nw = max(1, h // k), max(1, w // k)
    return cv2.resize(grey[: nh * k, : nw * k], (nw, nh), interpolation=cv2.INTER_AREA)


def detect_features(
    grey: np.ndarray, detector: cv2.Feature2D, max_side: int, *, equalise: bool
) -> Features:
    """Keypoints of ``grey`` found on its copy reduced to at most ``max_side`` px (CLAHE
    equalised first when ``equalise``), in full-resolution pixel coordinates."""
    k = reduction_factor(grey.shape, max_side)
    small = reduce_grey(grey, k)
    if equalise:
        small = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(8, 8)).apply(small)
    keypoints, descriptors = detector.detectAndCompute(small, None)
    if not keypoints or descriptors is None:
        return Features(np.zeros((0, 2)), None, np.zeros(0))
    pts = np.array([kp.pt for kp in keypoints], dtype=np.float64)
    pts = (pts + 0.5) * k - 0.5
    return Features(pts, descriptors, np.array([kp.response for kp in keypoints]))


def match_features(
    fa: Features, fb: Features, norm: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
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

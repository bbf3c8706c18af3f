"""Tests of ``core.imaging.align`` against ground-truth homographies on photographs.

References: image B is made from A with OpenCV (``cv2.warpPerspective`` with a known matrix
``M`` mapping A to B, ``cv2.resize`` or a plain crop), so the true B -> A homography is
``inv(M)``. Overlap ratios are checked against a direct NumPy count of A's pixel centres whose
preimage lies in B, independent of the polygon clipping the module uses; the warp's valid mask
against the exact preimage of every pixel; warped pixels against OpenCV's own warp with two
different border values (equal wherever no interpolation tap leaves B).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import cache

import cv2
import numpy as np
import pytest

from core.imaging.align import estimate, geometry
from core.imaging.align.estimate import estimate_alignment
from core.imaging.align.geometry import corner_error, is_identity
from core.imaging.align.result import Alignment
from core.imaging.align.warp import warp_into
from core.imaging.errors import ErrorCode, ImagingError
from tests.support.images import decode_rgb, jpeg, paste_patch, photo, similarity

Case = tuple[np.ndarray, np.ndarray, np.ndarray]  # A, B, true B -> A homography


@cache
def _photo(name: str, width: int = 800, height: int = 600, seed: int = 1) -> np.ndarray:
    img = photo(width, height, name=name, seed=seed)
    img.flags.writeable = False
    return img


def _warped(
    a: np.ndarray, m: np.ndarray, size: tuple[int, int] | None = None, *, reflect: bool = False
) -> Case:
    """B = A warped by ``m`` (A -> B) into ``size`` (w, h); the truth is ``inv(m)``."""
    h, w = a.shape[:2]
    border = cv2.BORDER_REFLECT if reflect else cv2.BORDER_CONSTANT
    b = cv2.warpPerspective(a, m, size or (w, h), flags=cv2.INTER_CUBIC, borderMode=border)
    return a, b, np.linalg.inv(m)


def _sim(
    name: str,
    angle: float,
    scale: float,
    shift: tuple[float, float] = (0.0, 0.0),
    *,
    size: tuple[int, int] = (800, 600),
    reflect: bool = False,
) -> Case:
    a = _photo(name, *size)
    m = similarity(angle, scale, (size[0] / 2, size[1] / 2), shift)
    return _warped(a, m, reflect=reflect)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _b_crop_of_a() -> Case:
    a = _photo("coffee")
    return a, a[100:500, 150:650].copy(), _translation(150, 100)


def _a_crop_of_b() -> Case:
    b = _photo("astronaut")
    return b[80:480, 120:620].copy(), b, _translation(-120, -80)


def _b_half_size() -> Case:
    a = _photo("chelsea")
    b = cv2.resize(a, (400, 300), interpolation=cv2.INTER_AREA)
    # cv2.resize maps pixel centres as x_b = (x_a + 0.5) / 2 - 0.5.
    return a, b, np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])


def _b_larger_rotated() -> Case:
    a = _photo("rocket")
    m = similarity(12.0, 1.6, (400, 300), (150, 150))
    return _warped(a, m, (1100, 900))


def _perspective(name: str, size: tuple[int, int] = (800, 600)) -> Case:
    a = _photo(name, *size)
    w, h = size
    m = np.array([[1.02, 0.03, -0.02 * w], [-0.02, 0.99, 0.02 * h], [3e-5, -2e-5, 1.0]])
    m[2, :2] *= 800 / w  # the same amount of perspective at every size
    return _warped(a, m)


def _affine() -> Case:
    a = _photo("coffee")
    return _warped(a, np.array([[1.03, 0.04, 5.0], [0.01, 0.97, -3.0], [0.0, 0.0, 1.0]]))


def _gamma() -> Case:
    a, b, truth = _sim("chelsea", 7.0, 1.1, (5, 3))
    b = np.round(255 * (b / 255.0) ** 0.6).astype(np.uint8)
    return a, b, truth


def _jpeg_and_patch() -> Case:
    a, b, truth = _sim("astronaut", -9.0, 0.9, (-12, 8))
    return a, decode_rgb(jpeg(paste_patch(b, (300, 200, 160, 120)), 80)), truth


def _rgba16() -> Case:
    a, b, truth = _sim("rocket", 11.0, 1.2)

    def to16(img: np.ndarray) -> np.ndarray:
        alpha = np.full(img.shape[:2], 65535, np.uint16)
        return np.dstack([img.astype(np.uint16) * 257, alpha])

    return to16(a), to16(b), truth


HD = (1920, 1080)
CASES: dict[str, Callable[[], Case]] = {
    "rotate 15": lambda: _sim("astronaut", 15.0, 1.0, (6.3, -4.1)),
    "rotate -10": lambda: _sim("coffee", -10.0, 1.0),
    "shift": lambda: _sim("hubble_deep_field", 0.0, 1.0, (23.4, -41.7)),
    "zoom out 0.5": lambda: _sim("chelsea", 5.0, 0.5, reflect=True),
    "zoom in 2": lambda: _sim("rocket", -4.0, 2.0, reflect=True),
    "rotate 8 scale 0.7": lambda: _sim("retina", 8.0, 0.7),
    "perspective": lambda: _perspective("astronaut"),
    "affine": _affine,
    "B a crop of A": _b_crop_of_a,
    "A a crop of B": _a_crop_of_b,
    "B half size": _b_half_size,
    "B larger, rotated": _b_larger_rotated,
    "gamma": _gamma,
    "jpeg and patch": _jpeg_and_patch,
    "rgba16": _rgba16,
    "1080p rotate 10": lambda: _sim("astronaut", 10.0, 1.0, size=HD),
    "1080p zoom out 0.6": lambda: _sim("coffee", -6.0, 0.6, size=HD, reflect=True),
    "1080p B a crop": lambda: (
        _photo("rocket", *HD),
        _photo("rocket", *HD)[200:900, 300:1500].copy(),
        _translation(300, 200),
    ),
    "1080p perspective": lambda: _perspective("chelsea", HD),
}


@cache
def _case(name: str) -> Case:
    return CASES[name]()


def _coverage(truth: np.ndarray, b_shape: tuple[int, int], a_shape: tuple[int, int]) -> float:
    """Share of A's pixel centres whose preimage lies within B's pixel area (NumPy count)."""
    ha, wa = a_shape
    ys, xs = np.mgrid[0:ha, 0:wa].astype(np.float64)
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    src = np.linalg.inv(truth) @ pts
    x, y = src[0] / src[2], src[1] / src[2]
    inside = (x >= -0.5) & (x < b_shape[1] - 0.5) & (y >= -0.5) & (y < b_shape[0] - 0.5)
    return float(inside.mean())


# --------------------------------------------------------------------------------------------
# Recovering known transforms


@pytest.mark.parametrize("name", list(CASES))
def test_recovers_known_transform_to_subpixel(name: str) -> None:
    a, b, truth = _case(name)
    found = estimate_alignment(a, b)
    assert found.applied, found.reason
    assert found.reason is None and found.method is not None and "+lk-" in found.method
    assert found.homography is not None
    assert corner_error(found.homography, truth, a.shape[:2]) < 1.0
    h = found.homography
    assert found.translation == (h[0, 2], h[1, 2])
    true_scale = float(np.sqrt(abs(np.linalg.det(truth[:2, :2]))))
    assert found.scale == pytest.approx(true_scale, rel=0.005)
    assert found.inliers >= estimate.DEFAULT_MIN_INLIERS
    assert 0.0 < found.inlier_ratio <= 1.0
    assert found.reprojection_error is not None and found.reprojection_error < 0.5
    coverage = _coverage(truth, b.shape[:2], a.shape[:2])
    assert found.overlap_ratio == pytest.approx(coverage, abs=0.005)


@pytest.mark.parametrize(("angle", "scale"), [(15.0, 1.0), (-6.0, 1.08), (3.0, 0.5)])
def test_rotation_and_scale_follow_the_documented_sign(angle: float, scale: float) -> None:
    # B is A turned ``angle`` degrees counter-clockwise (OpenCV's convention, y down) and
    # scaled by ``scale``; the B -> A map turns the other way and scales by 1 / scale.
    a, b, _ = _sim("coffee", angle, scale, reflect=True)
    found = estimate_alignment(a, b)
    assert found.applied, found.reason
    assert found.rotation_deg == pytest.approx(-angle, abs=0.05)
    assert found.scale == pytest.approx(1.0 / scale, rel=0.002)


def test_refinement_reduces_corner_error() -> None:
    for name in ("zoom out 0.5", "B a crop of A", "1080p zoom out 0.6"):
        a, b, truth = _case(name)
        coarse = estimate_alignment(a, b, refine=False)
        fine = estimate_alignment(a, b)
        assert coarse.applied and fine.applied, (coarse.reason, fine.reason)
        assert coarse.method is not None and "+lk" not in coarse.method
        assert coarse.homography is not None and fine.homography is not None
        coarse_err = corner_error(coarse.homography, truth, a.shape[:2])
        fine_err = corner_error(fine.homography, truth, a.shape[:2])
        assert fine_err < coarse_err / 3, (name, coarse_err, fine_err)


def test_identical_and_regrained_copies_align_to_identity() -> None:
    a = _photo("astronaut")
    for b in (a, photo(800, 600, name="astronaut", seed=7)):
        found = estimate_alignment(a, b)
        assert found.applied, found.reason
        assert found.homography is not None
        assert is_identity(found.homography, a.shape[:2], tolerance_px=0.1)
        assert found.overlap_ratio == pytest.approx(1.0)


def test_low_contrast_zoom_falls_back_to_sift() -> None:
    # ORB finds too few keypoints in a 2x enlargement of the retina's smooth fundus.
    a, b, truth = _sim("retina", 8.0, 2.0, reflect=True)
    found = estimate_alignment(a, b)
    assert found.applied, found.reason
    assert found.method is not None and found.method.startswith("sift+")
    assert found.homography is not None
    assert corner_error(found.homography, truth, a.shape[:2]) < 1.0


def test_degenerate_homography_falls_back_to_partial_affine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With no perspective allowed, every MAGSAC homography counts as degenerate.
    monkeypatch.setattr(geometry, "MAX_PERSPECTIVE", 1.0)
    a, b, truth = _case("rotate 15")
    found = estimate_alignment(a, b)
    assert found.applied, found.reason
    assert found.method == "orb+partial-affine+lk-similarity"
    assert found.homography is not None
    assert corner_error(found.homography, truth, a.shape[:2]) < 1.0


# --------------------------------------------------------------------------------------------
# Refusals


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (600, 800, 3), dtype=np.uint8)


GREY = np.full((600, 800, 3), 127, np.uint8)
REFUSALS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "astronaut vs coffee": lambda: (_photo("astronaut"), _photo("coffee")),
    "chelsea vs rocket": lambda: (_photo("chelsea"), _photo("rocket")),
    "retina vs hubble": lambda: (_photo("retina"), _photo("hubble_deep_field")),
    "photo vs flat grey": lambda: (_photo("chelsea"), GREY),
    "flat grey vs flat grey": lambda: (GREY, GREY),
    "photo vs noise": lambda: (_photo("astronaut"), _noise(1)),
    "noise vs other noise": lambda: (_noise(2), _noise(3)),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_no_trustworthy_transform_is_refused(name: str) -> None:
    a, b = REFUSALS[name]()
    found = estimate_alignment(a, b)
    assert not found.applied
    assert found.reason
    assert found.method is None and found.homography is None and found.translation is None
    assert found.overlap_ratio is None and found.reprojection_error is None
    assert found.inliers < estimate.DEFAULT_MIN_INLIERS
    json.dumps(found.to_dict())


def test_flat_image_is_named_in_the_reason() -> None:
    found = estimate_alignment(_photo("coffee"), GREY)
    assert found.reason is not None and "image B is flat" in found.reason


def test_min_inliers_is_respected() -> None:
    a, b, _ = _case("rotate -10")
    found = estimate_alignment(a, b, min_inliers=5000)
    assert not found.applied
    assert found.reason is not None and "too few" in found.reason


@pytest.mark.parametrize(
    ("a", "b", "code", "image"),
    [
        (np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 3), np.uint8), "unsupported", "a"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 2), np.uint8), "unsupported", "b"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros(10, np.uint8), "unsupported", "b"),
    ],
)
def test_bad_arrays_raise_coded_errors(a: np.ndarray, b: np.ndarray, code: str, image: str) -> None:
    with pytest.raises(ImagingError) as info:
        estimate_alignment(a, b)
    assert info.value.code == ErrorCode.UNSUPPORTED_FORMAT
    assert info.value.image == image


def test_bad_options_raise_invalid_options() -> None:
    a = _photo("coffee")
    with pytest.raises(ImagingError) as info:
        estimate_alignment(a, a, min_inliers=3)
    assert info.value.code == ErrorCode.INVALID_OPTIONS
    with pytest.raises(ImagingError) as info:
        warp_into(a, np.eye(2), (10, 10))
    assert info.value.code == ErrorCode.INVALID_OPTIONS
    with pytest.raises(ImagingError) as info:
        is_identity(np.eye(3), (0, 10))
    assert info.value.code == ErrorCode.INVALID_OPTIONS


# --------------------------------------------------------------------------------------------
# The result object


def test_to_dict_is_json_ready() -> None:
    a, b, _ = _case("rotate -10")
    found = estimate_alignment(a, b)
    d = json.loads(json.dumps(found.to_dict()))
    assert set(d) == {f.name for f in dataclasses.fields(Alignment)}
    assert d["applied"] is True
    assert isinstance(d["homography"], list) and len(d["homography"]) == 3
    assert all(len(row) == 3 and all(isinstance(v, float) for v in row) for row in d["homography"])
    assert found.homography is not None
    assert np.allclose(d["homography"], found.homography)
    assert d["translation"] == list(found.translation or ())
    assert isinstance(d["inliers"], int) and isinstance(d["rotation_deg"], float)


def test_alignment_is_immutable() -> None:
    a, b, _ = _case("rotate -10")
    found = estimate_alignment(a, b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.applied = False  # type: ignore[misc]
    assert found.homography is not None
    with pytest.raises(ValueError):
        found.homography[0, 0] = 2.0


# --------------------------------------------------------------------------------------------
# warp_into


def _preimage(h: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates in B of every pixel centre of A's frame (NumPy)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    src = np.linalg.inv(h) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    return (src[0] / src[2]).reshape(shape), (src[1] / src[2]).reshape(shape)


@pytest.mark.parametrize(
    "h",
    [
        _translation(30.0, -20.0),
        similarity(-9.0, 1.0, (200, 150), (4.5, 7.25)),
        similarity(20.0, 1.7, (200, 150)),
        similarity(5.0, 0.4, (200, 150), (-60, 30)),
        np.array([[0.9, 0.05, 20.0], [-0.03, 1.1, -10.0], [2e-4, -1e-4, 1.0]]),
    ],
)
def test_warp_mask_holds_only_pixels_with_every_tap_inside_b(h: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    b = rng.integers(0, 256, (280, 390, 3), dtype=np.uint8)
    shape = (300, 400)
    warped, valid = warp_into(b, h, shape)
    assert warped.shape == (*shape, 3) and warped.dtype == np.uint8
    assert valid.shape == shape and valid.dtype == bool
    # Exact footprint: bicubic taps floor(x) - 1 .. floor(x) + 2 all inside B.
    x, y = _preimage(h, shape)
    inside = (x >= 1) & (x < b.shape[1] - 2) & (y >= 1) & (y < b.shape[0] - 2)
    assert not np.any(valid & ~inside), "a valid pixel reads outside B"
    # No more than the documented erosion (and rasterisation) is lost.
    det = abs(np.linalg.det(h[:2, :2]))
    margin = 2 * max(1.0, float(np.sqrt(det))) + 1
    grown = cv2.dilate(
        (~valid).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(np.ceil(margin))
    )
    assert not np.any(inside & (grown == 0) & ~valid)
    assert np.count_nonzero(valid) > 0.5 * np.count_nonzero(inside)
    # Where valid, no tap leaves B: the border value cannot matter.
    for fill in (0, 255):
        ref = cv2.warpPerspective(
            b,
            h,
            (shape[1], shape[0]),
            flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(fill,) * 3,
        )
        assert np.array_equal(warped[valid], ref[valid])


def test_integer_shift_warps_exactly() -> None:
    rng = np.random.default_rng(6)
    b = rng.integers(0, 65536, (120, 160, 4), dtype=np.uint16)
    warped, valid = warp_into(b, _translation(7, -5), (130, 150))
    assert warped.shape == (130, 150, 4) and warped.dtype == np.uint16
    ys, xs = np.nonzero(valid)
    assert np.array_equal(warped[ys, xs], b[ys + 5, xs - 7])
    # Bicubic footprint inside B: source x in [1, 158], y in [1, 118], i.e. A's x in [8, 165]
    # and y in [-4, 113]; clipped to A's frame, then eroded by one pixel except at A's edges.
    assert xs.min() == 9 and xs.max() == 149 and ys.min() == 0 and ys.max() == 112


def test_warp_round_trip_restores_a() -> None:
    a, b, _ = _case("rotate 15")
    found = estimate_alignment(a, b)
    assert found.homography is not None
    warped, valid = warp_into(b, found.homography, a.shape[:2])
    # Making B blended A's edge pixels with the black border: leave A's outer 3 px out.
    core = np.zeros_like(valid)
    core[3:-3, 3:-3] = True
    diff = np.abs(warped.astype(np.int16) - a.astype(np.int16)).max(axis=2)[valid & core]
    # Measured: mean 1.1 and 0.1 % of pixels above 10 levels (two bicubic resamplings at
    # sharp edges); a 0.5 px misregistration gives a mean of 3.9 and 7 %.
    assert diff.mean() < 1.5
    assert np.mean(diff > 10) < 0.005
    # The mask covers the overlap less a thin border.
    assert np.mean(valid) == pytest.approx(found.overlap_ratio, abs=0.01)


def test_warp_keeps_single_channel_shape() -> None:
    b = np.random.default_rng(2).integers(0, 256, (50, 60, 1), dtype=np.uint8)
    warped, valid = warp_into(b, np.eye(3), (50, 60))
    assert warped.shape == (50, 60, 1)
    assert np.array_equal(warped[valid], b[valid])


# --------------------------------------------------------------------------------------------
# is_identity and corner_error


@pytest.mark.parametrize(
    ("h", "expected"),
    [
        (np.eye(3), True),
        (_translation(0.4, 0.2), True),
        (_translation(0.6, 0.0), False),
        # Rotation about the centre of 1920x1080: the corners (1100.8 px away) move by r * theta.
        (similarity(0.02, 1.0, (959.5, 539.5)), True),  # 0.38 px
        (similarity(0.05, 1.0, (959.5, 539.5)), False),  # 0.96 px
        (similarity(0.0, 1.0004, (959.5, 539.5)), True),  # 0.44 px
        (similarity(0.0, 1.0006, (959.5, 539.5)), False),  # 0.66 px
    ],
)
def test_is_identity(h: np.ndarray, expected: bool) -> None:
    assert is_identity(h, (1080, 1920)) is expected


def test_is_identity_tolerance() -> None:
    assert is_identity(_translation(0.6, 0.0), (100, 100), tolerance_px=1.0)
    assert not is_identity(_translation(0.6, 0.0), (100, 100), tolerance_px=0.5)


def test_corner_error() -> None:
    h = similarity(7.0, 1.2, (400, 300), (3, 4))
    assert corner_error(h, h, (600, 800)) == pytest.approx(0.0, abs=1e-9)
    assert corner_error(_translation(1, 2), np.eye(3), (600, 800)) == pytest.approx(np.sqrt(5))
    # Scale 1.01 about the origin: corner (799, 599) comes back from c / 1.01.
    scale = np.diag([1.01, 1.01, 1.0])
    expected = np.hypot(799, 599) * (1 - 1 / 1.01)
    assert corner_error(scale, np.eye(3), (600, 800)) == pytest.approx(expected)
    assert corner_error(np.zeros((3, 3)), np.eye(3), (600, 800)) == float("inf")

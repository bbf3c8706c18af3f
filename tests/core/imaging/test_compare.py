"""End-to-end tests of ``core.imaging.compare``: bytes in, contract and heatmap out.

References: scikit-image's structural_similarity and OpenCV's cv2.PSNR on the same decoded
pixels; ground-truth homographies for alignment; the pasted rectangle for regions.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from core.imaging import VERDICTS, CompareOptions, ErrorCode, ImagingError, compare
from core.imaging.align.geometry import corner_error
from tests.support.images import decode_rgb, jpeg, paste_patch, photo, png, similarity, warp

CONTRACT_KEYS = {
    "engine_version",
    "mode",
    "width",
    "height",
    "ssim",
    "ssim_components",
    "psnr",
    "mse",
    "histogram_similarity",
    "changed_ratio",
    "verdict",
    "summary",
    "alignment",
    "regions",
    "ignored",
    "timings_ms",
}
ALIGNMENT_KEYS = {
    "applied",
    "method",
    "homography",
    "inliers",
    "inlier_ratio",
    "reprojection_error",
    "translation",
    "rotation_deg",
    "scale",
    "overlap_ratio",
    "reason",
}


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return photo(640, 480, name="astronaut", seed=3)


def test_identical_pair(base: np.ndarray) -> None:
    data = png(base)
    result = compare(data, data)
    d = result.to_dict()
    assert d["verdict"] == "identical"
    assert d["ssim"] == 1.0 and d["psnr"] is None and d["mse"] == 0.0
    assert d["changed_ratio"] == 0.0 and d["regions"] == []
    assert d["histogram_similarity"] == pytest.approx(1.0)
    heat = decode_rgb(result.heatmap_png)
    assert heat.shape == base.shape
    assert np.all(heat == (0, 0, 255)), "identical pixels are exactly blue"


def test_contract_is_complete_and_json(base: np.ndarray) -> None:
    other = paste_patch(base, (100, 120, 80, 60))
    d = compare(png(base), png(other)).to_dict()
    assert d.keys() >= CONTRACT_KEYS
    assert d["alignment"].keys() >= ALIGNMENT_KEYS
    assert set(d["ssim_components"]) == {"luminance", "contrast", "structure"}
    assert d["verdict"] in VERDICTS
    assert (d["width"], d["height"]) == (640, 480)
    json.dumps(d)  # plain types only


def test_pixel_scores_match_references(base: np.ndarray) -> None:
    other = decode_rgb(jpeg(base, quality=70))
    result = compare(png(base), png(other), CompareOptions(mode="pixel"))
    ref_ssim = structural_similarity(
        base,
        other,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    assert result.ssim == pytest.approx(ref_ssim, abs=1e-4)
    assert result.psnr == pytest.approx(cv2.PSNR(base, other), abs=1e-6)


def test_scores_are_symmetric(base: np.ndarray) -> None:
    other = decode_rgb(jpeg(base, quality=60))
    ab = compare(png(base), png(other), CompareOptions(mode="pixel")).to_dict()
    ba = compare(png(other), png(base), CompareOptions(mode="pixel")).to_dict()
    for key in ("ssim", "psnr", "mse", "histogram_similarity", "changed_ratio"):
        assert ab[key] == pytest.approx(ba[key], abs=1e-9), key


def test_pasted_patch_is_a_localized_edit_with_its_region(base: np.ndarray) -> None:
    rect = (300, 180, 90, 70)
    result = compare(png(base), png(paste_patch(base, rect)))
    d = result.to_dict()
    assert d["verdict"] == "localized_edit", d["summary"]
    first = d["regions"][0]
    assert iou((first["x"], first["y"], first["width"], first["height"]), rect) >= 0.5
    assert not d["alignment"]["applied"]
    heat = decode_rgb(result.heatmap_png)
    x, y, w, h = rect
    assert heat[y + h // 2, x + w // 2, 0] > 200, "the edit is drawn red"


def test_ignore_region_removes_the_edit(base: np.ndarray) -> None:
    rect = (300, 180, 90, 70)
    result = compare(
        png(base), png(paste_patch(base, rect)), CompareOptions(ignore=((290, 170, 110, 90),))
    )
    d = result.to_dict()
    assert d["verdict"] == "identical" and d["psnr"] is None
    assert d["ignored"] == [[290, 170, 110, 90]]
    assert d["compared_pixels"] == 640 * 480 - 110 * 90
    heat = decode_rgb(result.heatmap_png)
    assert tuple(heat[200, 320]) == (128, 128, 128), "ignored pixels are neutral grey"


def test_ignore_rectangles_are_clipped(base: np.ndarray) -> None:
    data = png(base)
    d = compare(data, data, CompareOptions(ignore=((600, 400, 100, 100), (-5, -5, 2, 2)))).to_dict()
    assert d["ignored"] == [[600, 400, 40, 80]]


def test_rotated_pair_is_aligned_in_auto_mode() -> None:
    a = photo(960, 720, name="astronaut", seed=5)
    h, w = a.shape[:2]
    truth = similarity(6.0, 1.08, (w / 2, h / 2))  # A -> B
    b = warp(a, truth, (w, h))
    result = compare(png(a), png(b))
    d = result.to_dict()
    assert d["alignment"]["applied"], d["alignment"]["reason"]
    h_est = np.array(d["alignment"]["homography"])
    assert corner_error(h_est, np.linalg.inv(truth), (h, w)) < 1.0
    assert d["alignment"]["rotation_deg"] == pytest.approx(-6.0, abs=0.1) or d["alignment"][
        "rotation_deg"
    ] == pytest.approx(6.0, abs=0.1)
    assert d["verdict"] in ("identical", "global_change"), d["summary"]
    assert d["ssim"] > 0.9
    heat = decode_rgb(result.heatmap_png)
    assert tuple(heat[h // 2, w // 2]) != (128, 128, 128)


def test_pixel_mode_reports_misregistration_without_aligning(base: np.ndarray) -> None:
    h, w = base.shape[:2]
    shifted = warp(base, similarity(0.0, 1.0, (0, 0), shift=(7, -4)), (w, h))
    d = compare(png(base), png(shifted), CompareOptions(mode="pixel")).to_dict()
    assert d["verdict"] == "misaligned", d["summary"]
    assert d["alignment"]["applied"] is False


def test_different_sizes_auto_aligns_a_crop() -> None:
    a = photo(800, 600, name="coffee", seed=2)
    b = a[100:500, 150:650].copy()  # B is a crop of A
    d = compare(png(a), png(b)).to_dict()
    assert d["alignment"]["applied"], d["alignment"]["reason"]
    assert d["alignment"]["translation"] == pytest.approx([150, 100], abs=1.0)
    assert d["alignment"]["overlap_ratio"] == pytest.approx(500 * 400 / (800 * 600), abs=0.02)
    assert d["verdict"] == "identical", d["summary"]


def test_unrelated_images_are_different(base: np.ndarray) -> None:
    other = photo(640, 480, name="coffee", seed=9)
    d = compare(png(base), png(other)).to_dict()
    assert d["verdict"] == "different", d["summary"]
    assert not d["alignment"]["applied"]


@pytest.mark.parametrize(
    ("a", "b", "options", "code", "image"),
    [
        (b"", None, None, ErrorCode.EMPTY_FILE, "a"),
        (None, b"hello, I am a text file\n", None, ErrorCode.UNSUPPORTED_FORMAT, "b"),
        (None, "truncated", None, ErrorCode.CORRUPT_IMAGE, "b"),
        (None, "small", CompareOptions(mode="pixel"), ErrorCode.SIZE_MISMATCH, None),
        (None, "unrelated", CompareOptions(mode="align"), ErrorCode.ALIGNMENT_FAILED, None),
    ],
)
def test_bad_input_raises_a_coded_error(base, a, b, options, code, image) -> None:
    good = png(base)
    replacements = {
        "truncated": good[: len(good) // 2],
        "small": png(base[:100, :100]),
        "unrelated": png(np.full_like(base, 127)),
    }
    a_bytes = good if a is None else a
    b_bytes = good if b is None else replacements.get(b, b) if isinstance(b, str) else b
    with pytest.raises(ImagingError) as info:
        compare(a_bytes, b_bytes, options)
    assert info.value.code == code
    assert info.value.image == image


def test_pixel_limit_is_an_option(base: np.ndarray) -> None:
    with pytest.raises(ImagingError) as info:
        compare(png(base), png(base), CompareOptions(max_pixels=1000))
    assert info.value.code == ErrorCode.IMAGE_TOO_LARGE


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ImagingError) as info:
        CompareOptions(mode="fuzzy")  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.INVALID_OPTIONS
    with pytest.raises(ImagingError):
        CompareOptions(tolerance=1.5)
    with pytest.raises(ImagingError):
        CompareOptions(ignore=((0, 0, 0, 5),))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), size=st.integers(12, 48))
def test_random_pairs_stay_in_range_and_symmetric(seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)
    b = a.copy()
    b[rng.random(b.shape[:2]) < 0.3] = rng.integers(0, 256, 3, dtype=np.uint8)
    ab = compare(png(a), png(b), CompareOptions(mode="pixel")).to_dict()
    ba = compare(png(b), png(a), CompareOptions(mode="pixel")).to_dict()
    assert 0.0 <= ab["ssim"] <= 1.0
    assert 0.0 <= ab["histogram_similarity"] <= 1.0 + 1e-9
    assert 0.0 <= ab["changed_ratio"] <= 1.0
    assert ab["ssim"] == pytest.approx(ba["ssim"], abs=1e-9)
    assert ab["changed_ratio"] == ba["changed_ratio"]

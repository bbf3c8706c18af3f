"""SSIM, PSNR and histogram similarity against independent references, and their invariants.

References: scikit-image's ``structural_similarity`` (float64, Wang et al. settings), OpenCV's
``cv2.PSNR`` and ``cv2.compareHist`` (Bhattacharyya), a float64 SciPy implementation of the SSIM
components written here from the paper's formulas, and NumPy histograms.
"""

from __future__ import annotations

from functools import cache

import cv2
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import structural_similarity

from core.imaging import metrics, parallel
from core.imaging.metrics import SSIMResult, histogram_similarity, psnr, ssim

# --------------------------------------------------------------------------------------------
# test images (made by code or from scikit-image's bundled samples)


@cache
def _sample(name: str, width: int, height: int) -> np.ndarray:
    src = getattr(data, name)()
    if src.ndim == 2:
        src = np.dstack([src] * 3)
    img = cv2.resize(src[..., :3], (width, height), interpolation=cv2.INTER_AREA)
    img.setflags(write=False)
    return img


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(img.dtype).max
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, top).astype(img.dtype)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    assert out is not None
    return out


def _screenshot(shift: int) -> np.ndarray:
    """White page with dark text: large flat areas near the top of the range."""
    img = np.full((120, 200, 3), 255, np.uint8)
    for i, word in enumerate(["DiffALL", "ssim 0.98", "psnr 41 dB"]):
        cv2.putText(img, word, (8 + shift, 30 + 35 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                    (20, 30, 40), 2, cv2.LINE_AA)  # fmt: skip
    return img


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    astro = _sample("astronaut", 256, 192)
    retina = _sample("retina", 160, 160)
    return {
        "noise": (astro, _noisy(astro, 10, seed=1)),
        "blur": (astro, cv2.GaussianBlur(astro, (5, 5), 2)),
        "jpeg_q30": (astro, _jpeg(astro, 30)),
        "brightness_plus_40": (astro, np.clip(astro.astype(int) + 40, 0, 255).astype(np.uint8)),
        "different_images": (astro, _sample("coffee", 256, 192)),
        "dark_flat_retina": (retina, _jpeg(retina, 50)),
        "white_screenshot_text_moved": (_screenshot(0), _screenshot(3)),
        "small_16x16": (
            rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
            rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        ),
        "non_square_37x101": (
            _sample("chelsea", 101, 37),
            _noisy(_sample("chelsea", 101, 37), 5, seed=2),
        ),
        "minimum_11x11": (
            rng.integers(0, 256, (11, 11, 3), dtype=np.uint8),
            rng.integers(100, 156, (11, 11, 3), dtype=np.uint8),
        ),
        "rgba": (
            np.dstack([astro, np.full(astro.shape[:2], 255, np.uint8)]),
            np.dstack([_noisy(astro, 4, seed=3), rng.integers(200, 256, astro.shape[:2])]).astype(
                np.uint8
            ),
        ),
        "grey_one_channel": (astro[..., :1], _noisy(astro[..., :1], 8, seed=4)),
    }


PAIRS = _pairs()


def _skimage(
    a: np.ndarray, b: np.ndarray, data_range: float, **kw: object
) -> tuple[float, np.ndarray]:
    """scikit-image's SSIM with Wang et al.'s settings; returns the mean and the full map."""
    score, full = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=data_range, channel_axis=-1, full=True, **kw,
    )  # fmt: skip
    return float(score), full


# --------------------------------------------------------------------------------------------
# SSIM against scikit-image


@pytest.mark.parametrize("name", list(PAIRS))
def test_ssim_matches_skimage(name: str) -> None:
    a, b = PAIRS[name]
    ref, full = _skimage(a, b, 255)
    got = ssim(a, b, data_range=255)
    assert isinstance(got, SSIMResult)
    assert abs(got.score - ref) < 1e-6
    assert got.ssim_map.dtype == np.float32
    assert got.ssim_map.shape == a.shape[:2]
    # The map is float32 throughout; per pixel it agrees to ~1e-4 (scikit-image is float64).
    np.testing.assert_allclose(got.ssim_map, full.mean(axis=2), rtol=0, atol=2e-4)


def test_ssim_16_bit_matches_skimage() -> None:
    astro = _sample("astronaut", 256, 192).astype(np.uint16) * 257
    for b in (_noisy(astro, 2000, seed=5), cv2.GaussianBlur(astro, (5, 5), 2),
              _noisy(astro, 3, seed=6)):  # fmt: skip
        ref, full = _skimage(astro, b, 65535)
        got = ssim(astro, b, data_range=65535)
        assert abs(got.score - ref) < 1e-6
        np.testing.assert_allclose(got.ssim_map, full.mean(axis=2), rtol=0, atol=2e-4)


def test_ssim_many_bands_and_threads_match_skimage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny bands (3 rows plus a 5-row halo) exercise the halo and the image-border reflection."""
    a, b = PAIRS["noise"]
    ref, _ = _skimage(a, b, 255)
    whole = ssim(a, b, data_range=255)
    monkeypatch.setattr(metrics, "_MIN_BAND_ROWS", 3)
    monkeypatch.setattr(metrics, "_BAND_VALUES", 1)
    for threads in (1, 4):
        monkeypatch.setattr(parallel, "MAX_THREADS", threads)
        got = ssim(a, b, data_range=255)
        assert abs(got.score - ref) < 1e-6
        np.testing.assert_allclose(got.ssim_map, whole.ssim_map, rtol=0, atol=2e-4)
    # The result does not depend on how bands were scheduled over threads.
    monkeypatch.setattr(parallel, "MAX_THREADS", 1)
    one = ssim(a, b, data_range=255)
    monkeypatch.setattr(parallel, "MAX_THREADS", 4)
    four = ssim(a, b, data_range=255)
    assert one.score == four.score
    np.testing.assert_array_equal(one.ssim_map, four.ssim_map)


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 5, 3), (8, 8, 3), (10, 30, 4)])
def test_ssim_images_smaller_than_the_window_average_every_pixel(
    shape: tuple[int, int, int],
) -> None:
    """scikit-image refuses these; with win_size=1 it keeps its Gaussian filter but crops 0."""
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = rng.integers(0, 256, shape, dtype=np.uint8)
    ref, _ = _skimage(a, b, 255, win_size=1)
    assert abs(ssim(a, b, data_range=255).score - ref) < 1e-6


def _reference_components(a: np.ndarray, b: np.ndarray, data_range: float) -> list[float]:
    """Float64 SSIM, luminance, contrast, structure means, straight from Wang et al.'s formulas."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    c3 = c2 / 2
    maps: list[list[np.ndarray]] = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)

        def g(z: np.ndarray) -> np.ndarray:
            return gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")

        mx, my = g(x), g(y)
        vx, vy, cxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
        sx, sy = np.sqrt(np.maximum(vx, 0)), np.sqrt(np.maximum(vy, 0))
        lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
        con = (2 * sx * sy + c2) / (vx + vy + c2)
        struct = (cxy + c3) / (sx * sy + c3)
        maps.append([m[5:-5, 5:-5] for m in (lum * con * struct, lum, con, struct)])
    return [float(np.mean([m[i] for m in maps])) for i in range(4)]


@pytest.mark.parametrize("name", ["noise", "brightness_plus_40", "different_images", "rgba"])
def test_ssim_components_match_float64_formulas(name: str) -> None:
    a, b = PAIRS[name]
    score, lum, con, struct = _reference_components(a, b, 255)
    got = ssim(a, b, data_range=255)
    assert abs(got.score - score) < 1e-6
    assert abs(got.luminance - lum) < 1e-6
    # Contrast and structure take square roots of near-zero float32 variances.
    assert abs(got.contrast - con) < 1e-3
    assert abs(got.structure - struct) < 1e-3
    assert 0 < got.luminance <= 1 and 0 < got.contrast <= 1 and -1 <= got.structure <= 1


def test_ssim_components_tell_brightness_from_structure() -> None:
    a, b = PAIRS["brightness_plus_40"]
    bright = ssim(a, b, data_range=255)
    a, b = PAIRS["noise"]
    noisy = ssim(a, b, data_range=255)
    assert bright.luminance < 0.9 < bright.structure
    assert noisy.structure < 0.9 < noisy.luminance


# --------------------------------------------------------------------------------------------
# SSIM invariants


@pytest.mark.parametrize("name", ["noise", "white_screenshot_text_moved", "rgba", "small_16x16"])
def test_ssim_of_an_image_with_itself_is_exactly_one(name: str) -> None:
    a, _ = PAIRS[name]
    got = ssim(a, a.copy(), data_range=255)
    assert (got.score, got.luminance, got.contrast, got.structure) == (1.0, 1.0, 1.0, 1.0)
    assert np.all(got.ssim_map == 1.0)


@pytest.mark.parametrize("name", ["noise", "brightness_plus_40", "different_images", "rgba"])
def test_ssim_is_exactly_symmetric(name: str) -> None:
    a, b = PAIRS[name]
    ab, ba = ssim(a, b, data_range=255), ssim(b, a, data_range=255)
    assert (ab.score, ab.luminance, ab.contrast, ab.structure) == (
        ba.score, ba.luminance, ba.contrast, ba.structure,
    )  # fmt: skip
    np.testing.assert_array_equal(ab.ssim_map, ba.ssim_map)


def test_ssim_orders_degradations() -> None:
    astro = _sample("astronaut", 256, 192)
    scores = [ssim(astro, _noisy(astro, s, seed=9), data_range=255).score for s in (2, 8, 30)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_ssim_accepts_non_contiguous_views() -> None:
    a, b = PAIRS["noise"]
    view_a, view_b = a[::-1, ::2], b[::-1, ::2]
    expected = ssim(np.ascontiguousarray(view_a), np.ascontiguousarray(view_b), data_range=255)
    assert ssim(view_a, view_b, data_range=255).score == expected.score


small_images = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4])),
)


@settings(max_examples=60, deadline=None)
@given(pair=small_images.flatmap(lambda a: st.tuples(st.just(a), hnp.arrays(np.uint8, a.shape))))
def test_ssim_properties_on_random_arrays(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    ab, ba = ssim(a, b, data_range=255), ssim(b, a, data_range=255)
    assert ab.score == ba.score
    assert -1.0 <= ab.score <= 1.0
    assert 0.0 <= ab.luminance <= 1.0 and 0.0 <= ab.contrast <= 1.0
    assert -1.0 <= ab.structure <= 1.0
    assert np.all(np.isfinite(ab.ssim_map))
    assert ssim(a, a, data_range=255).score == 1.0


# --------------------------------------------------------------------------------------------
# masks


def _changed_pair() -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    a = _sample("astronaut", 256, 192)
    b = a.copy()
    area = (slice(60, 100), slice(120, 180))
    b[area] = 255 - b[area]
    return a, b, area


def test_masking_out_the_only_change_makes_the_images_identical() -> None:
    a, b, (ys, xs) = _changed_pair()
    mask = np.ones(a.shape[:2], bool)
    mask[ys, xs] = False
    assert psnr(a, b, data_range=255, mask=mask) == (None, 0.0)
    assert histogram_similarity(a, b, data_range=255, mask=mask) == pytest.approx(1.0, abs=1e-12)
    # SSIM windows reach 5 px: also mask out a 5 px ring around the change. (1 up to float32
    # rounding: the change shifts the band means that a and b are centred on.)
    ring = np.ones(a.shape[:2], bool)
    ring[ys.start - 5 : ys.stop + 5, xs.start - 5 : xs.stop + 5] = False
    got = ssim(a, b, data_range=255, mask=ring)
    for value in (got.score, got.luminance, got.contrast, got.structure):
        assert value == pytest.approx(1.0, abs=1e-5)
    # Without the ring the windows next to the change still see it.
    unmasked = ssim(a, b, data_range=255)
    leaky = ssim(a, b, data_range=255, mask=mask)
    assert unmasked.score < 0.95 < leaky.score < got.score
    assert psnr(a, b, data_range=255)[0] is not None


def test_masked_ssim_averages_skimage_map_over_masked_interior() -> None:
    a, b = PAIRS["jpeg_q30"]
    rng = np.random.default_rng(11)
    mask = rng.random(a.shape[:2]) < 0.3
    mask[:, :40] = True
    _, full = _skimage(a, b, 255)
    per_pixel = full.mean(axis=2)[5:-5, 5:-5]
    expected = per_pixel[mask[5:-5, 5:-5]].mean()
    got = ssim(a, b, data_range=255, mask=mask)
    assert abs(got.score - expected) < 1e-6
    # The map does not depend on the mask.
    np.testing.assert_array_equal(got.ssim_map, ssim(a, b, data_range=255).ssim_map)


def test_mask_only_in_the_border_strip_averages_its_pixels() -> None:
    a, b = PAIRS["noise"]
    mask = np.zeros(a.shape[:2], bool)
    mask[:3, :] = True
    _, full = _skimage(a, b, 255)
    expected = full.mean(axis=2)[mask].mean()
    assert abs(ssim(a, b, data_range=255, mask=mask).score - expected) < 1e-6


def test_empty_mask_compares_nothing() -> None:
    a, b, _ = _changed_pair()
    nothing = np.zeros(a.shape[:2], bool)
    got = ssim(a, b, data_range=255, mask=nothing)
    assert (got.score, got.luminance, got.contrast, got.structure) == (1.0, 1.0, 1.0, 1.0)
    assert got.ssim_map.shape == a.shape[:2]
    assert psnr(a, b, data_range=255, mask=nothing) == (None, 0.0)
    assert histogram_similarity(a, b, data_range=255, mask=nothing) == 1.0


# --------------------------------------------------------------------------------------------
# PSNR


@pytest.mark.parametrize("name", ["noise", "jpeg_q30", "different_images", "rgba", "small_16x16"])
def test_psnr_matches_opencv(name: str) -> None:
    a, b = PAIRS[name]
    db, mse = psnr(a, b, data_range=255)
    assert db is not None
    assert abs(db - cv2.PSNR(a, b, 255)) < 1e-6
    assert mse == pytest.approx(np.mean((a.astype(np.float64) - b) ** 2), rel=1e-12)


def test_psnr_16_bit_matches_opencv() -> None:
    astro = _sample("astronaut", 256, 192).astype(np.uint16) * 257
    b = _noisy(astro, 500, seed=12)
    db, mse = psnr(astro, b, data_range=65535)
    assert db is not None
    assert abs(db - cv2.PSNR(astro, b, 65535)) < 1e-6
    assert mse == pytest.approx(np.mean((astro.astype(np.float64) - b) ** 2), rel=1e-12)


def test_psnr_masked_matches_numpy() -> None:
    a, b = PAIRS["noise"]
    mask = np.random.default_rng(13).random(a.shape[:2]) < 0.4
    db, mse = psnr(a, b, data_range=255, mask=mask)
    expected_mse = np.mean((a.astype(np.float64) - b)[mask] ** 2)
    assert mse == pytest.approx(expected_mse, rel=1e-12)
    assert db == pytest.approx(10 * np.log10(255**2 / expected_mse), abs=1e-9)


def test_psnr_of_identical_images_is_none() -> None:
    a, _ = PAIRS["rgba"]
    assert psnr(a, a.copy(), data_range=255) == (None, 0.0)


def test_psnr_known_value() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 5, np.uint8)  # mse = 25 -> 20 log10(255 / 5)
    db, mse = psnr(a, b, data_range=255)
    assert mse == 25.0
    assert db == pytest.approx(20 * np.log10(51), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(pair=small_images.flatmap(lambda a: st.tuples(st.just(a), hnp.arrays(np.uint8, a.shape))))
def test_psnr_properties(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    db, mse = psnr(a, b, data_range=255)
    assert (db, mse) == psnr(b, a, data_range=255)
    assert 0.0 <= mse <= 255.0**2
    assert (db is None) == np.array_equal(a, b)
    if db is not None:
        assert db >= 0.0


# --------------------------------------------------------------------------------------------
# histogram similarity


def _compare_hist_reference(
    a: np.ndarray, b: np.ndarray, data_range: int, bins: int, mask: np.ndarray | None = None
) -> float:
    """Mean over channels of 1 - d^2, d = OpenCV's Bhattacharyya distance of NumPy histograms."""
    values = []
    for ch in range(a.shape[2]):
        xa, xb = a[..., ch], b[..., ch]
        if mask is not None:
            xa, xb = xa[mask], xb[mask]
        ha, _ = np.histogram(xa, bins=bins, range=(0, data_range + 1))
        hb, _ = np.histogram(xb, bins=bins, range=(0, data_range + 1))
        pa = (ha / ha.sum()).astype(np.float32)
        pb = (hb / hb.sum()).astype(np.float32)
        d = cv2.compareHist(pa, pb, cv2.HISTCMP_BHATTACHARYYA)
        values.append(1.0 - d * d)
    return float(np.mean(values))


@pytest.mark.parametrize("name", ["noise", "brightness_plus_40", "different_images", "rgba"])
@pytest.mark.parametrize("bins", [64, 16, 256, 100, 1])
def test_histogram_similarity_matches_compare_hist(name: str, bins: int) -> None:
    a, b = PAIRS[name]
    got = histogram_similarity(a, b, data_range=255, bins=bins)
    assert got == pytest.approx(_compare_hist_reference(a, b, 255, bins), abs=1e-6)


@pytest.mark.parametrize("threaded", [False, True])
def test_histogram_similarity_masked_matches_calc_hist_reference(
    threaded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if threaded:  # one thread per image, as for large images
        monkeypatch.setattr(metrics, "_PARALLEL_HISTOGRAM_VALUES", 0)
    a, b = PAIRS["different_images"]
    mask = np.random.default_rng(14).random(a.shape[:2]) < 0.5
    expected = _compare_hist_reference(a, b, 255, 64, mask)
    # The same reference with OpenCV's own masked histograms.
    values = []
    for ch in range(3):
        ha = cv2.calcHist([a], [ch], mask.astype(np.uint8), [64], [0, 256])
        hb = cv2.calcHist([b], [ch], mask.astype(np.uint8), [64], [0, 256])
        d = cv2.compareHist(ha / ha.sum(), hb / hb.sum(), cv2.HISTCMP_BHATTACHARYYA)
        values.append(1 - d * d)
    assert expected == pytest.approx(float(np.mean(values)), abs=1e-6)
    got = histogram_similarity(a, b, data_range=255, mask=mask)
    assert got == pytest.approx(expected, abs=1e-6)
    assert got != pytest.approx(histogram_similarity(a, b, data_range=255), abs=1e-4)


def test_histogram_similarity_16_bit_matches_compare_hist() -> None:
    astro = _sample("astronaut", 256, 192).astype(np.uint16) * 257
    b = _noisy(astro, 3000, seed=15)
    got = histogram_similarity(astro, b, data_range=65535)
    assert got == pytest.approx(_compare_hist_reference(astro, b, 65535, 64), abs=1e-6)


def test_histogram_similarity_ignores_positions_and_sees_disjoint_colours() -> None:
    a, _ = PAIRS["noise"]
    rng = np.random.default_rng(16)
    shuffled = rng.permutation(a.reshape(-1, 3)).reshape(a.shape)
    assert histogram_similarity(a, shuffled, data_range=255) == pytest.approx(1.0, abs=1e-12)
    dark = np.full((8, 8, 3), 10, np.uint8)
    light = np.full((8, 8, 3), 200, np.uint8)
    assert histogram_similarity(dark, light, data_range=255) == 0.0


@settings(max_examples=40, deadline=None)
@given(pair=small_images.flatmap(lambda a: st.tuples(st.just(a), hnp.arrays(np.uint8, a.shape))))
def test_histogram_similarity_properties(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    ab = histogram_similarity(a, b, data_range=255)
    assert ab == pytest.approx(histogram_similarity(b, a, data_range=255), abs=1e-12)
    assert 0.0 <= ab <= 1.0
    assert histogram_similarity(a, a, data_range=255) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# validation: programmer errors raise ValueError before any maths

_A = np.zeros((12, 12, 3), np.uint8)


@pytest.mark.parametrize(
    ("b", "kwargs"),
    [
        (np.zeros((12, 13, 3), np.uint8), {}),  # shape mismatch
        (np.zeros((12, 12, 4), np.uint8), {}),  # channel mismatch
        (np.zeros((12, 12, 3), np.uint16), {}),  # dtype mismatch
        (_A, {"mask": np.ones((12, 13), bool)}),  # mask shape
        (_A, {"mask": np.ones((12, 12), np.uint8)}),  # mask dtype
        (_A, {"data_range": 0}),
        (_A, {"data_range": float("nan")}),
    ],
)
@pytest.mark.parametrize("func", [ssim, psnr, histogram_similarity])
def test_bad_arguments_raise_value_error(func: object, b: np.ndarray, kwargs: dict) -> None:
    kw = {"data_range": 255, **kwargs}
    with pytest.raises(ValueError):
        func(_A, b, **kw)  # type: ignore[operator]


@pytest.mark.parametrize(
    "a",
    [
        np.zeros((12, 12), np.uint8),  # 2-D
        np.zeros((12, 12, 5), np.uint8),  # too many channels
        np.zeros((0, 12, 3), np.uint8),  # empty
        np.zeros((12, 12, 3), np.float32),  # float
        np.zeros((12, 12, 3), np.int16),  # signed
    ],
)
@pytest.mark.parametrize("func", [ssim, psnr, histogram_similarity])
def test_bad_images_raise_value_error(func: object, a: np.ndarray) -> None:
    with pytest.raises(ValueError):
        func(a, a.copy(), data_range=255)  # type: ignore[operator]


@pytest.mark.parametrize("kwargs", [{"sigma": 0}, {"k1": 0}, {"k2": -0.03}, {"sigma": np.inf}])
def test_bad_ssim_options_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ssim(_A, _A, data_range=255, **kwargs)


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_bad_bins_raise_value_error(bins: object) -> None:
    with pytest.raises(ValueError):
        histogram_similarity(_A, _A, data_range=255, bins=bins)  # type: ignore[arg-type]

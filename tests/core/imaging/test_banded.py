"""The banded pass gives the whole-image route's results: same numbers, same PNG bytes.

Every test compares ``measure_banded`` (or ``compare`` above ``BANDED_MIN_PIXELS``) with the
whole-image functions on the same inputs: random images, images with a local edit (so that
identical rows are skipped by SSIM), 16-bit and RGBA inputs, masks, and band sizes that do not
divide the image height.
"""

from __future__ import annotations

import importlib
from itertools import pairwise

import cv2
import numpy as np
import pytest

from core.imaging.banded import measure_banded
from core.imaging.compare import compare
from core.imaging.diffmap import difference_map
from core.imaging.heatmap import heatmap_strips, render_heatmap, render_preview
from core.imaging.metrics import histogram_similarity, psnr, ssim
from core.imaging.options import CompareOptions

engine = importlib.import_module("core.imaging.compare")  # the module, not the function


def _pair(
    height: int, width: int, channels: int, dtype: type, *, seed: int, edit: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    a: np.ndarray = rng.integers(0, top + 1, (height, width, channels)).astype(dtype)
    if edit:  # a local edit: most rows identical, as in a screenshot pair
        b = a.copy()
        y0, y1 = height // 3, max(height // 3 + 1, height // 2)
        b[y0:y1, width // 4 : width // 2 + 1] = rng.integers(
            0, top + 1, (y1 - y0, width // 2 + 1 - width // 4, channels)
        )
    else:  # noise everywhere, as a re-compressed image
        noise = rng.integers(-3, 4, a.shape)
        b = np.clip(a.astype(np.int64) + noise, 0, top).astype(dtype)
    return a, b, top


def _assert_same(
    a: np.ndarray,
    b: np.ndarray,
    data_range: int,
    valid: np.ndarray | None,
    band_bytes: int,
    preview: int | None = 64,
) -> None:
    if valid is not None:
        b = b.copy()
        np.copyto(b, a, where=~valid[..., None])
    got = measure_banded(
        a, b, data_range=data_range, valid=valid, preview_max_side=preview, band_bytes=band_bytes
    )
    want = ssim(a, b, data_range=data_range, mask=valid)
    for name in ("score", "luminance", "contrast", "structure"):
        assert getattr(got.ssim, name) == pytest.approx(getattr(want, name), abs=1e-12), name
    assert (got.psnr, got.mse) == psnr(a, b, data_range=data_range, mask=valid)
    assert got.histogram_similarity == pytest.approx(
        histogram_similarity(a, b, data_range=data_range, mask=valid), abs=1e-9
    )
    diff = difference_map(a, b)
    np.testing.assert_array_equal(got.diff, diff)
    assert got.nonzero_pixels == cv2.countNonZero(diff)
    assert got.heatmap_png == render_heatmap(diff, valid=valid)
    if preview is None:
        assert got.preview_png is None
    else:
        assert got.preview_png == render_preview(diff, valid=valid, max_side=preview)


@pytest.mark.parametrize("edit", [True, False])
@pytest.mark.parametrize(
    ("height", "width", "channels", "dtype"),
    [
        (1, 1, 3, np.uint8),
        (9, 14, 3, np.uint8),  # smaller than the SSIM window: no border crop
        (333, 517, 3, np.uint8),
        (1201, 907, 3, np.uint8),  # several heatmap strips, a height no band size divides
        (401, 300, 4, np.uint8),
        (257, 389, 3, np.uint16),
        (603, 611, 4, np.uint16),
    ],
)
@pytest.mark.parametrize("band_bytes", [1, 7_777, 2 * 1024 * 1024])
def test_banded_equals_the_whole_image_route(
    height: int, width: int, channels: int, dtype: type, band_bytes: int, edit: bool
) -> None:
    a, b, top = _pair(height, width, channels, dtype, seed=height + width, edit=edit)
    _assert_same(a, b, top, None, band_bytes)


@pytest.mark.parametrize("edit", [True, False])
def test_banded_with_a_valid_mask(edit: bool) -> None:
    a, b, top = _pair(1100, 700, 3, np.uint8, seed=4, edit=edit)
    valid = np.ones(a.shape[:2], dtype=bool)
    valid[100:300, 50:400] = False  # an ignored rectangle
    valid[:, -30:] = False  # an uncovered border, as after alignment
    _assert_same(a, b, top, valid, 50_000)
    _assert_same(a, b, top, np.zeros(a.shape[:2], dtype=bool), 50_000)  # nothing compared


def test_identical_images() -> None:
    a, _, top = _pair(900, 640, 3, np.uint8, seed=1, edit=False)
    got = measure_banded(a, a.copy(), data_range=top, preview_max_side=None)
    assert got.ssim.score == 1.0 and got.psnr is None and got.mse == 0.0
    assert got.nonzero_pixels == 0 and got.histogram_similarity == 1.0
    assert got.heatmap_png == render_heatmap(np.zeros(a.shape[:2], np.uint8))


def test_strips_cover_the_image_in_order() -> None:
    for height, width in [(1, 1), (10, 3), (1080, 1920), (10728, 3446), (25000, 40000)]:
        rows = heatmap_strips(height, width)
        assert rows[0] == 0 and rows[-1] == height
        assert all(r0 < r1 for r0, r1 in pairwise(rows))
        assert len(rows) - 1 <= 16


def test_banded_rejects_bad_input() -> None:
    a = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError):
        measure_banded(a, np.zeros((10, 11, 3), np.uint8), data_range=255)
    with pytest.raises(ValueError):
        measure_banded(a, a, data_range=255, band_bytes=0)


def _png(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("mode", ["pixel", "auto"])
def test_compare_gives_the_same_result_banded_or_whole(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatch in ``compare``: a page-like pair with an ignored rectangle, both routes."""
    rng = np.random.default_rng(7)
    a = np.full((1500, 1000, 3), 255, np.uint8)
    for _ in range(40):
        x, y = int(rng.integers(0, 900)), int(rng.integers(0, 1400))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(a, (x, y), (x + 80, y + 60), colour, -1)
    b = a.copy()
    cv2.putText(b, "edited", (300, 700), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 3)
    b[1200:1260, 100:300] = (10, 200, 30)
    options = CompareOptions(mode=mode, ignore=((0, 0, 200, 100),))  # type: ignore[arg-type]
    results = []
    for threshold in (1 << 62, 1):  # whole-image route, then banded
        monkeypatch.setattr(engine, "BANDED_MIN_PIXELS", threshold)
        results.append(compare(_png(a), _png(b), options))
    whole, banded = results
    assert banded.heatmap_png == whole.heatmap_png
    assert banded.preview_png == whole.preview_png
    left, right = whole.to_dict(), banded.to_dict()
    for d in (left, right):
        d.pop("timings_ms", None)
    assert right == left
    for name in ("ssim", "ssim_luminance", "ssim_contrast", "ssim_structure", "mse"):
        assert getattr(banded, name) == pytest.approx(getattr(whole, name), abs=1e-12), name
    assert whole.regions and whole.verdict == banded.verdict


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_skips_bands_of_identical_rows_exactly(channels: int) -> None:
    a, b, top = _pair(700, 300, channels, np.uint8, seed=9, edit=True)
    same = ~np.any(a != b, axis=(1, 2))
    assert same.sum() > 400  # most rows are identical, so most bands are skipped
    mask = np.ones(a.shape[:2], dtype=bool)
    mask[:50] = False
    for m in (None, mask):
        whole = ssim(a, b, data_range=top, mask=m)
        hinted = ssim(a, b, data_range=top, mask=m, identical_rows=same)
        assert (hinted.score, hinted.luminance, hinted.contrast, hinted.structure) == (
            whole.score,
            whole.luminance,
            whole.contrast,
            whole.structure,
        )
        np.testing.assert_array_equal(hinted.ssim_map, whole.ssim_map)
        lean = ssim(a, b, data_range=top, mask=m, keep_map=False, identical_rows=same)
        assert lean.score == whole.score and lean.ssim_map.shape == (0, 0)

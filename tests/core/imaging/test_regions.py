"""find_regions: edits found as boxes, fragments joined, masks, caps and threshold semantics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

from core.imaging import labelling
from core.imaging.diffmap import difference_map
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.regions import (
    MIN_REGION_AREA,
    Region,
    closing_kernel_size,
    find_regions,
)


def _iou(region: Region, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    ix = max(0, min(region.x + region.width, x + w) - max(region.x, x))
    iy = max(0, min(region.y + region.height, y + h) - max(region.y, y))
    inter = ix * iy
    return inter / (region.width * region.height + w * h - inter)


def _reference_regions(
    diff: np.ndarray, threshold: int, valid: np.ndarray, max_regions: int
) -> tuple[list[tuple[int, ...]], int]:
    """Straightforward version: whole-image closing, OpenCV's own component statistics, and a
    boolean mask per label. Returns ``(x, y, w, h, area, sum_of_levels, max_level)`` tuples."""
    changed = (diff > threshold) & valid
    side = closing_kernel_size(*diff.shape)
    closed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((side, side)))
    closed = np.where(valid, closed, 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        closed, connectivity=8, ltype=cv2.CV_32S
    )
    found: list[tuple[int, ...]] = []
    for label in range(1, count):
        levels = diff[(labels == label) & changed].astype(np.int64)
        if levels.size >= MIN_REGION_AREA:
            x, y, w, h = (int(v) for v in stats[label, :4])
            found.append((x, y, w, h, levels.size, int(levels.sum()), int(levels.max())))
    found.sort(key=lambda r: (-r[4], r[1], r[0]))
    return found[:max_regions], int(changed.sum())


def _as_tuples(regions: list[Region]) -> list[tuple[int, ...]]:
    return [
        (
            r.x,
            r.y,
            r.width,
            r.height,
            r.area,
            round(r.mean_diff * 255 * r.area),
            round(r.max_diff * 255),
        )
        for r in regions
    ]


def test_pasted_patch_on_a_photo_is_the_first_region() -> None:
    rng = np.random.default_rng(11)
    a = data.astronaut()  # 512x512 RGB
    patch = data.coffee()[100:170, 200:290]  # 70x90 of another photo
    box = (300, 80, 90, 70)  # x, y, w, h
    edited = a.copy()
    edited[80:150, 300:390] = patch
    # Noise everywhere (as from resampling or a sensor): about 1 % of the pixels exceed the
    # threshold of 10 levels, as specks scattered over the whole photo.
    noise = rng.normal(0.0, 3.5, a.shape)
    b = np.clip(edited + noise, 0, 255).astype(np.uint8)
    diff = difference_map(a, b)
    found, changed = find_regions(diff, threshold=10)
    assert found, "the edit must be found"
    first = found[0]
    assert _iou(first, box) >= 0.5
    assert first.max_diff >= 0.25  # a "red" edit for the verdict
    assert 0 < first.area <= first.width * first.height
    assert changed > first.area + 1000  # the noise is counted as changed ...
    # ... but gives no region nearly as large.
    assert all(r.area < first.area / 20 for r in found[1:])


def test_two_separate_edits_give_two_regions_largest_first() -> None:
    diff = np.zeros((300, 400), dtype=np.uint8)
    diff[200:220, 30:60] = 90  # 20x30 = 600 px
    diff[40:100, 250:330] = 150  # 60x80 = 4800 px, the larger one
    found, changed = find_regions(diff, threshold=10)
    assert changed == 600 + 4800
    assert [(r.x, r.y, r.width, r.height, r.area) for r in found] == [
        (250, 40, 80, 60, 4800),
        (30, 200, 30, 20, 600),
    ]
    assert found[0].mean_diff == pytest.approx(150 / 255)
    assert found[1].max_diff == pytest.approx(90 / 255)


@pytest.mark.parametrize("pattern", ["dots", "stripes"])
def test_a_fragmented_edit_becomes_one_region(pattern: str) -> None:
    diff = np.zeros((512, 512), dtype=np.uint8)
    assert closing_kernel_size(512, 512) == 5  # bridges gaps of up to 4 px
    patch = diff[200:280, 100:220]  # an 80x120 edit, as a view
    if pattern == "dots":
        patch[::3, ::3] = 120  # single pixels, 2 px apart: each one alone is a speck
        fragments = 27 * 40
    else:
        patch[::3, :] = 120  # rows one on, two off
        fragments = 27
    # Without the closing these fragments are separate components (OpenCV counts them).
    count, _ = cv2.connectedComponents((diff > 10).astype(np.uint8), connectivity=8)
    assert count - 1 == fragments
    found, changed = find_regions(diff, threshold=10)
    assert changed == int((diff > 10).sum())
    assert len(found) == 1
    region = found[0]
    assert region.area == changed
    assert (region.x, region.y, region.width) == (100, 200, 120 if pattern == "stripes" else 118)
    assert region.height == 79


def test_valid_mask_excludes_pixels() -> None:
    diff = np.zeros((200, 300), dtype=np.uint8)
    diff[20:60, 20:60] = 200  # entirely ignored
    diff[100:150, 100:200] = 100  # half ignored
    valid = np.ones(diff.shape, dtype=bool)
    valid[0:80, 0:80] = False
    valid[:, 150:] = False
    found, changed = find_regions(diff, threshold=10, valid=valid)
    assert changed == 50 * 50
    assert [(r.x, r.y, r.width, r.height, r.area) for r in found] == [(100, 100, 50, 50, 2500)]
    # Closing does not bridge across an ignored band: the two sides stay separate regions.
    band = np.zeros((100, 100), dtype=np.uint8)
    band[40:60, 10:90] = 80
    keep = np.ones(band.shape, dtype=bool)
    keep[:, 48:50] = False  # 2 px wide, narrower than the 3 px kernel could bridge
    found, changed = find_regions(band, threshold=10, valid=keep)
    assert changed == 20 * 78
    assert sorted((r.x, r.width) for r in found) == [(10, 38), (50, 40)]
    nothing, zero = find_regions(band, threshold=10, valid=np.zeros(band.shape, dtype=bool))
    assert nothing == [] and zero == 0


def test_max_regions_caps_the_list_but_not_the_count() -> None:
    diff = np.zeros((300, 400), dtype=np.uint8)
    sizes = {}
    for i in range(300):
        row, col = divmod(i, 20)
        y, x = 5 + 20 * row, 5 + 20 * col
        side = 3 if i % 7 == 0 else 2  # a few larger dots: 9 px, the rest 4 px
        diff[y : y + side, x : x + side] = 50
        sizes[(x, y)] = side * side
    found, changed = find_regions(diff, threshold=10)
    assert changed == sum(sizes.values())
    assert len(found) == 100
    areas = [r.area for r in found]
    assert areas == sorted(areas, reverse=True)
    larger = sum(1 for s in sizes.values() if s == 9)
    assert areas[:larger] == [9] * larger and areas[larger:] == [4] * (100 - larger)
    # Ties are listed top to bottom, then left to right.
    ties = [(r.y, r.x) for r in found[larger:]]
    assert ties == sorted(ties)
    assert len(find_regions(diff, threshold=10, max_regions=300)[0]) == 300
    none, same = find_regions(diff, threshold=10, max_regions=0)
    assert none == [] and same == changed


def test_threshold_is_strict_and_specks_are_counted_not_listed() -> None:
    diff = np.zeros((100, 100), dtype=np.uint8)
    diff[10:20, 10:20] = 10  # equal to the threshold: noise
    diff[50:60, 50:60] = 11  # one above: changed
    diff[90, 5] = 255  # a speck
    found, changed = find_regions(diff, threshold=10)
    assert changed == 100 + 1
    assert [(r.x, r.y, r.area) for r in found] == [(50, 50, 100)]
    found, changed = find_regions(diff, threshold=9)
    assert changed == 201 and len(found) == 2
    assert find_regions(diff, threshold=255) == ([], 0)
    found, changed = find_regions(diff, threshold=0)
    assert changed == 201


def test_statistics_and_to_dict() -> None:
    diff = np.zeros((64, 64), dtype=np.uint8)
    diff[10:20, 10:20] = 100
    diff[10:20, 15:20] = 200
    diff[30, 30] = 0
    (region,), changed = find_regions(diff, threshold=5)
    assert changed == 100
    assert region.mean_diff == pytest.approx(150 / 255)
    assert region.max_diff == pytest.approx(200 / 255)
    assert region.to_dict() == {
        "x": 10,
        "y": 10,
        "width": 10,
        "height": 10,
        "area": 100,
        "mean_diff": round(150 / 255, 6),
        "max_diff": round(200 / 255, 6),
        "kind": "changed",
        "ssim": None,
    }


def test_regions_touching_the_borders_and_tiny_images() -> None:
    diff = np.zeros((50, 80), dtype=np.uint8)
    diff[0:5, 0:6] = 40
    diff[45:50, 70:80] = 40
    found, _ = find_regions(diff, threshold=10)
    assert sorted((r.x, r.y, r.width, r.height) for r in found) == [(0, 0, 6, 5), (70, 45, 10, 5)]
    assert find_regions(np.full((1, 1), 9, np.uint8), threshold=0) == ([], 1)
    (whole,), count = find_regions(np.full((2, 3), 9, np.uint8), threshold=0)
    assert (whole.x, whole.y, whole.width, whole.height, count) == (0, 0, 3, 2, 6)


def test_kernel_size_scales_with_the_image() -> None:
    assert closing_kernel_size(1080, 1920) == 11
    assert closing_kernel_size(512, 512) == 5
    assert closing_kernel_size(100, 4000) == 3
    assert closing_kernel_size(10, 10) == 3
    assert all(closing_kernel_size(n, n) % 2 == 1 for n in range(1, 3000, 37))


def test_rejects_bad_options() -> None:
    diff = np.zeros((10, 10), dtype=np.uint8)
    for kwargs in ({"threshold": -1}, {"threshold": 256}, {"threshold": 5, "max_regions": -1}):
        with pytest.raises(ImagingError) as excinfo:
            find_regions(diff, **kwargs)  # type: ignore[arg-type]
        assert excinfo.value.code is ErrorCode.INVALID_OPTIONS
    with pytest.raises(ImagingError) as excinfo:
        find_regions(diff, threshold=5, valid=np.ones((10, 11), dtype=bool))
    assert excinfo.value.code is ErrorCode.SIZE_MISMATCH
    with pytest.raises(ImagingError) as excinfo:
        find_regions(diff.astype(np.uint16), threshold=5)
    assert excinfo.value.code is ErrorCode.UNSUPPORTED_FORMAT


def _random_diff(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sparse blobs of various levels on faint noise, and a valid mask with a hole."""
    rng = np.random.default_rng(seed)
    height, width = shape
    diff = rng.integers(0, 8, shape, dtype=np.uint8)
    for _ in range(int(rng.integers(0, 25))):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        h, w = int(rng.integers(1, 15)), int(rng.integers(1, 15))
        diff[y : y + h, x : x + w] = rng.integers(0, 256, (min(h, height - y), min(w, width - x)))
    speckle = rng.random(shape) < 0.01
    diff[speckle] = 200
    valid = np.ones(shape, dtype=bool)
    y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
    valid[y : y + height // 4, x : x + width // 3] = False
    return diff, valid


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 160), st.integers(1, 160)),
    threshold=st.integers(0, 60),
    use_valid=st.booleans(),
)
def test_matches_a_whole_image_reference(
    seed: int, shape: tuple[int, int], threshold: int, use_valid: bool
) -> None:
    diff, valid = _random_diff(seed, shape)
    if not use_valid:
        valid = np.ones(shape, dtype=bool)
    found, changed = find_regions(
        diff, threshold=threshold, valid=valid if use_valid else None, max_regions=30
    )
    expected, expected_changed = _reference_regions(diff, threshold, valid, 30)
    assert changed == expected_changed
    assert _as_tuples(found) == expected


def test_many_labels_take_the_direct_statistics_route(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    diff = rng.integers(0, 8, (300, 400), dtype=np.uint8)
    for y in range(2, 290, 12):
        for x in range(2, 390, 12):
            h, w = (int(v) for v in rng.integers(1, 5, 2))
            diff[y : y + h, x : x + w] = rng.integers(20, 256, (h, w))
    valid = np.ones(diff.shape, dtype=bool)
    valid[100:180, 50:300] = False
    histogram_route = find_regions(diff, threshold=15, valid=valid, max_regions=1000)
    monkeypatch.setattr(labelling, "_HISTOGRAM_MAX_LABELS", 0)
    direct_route = find_regions(diff, threshold=15, valid=valid, max_regions=1000)
    assert len(histogram_route[0]) > 200
    assert direct_route == histogram_route
    expected, expected_changed = _reference_regions(diff, 15, valid, 1000)
    assert _as_tuples(direct_route[0]) == expected
    assert direct_route[1] == expected_changed

"""Banded labelling (``core.imaging.labelling``) equals labelling the whole closed map."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging.labelling import closed_components
from core.imaging.regions import find_regions


def _whole_map(
    changed: np.ndarray, levels: np.ndarray, valid: np.ndarray | None, side: int
) -> list[tuple[int, ...]]:
    """The reference: close and label the whole map at once (OpenCV's own statistics)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    closed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, kernel)
    if valid is not None:
        closed = cv2.bitwise_and(closed, valid)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    out = []
    on = changed.astype(bool)
    for label in range(1, count):
        mine = (labels == label) & on
        x, y, w, h = (int(v) for v in stats[label, :4])
        peak = int(levels[mine].max()) if mine.any() else 0
        out.append((x, y, w, h, int(mine.sum()), int(levels[mine].sum()), peak))
    return sorted(out)


def _banded(
    changed: np.ndarray, levels: np.ndarray, valid: np.ndarray | None, side: int, band: int
) -> list[tuple[int, ...]]:
    found = closed_components(
        lambda r0, r1: np.ascontiguousarray(changed[r0:r1]),
        levels,
        None if valid is None else (lambda r0, r1: np.ascontiguousarray(valid[r0:r1])),
        side=side,
        band_pixels=band,
    )
    return sorted(
        (*(int(v) for v in box), int(a), int(s), int(p))
        for box, a, s, p in zip(found.boxes, found.areas, found.sums, found.peaks, strict=True)
    )


def _map(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Changed pixels in blobs, diagonal strokes and specks: shapes that cross band edges."""
    rng = np.random.default_rng(seed)
    changed = (rng.random((height, width)) < 0.01).astype(np.uint8)
    for _ in range(5):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        cv2.circle(changed, (x, y), int(rng.integers(2, 6)), 1, -1)
        cv2.line(changed, (x, y), (int(rng.integers(width)), int(rng.integers(height))), 1, 1)
    levels = (rng.integers(0, 256, (height, width)) * changed).astype(np.uint8)
    return changed, levels


@pytest.mark.parametrize("band_rows", [1, 2, 3, 7, 16, 1000])
@pytest.mark.parametrize("side", [1, 3, 5])
def test_bands_of_any_height_give_the_whole_map_components(band_rows: int, side: int) -> None:
    height, width = 61, 53
    changed, levels = _map(band_rows * 10 + side, height, width)
    expected = _whole_map(changed, levels, None, side)
    assert len(expected) >= 5  # several components, several crossing band edges
    assert _banded(changed, levels, None, side, band_rows * width) == expected


def test_the_valid_mask_cuts_the_closing_in_every_band() -> None:
    changed, levels = _map(7, 80, 40)
    valid = np.ones_like(changed)
    valid[:, 19:21] = 0  # a column strip the closing must not bridge
    valid[33:35] = 0  # and a row strip, across a band edge
    expected = _whole_map(changed, levels, valid, 5)
    assert _banded(changed, levels, valid, 5, 4 * 40) == expected


def test_excluded_pixels_are_as_if_not_valid() -> None:
    rng = np.random.default_rng(11)
    diff = (rng.random((90, 70)) < 0.05).astype(np.uint8) * 60
    cv2.rectangle(diff, (10, 10), (40, 50), 80, -1)
    valid = np.ones(diff.shape, bool)
    valid[:, 60:] = False
    exclude = np.zeros(diff.shape, bool)
    exclude[20:30, 5:45] = True  # cuts the rectangle in two
    expected = find_regions(diff, threshold=25, valid=valid & ~exclude)
    assert len(expected[0]) >= 2
    assert find_regions(diff, threshold=25, valid=valid, exclude=exclude) == expected
    assert find_regions(diff, threshold=25, exclude=exclude) == find_regions(
        diff, threshold=25, valid=~exclude
    )


def test_a_component_winding_through_many_bands_is_one() -> None:
    changed = np.zeros((40, 30), np.uint8)
    points = np.array([[0, 0], [29, 10], [0, 20], [29, 30], [0, 39]], np.int32)
    cv2.polylines(changed, [points], isClosed=False, color=1, thickness=1, lineType=cv2.LINE_8)
    levels = changed * 200
    found = closed_components(
        lambda r0, r1: np.ascontiguousarray(changed[r0:r1]), levels, None, side=1, band_pixels=30
    )
    assert found.boxes.tolist() == [[0, 0, 30, 40]]  # one band per row: 39 band edges
    assert found.areas.tolist() == [int(changed.sum())]
    assert found.peaks.tolist() == [200]


def test_components_come_in_the_raster_order_of_their_first_pixel() -> None:
    changed = np.zeros((20, 20), np.uint8)
    changed[15, 2] = changed[3, 10] = changed[3, 4] = changed[9, 1] = 1
    found = closed_components(
        lambda r0, r1: np.ascontiguousarray(changed[r0:r1]),
        changed * 9,
        None,
        side=1,
        band_pixels=20 * 4,
    )
    assert [tuple(box[:2]) for box in found.boxes.tolist()] == [(4, 3), (10, 3), (1, 9), (2, 15)]


def test_find_regions_is_the_same_whatever_the_band(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    diff = np.zeros((300, 200), np.uint8)
    diff[rng.random(diff.shape) < 0.01] = 40
    cv2.rectangle(diff, (20, 30), (60, 200), 90, -1)
    cv2.line(diff, (100, 0), (190, 299), 250, 2)
    valid = np.ones(diff.shape, bool)
    valid[150:152] = False
    whole = find_regions(diff, threshold=25, valid=valid)
    for rows in (1, 5, 17):
        monkeypatch.setattr("core.imaging.regions.BAND_PIXELS", rows * 200)
        monkeypatch.setattr("core.imaging.labelling.BAND_PIXELS", rows * 200)
        assert find_regions(diff, threshold=25, valid=valid) == whole

"""Thumbnail correlation (``core.imaging.misregistration``) on big images, in bands."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import misregistration
from core.imaging.regions import Region


def test_big_thumbnails_are_reduced_in_bands_to_nearly_the_same_averages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    plane = cv2.GaussianBlur(rng.random((1203, 1601)).astype(np.float32) * 255, (0, 0), 9)
    size = (64, 48)
    direct = misregistration.area_thumbnail(lambda r0, r1: plane[r0:r1], 1203, 1601, size)
    monkeypatch.setattr(misregistration, "THUMB_DIRECT_MAX_PIXELS", 0)
    monkeypatch.setattr(misregistration, "THUMB_BAND_PIXELS", 1601 * 40)
    banded = misregistration.area_thumbnail(lambda r0, r1: plane[r0:r1], 1203, 1601, size)
    assert banded.shape == direct.shape == (48, 64)
    assert float(np.abs(banded - direct).max()) < 0.5  # levels of 255
    a = np.dstack([plane.astype(np.uint8)] * 3)
    b = a.copy()
    b[100:300, 200:500] = 0
    whole = misregistration.thumbnail_correlation(a, b, None)
    monkeypatch.setattr(misregistration, "THUMB_DIRECT_MAX_PIXELS", 16_000_000)
    assert abs(misregistration.thumbnail_correlation(a, b, None) - whole) < 1e-3


def test_holes_leave_local_regions_out_as_a_full_size_mask_would() -> None:
    rng = np.random.default_rng(9)
    a = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 3)
    b = a.copy()
    b[30:60, 40:90] = 255 - b[30:60, 40:90]  # a local edit that lowers the correlation
    hole = Region(x=40, y=30, width=50, height=30, area=1500, mean_diff=0.5, max_diff=1.0)
    keep = np.ones(a.shape[:2], bool)
    keep[30:60, 40:90] = False
    with_mask = misregistration.thumbnail_correlation(a, b, keep)
    assert misregistration.thumbnail_correlation(a, b, None, holes=[hole]) == with_mask
    assert with_mask > misregistration.thumbnail_correlation(a, b, None) + 0.05

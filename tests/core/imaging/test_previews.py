"""Previews on A's grid: A as decoded, B unwarped or warped into A's frame by the homography."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import CompareOptions, ImagingError, compare
from core.imaging.previews import render_previews, to_png
from tests.support.images import decode_rgb, photo, png


def _rgba(data: bytes) -> np.ndarray:
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA)


def test_unwarped_previews_are_the_decoded_pixels() -> None:
    a = photo(64, 48, seed=1)
    b = photo(64, 48, seed=2)
    previews = render_previews(png(a), png(b), None)
    assert np.array_equal(decode_rgb(previews.a_png), a)
    assert np.array_equal(decode_rgb(previews.b_png), b)


def test_unwarped_b_of_another_size_is_refused() -> None:
    with pytest.raises(ImagingError) as info:
        render_previews(png(photo(64, 48)), png(photo(40, 30)), None)
    assert info.value.code.value == "size_mismatch"


def test_a_shifted_b_is_warped_back_onto_a_with_transparency_outside() -> None:
    a = photo(120, 90, seed=3)
    b = np.zeros_like(a)
    b[:, 10:] = a[:, :-10]  # B is A moved 10 px right: B's point (x + 10) is A's x
    homography = [[1.0, 0.0, -10.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    warped = _rgba(render_previews(png(a), png(b), homography).b_png)
    assert warped.shape == (90, 120, 4)
    inside = warped[4:-4, 5:100]  # the engine also drops the interpolation fringe at the edges
    assert np.array_equal(inside[..., :3], a[4:-4, 5:100])  # an integer shift resamples exactly
    assert (inside[..., 3] == 255).all()
    assert (warped[:, 115:, 3] == 0).all()  # A's right edge has no B behind it


def test_the_engines_own_alignment_maps_b_onto_a() -> None:
    a = photo(320, 240, seed=4)
    matrix = cv2.getRotationMatrix2D((160, 120), 4.0, 1.05)
    b = cv2.warpAffine(a, matrix, (320, 240), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    result = compare(png(a), png(b), CompareOptions(mode="align"))
    assert result.alignment.applied
    warped = _rgba(render_previews(png(a), png(b), result.alignment.homography).b_png)
    valid = warped[..., 3] == 255
    assert valid.mean() > 0.8
    error = np.abs(warped[..., :3].astype(int) - a.astype(int))[valid].mean()
    assert error < 6, error  # B lands on A (a misregistration would differ by tens of levels)


def test_sixteen_bit_pixels_become_eight_bit_png() -> None:
    pixels = np.full((4, 5, 3), 65535, dtype=np.uint16)
    pixels[0, 0] = (257 * 10, 0, 32896)
    decoded = decode_rgb(to_png(pixels))
    assert decoded.dtype == np.uint8 and decoded[0, 0].tolist() == [10, 0, 128]
    assert (decoded[1:] == 255).all()

"""The re-rendering test (core.imaging.rerendering): differences that a 2 px blur dissolves, on
pairs dominated by rendering noise, are glyphs rendered again; a changed word is not.

The engine-level cases use real pages rendered twice by Debian's Chromium (the verdict corpus's
``web1`` source: another glyph positioning, ``text-rendering: geometricPrecision``, device scale
2 reduced to 1x), the category this test exists for.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.verdict_corpus import Pair, build_corpus
from core.imaging import CompareOptions, compare
from core.imaging.rerendering import (
    BAND_ROWS,
    RERENDER_MIN_NOISE,
    dissolves_when_blurred,
    rendering_dominates,
)


def _page(height: int = 64, width: int = 96) -> np.ndarray:
    page = np.full((height, width, 3), 255, np.uint8)
    page[20:24, 10:80] = 0  # a dark bar
    return page


def test_identical_arrays_dissolve() -> None:
    page = _page()
    assert dissolves_when_blurred(page, page.copy(), 0)


def test_a_one_pixel_rim_dissolves_a_patch_does_not() -> None:
    a = _page()
    rim = a.copy()
    rim[24, 10:80] = 180  # the bar's lower edge a third of a pixel lower: rasterisation
    assert dissolves_when_blurred(a, rim, 25)
    patch = a.copy()
    patch[40:50, 40:50] = 0  # a 10 px square: content
    assert not dissolves_when_blurred(a, patch, 25)


def test_the_box_limits_where_it_looks_and_takes_context_around_it() -> None:
    a = _page()
    b = a.copy()
    b[40:50, 40:50] = 0
    assert dissolves_when_blurred(a, b, 25, box=(0, 0, 96, 30))  # the patch is outside
    assert not dissolves_when_blurred(a, b, 25, box=(38, 38, 14, 14))
    assert dissolves_when_blurred(a, b, 25, box=(200, 200, 5, 5))  # off the image: nothing


def test_every_band_is_looked_at() -> None:
    a = np.full((BAND_ROWS * 2 + 40, 32, 3), 200, np.uint8)
    b = a.copy()
    b[BAND_ROWS * 2 + 10 : BAND_ROWS * 2 + 20, 10:20] = 0  # in the last band only
    assert not dissolves_when_blurred(a, b, 25)


def test_sixteen_bit_images_use_their_own_units() -> None:
    a = _page().astype(np.uint16) * 257
    b = a.copy()
    b[40:50, 40:50] = 0
    assert not dissolves_when_blurred(a, b, 25 * 257)
    assert dissolves_when_blurred(a, b, 65535)


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        dissolves_when_blurred(_page(), _page(65, 96), 25)


def test_rendering_dominates_only_with_enough_anti_aliased_pixels() -> None:
    assert rendering_dominates(RERENDER_MIN_NOISE, RERENDER_MIN_NOISE)
    assert not rendering_dominates(RERENDER_MIN_NOISE / 2, 0.0)  # too little noise
    assert not rendering_dominates(0.02, 0.03)  # more changed than anti-aliased


@pytest.fixture(scope="module")
def web1() -> dict[str, list[Pair]]:
    """The web1 page and its variants, rendered by Chromium (tens of seconds, once)."""
    by_category: dict[str, list[Pair]] = {}
    for pair in build_corpus(("web1",)):
        by_category.setdefault(pair.category, []).append(pair)
    return by_category


def _variant(pairs: list[Pair], name: str) -> Pair:
    return next(p for p in pairs if p.name.endswith("/" + name))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["no_subpixel_positioning", "geometric", "scale2"])
def test_a_page_rendered_again_is_identical(web1: dict[str, list[Pair]], variant: str) -> None:
    pair = _variant(web1["web_antialias"], variant)
    result = compare(pair.a, pair.b, CompareOptions())
    assert result.verdict == "identical", result.summary
    assert result.regions == [] and result.ssim < 0.99  # not identical by SSIM alone
    assert "rendered again" in result.summary
    # Without the rendering-noise tolerance the same pair is not identical.
    strict = compare(pair.a, pair.b, CompareOptions(antialiasing=False))
    assert strict.verdict != "identical"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["no_subpixel_positioning", "geometric", "scale2"])
def test_in_pixel_mode_a_page_rendered_again_is_not_misaligned(
    web1: dict[str, list[Pair]], variant: str
) -> None:
    """Its glyphs fit a sub-pixel transform that raises SSIM once applied, but B so warped is
    still only the same page rendered again: pixel mode says so, with the transform found."""
    pair = _variant(web1["web_antialias"], variant)
    result = compare(pair.a, pair.b, CompareOptions(mode="pixel"))
    assert result.verdict == "identical", result.summary
    assert "rendered again" in result.summary
    assert result.alignment.applied is False and result.alignment.homography is not None
    # A real misregistration of the same page (shifted 2 px) is still misaligned.
    a = np.asarray(Image.open(io.BytesIO(pair.a)).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(np.roll(a, 2, axis=1)).save(buf, format="PNG")
    shifted = compare(pair.a, buf.getvalue(), CompareOptions(mode="pixel"))
    assert shifted.verdict == "misaligned", shifted.summary


@pytest.mark.slow
def test_a_changed_word_on_a_rendered_page_is_still_found(web1: dict[str, list[Pair]]) -> None:
    for pair in web1["web_word"]:
        result = compare(pair.a, pair.b, CompareOptions())
        assert result.verdict == "localized_edit", (pair.name, result.summary)
        (x, y, w, h) = pair.boxes[0]
        a = np.asarray(Image.open(io.BytesIO(pair.a)).convert("RGB"))
        assert 0 <= x < a.shape[1] and 0 <= y < a.shape[0]
        found = [(r.x, r.y, r.width, r.height) for r in result.regions]
        assert any(_iou(box, (x, y, w, h)) > 0 for box in found), (pair.name, found)
        if not pair.name.endswith("_offset"):
            # the word's box itself (word0 reflows two lines: one region, regions.stacked)
            assert any(_iou(box, (x, y, w, h)) >= 0.5 for box in found), (pair.name, found)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)

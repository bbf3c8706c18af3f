"""The heatmap legend SVG: its scale is the palette's breakpoints, the tolerance is marked where
it belongs, every colour is said in words, and it loads nothing; and the same legend drawn under
a heatmap PNG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from core.imaging import CompareOptions, compare
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.heatmap import (
    ANTIALIAS_MAGENTA,
    HEATMAP_BREAKPOINTS,
    NEUTRAL_GREY,
    heatmap_palette,
)
from core.imaging.legend import (
    LEGEND_SPAN,
    STRIP_HEIGHT,
    STRIP_MIN_WIDTH,
    render_legend_svg,
    with_legend,
)
from tests.support.images import decode_rgb, photo, png

RED = (255, 0, 0)

NS = {"svg": "http://www.w3.org/2000/svg"}


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def _bar(root: ET.Element) -> ET.Element:
    (bar,) = [r for r in root.iterfind("svg:rect", NS) if r.get("fill") == "url(#scale)"]
    return bar


def test_the_scale_is_the_palette_breakpoints() -> None:
    root = _parse(render_legend_svg(0.1))
    stops = root.findall(".//svg:linearGradient[@id='scale']/svg:stop", NS)
    assert [(float(s.get("offset", "")), s.get("stop-color")) for s in stops] == [
        (pytest.approx(d / LEGEND_SPAN, abs=1e-4), _hex(c)) for d, c in HEATMAP_BREAKPOINTS
    ]


@pytest.mark.parametrize("tolerance", [0.0, 0.05, 0.1, 0.25, 0.4])
def test_the_tolerance_mark_sits_at_its_value(tolerance: float) -> None:
    root = _parse(render_legend_svg(tolerance))
    bar = _bar(root)
    x0, width = float(bar.get("x", "")), float(bar.get("width", ""))
    (mark,) = [r for r in root.iterfind("svg:rect", NS) if r.get("fill") == "#000000"]
    centre = float(mark.get("x", "")) + float(mark.get("width", "")) / 2
    assert centre == pytest.approx(x0 + tolerance / LEGEND_SPAN * width, abs=0.11)
    label = f"{tolerance * 255:.1f} levels"
    assert any(label in text and text.startswith("tolerance ") for text in _texts(root))
    title = root.find("svg:title", NS)
    assert title is not None and f"({tolerance * 255:.1f} of 255 levels)" in (title.text or "")


def test_a_tolerance_beyond_the_bar_is_pinned_to_its_end_and_said() -> None:
    root = _parse(render_legend_svg(0.6))
    bar = _bar(root)
    end = float(bar.get("x", "")) + float(bar.get("width", ""))
    (mark,) = [r for r in root.iterfind("svg:rect", NS) if r.get("fill") == "#000000"]
    assert float(mark.get("x", "")) + 1 == pytest.approx(end)
    assert any("60 %" in t and "off the bar" in t for t in _texts(root))


def test_every_colour_is_also_in_words() -> None:
    root = _parse(render_legend_svg(0.1))
    swatches = {r.get("fill") for r in root.iterfind("svg:rect", NS) if r.get("width") == "10"}
    assert {_hex(ANTIALIAS_MAGENTA), _hex(NEUTRAL_GREY), "#0000ff", "#ff0000"} <= swatches
    words = " ".join(_texts(root))
    for phrase in ("identical", "noise", "content", "anti-aliasing", "not compared"):
        assert phrase in words
    off = " ".join(_texts(_parse(render_legend_svg(0.1, antialiasing=False))))
    assert "detection was off" in off and "not counted as changed" not in off


def test_loads_nothing_and_runs_nothing() -> None:
    svg = render_legend_svg(0.1)
    root = _parse(svg)
    assert root.find(".//svg:script", NS) is None
    for element in root.iter():
        for name, value in element.attrib.items():
            assert "href" not in name and not name.startswith("on"), name
            assert "url(" not in value or value == "url(#scale)"
    assert render_legend_svg(0.1) == svg  # deterministic


@pytest.mark.parametrize("tolerance", [-0.01, 1.0, 3.0])
def test_refuses_a_tolerance_outside_its_range(tolerance: float) -> None:
    with pytest.raises(ImagingError) as info:
        render_legend_svg(tolerance)
    assert info.value.code is ErrorCode.INVALID_OPTIONS


# -- the legend drawn under a heatmap preview --------------------------------------------------


def _heatmap_png(width: int, height: int) -> bytes:
    a = photo(width, height, seed=21)
    b = a.copy()
    b[10:30, 10:40] = 255 - b[10:30, 10:40]
    return compare(png(a), png(b), CompareOptions(mode="pixel", preview_max_side=None)).heatmap_png


def test_the_legend_is_drawn_under_the_heatmap_which_keeps_its_pixels() -> None:
    heatmap = _heatmap_png(640, 200)
    out = decode_rgb(with_legend(heatmap, 0.1))
    original = decode_rgb(heatmap)
    assert out.shape == (200 + STRIP_HEIGHT, 640, 3)
    assert np.array_equal(out[:200], original)
    strip = out[200:]
    # The bar holds the heatmap's own colours: blue at its left end, full red at its right.
    row = strip[12]
    assert tuple(row[10]) == tuple(heatmap_palette()[0])
    assert tuple(row[-12]) == RED
    # The tolerance mark is black, where 10 % lies on the 0..LEGEND_SPAN bar (8 px margins).
    mark = 8 + round(0.1 / LEGEND_SPAN * (640 - 16 - 1))
    assert tuple(strip[12, mark]) == (0, 0, 0)
    assert not (strip[12, mark - 20 : mark - 5] == 0).all(axis=1).any()  # black only there
    # The magenta and grey swatches and some text are in the bottom line.
    bottom = strip[40:]
    assert (bottom == ANTIALIAS_MAGENTA).all(axis=2).sum() > 30
    assert (bottom == NEUTRAL_GREY).all(axis=2).sum() > 30
    assert (bottom < 100).all(axis=2).sum() > 200  # dark ink of the words


def test_a_narrow_heatmap_is_widened_with_white_for_the_words() -> None:
    heatmap = _heatmap_png(120, 90)
    out = decode_rgb(with_legend(heatmap, 0.02, antialiasing=False))
    assert out.shape == (90 + STRIP_HEIGHT, STRIP_MIN_WIDTH, 3)
    assert np.array_equal(out[:90, :120], decode_rgb(heatmap))
    assert (out[:90, 120:] == 255).all()


def test_the_legend_refuses_a_bad_tolerance_a_huge_or_unreadable_image() -> None:
    heatmap = _heatmap_png(64, 48)
    with pytest.raises(ImagingError) as bad:
        with_legend(heatmap, 1.0)
    assert bad.value.code is ErrorCode.INVALID_OPTIONS
    with pytest.raises(ImagingError) as huge:
        with_legend(heatmap, 0.1, max_pixels=64 * 48 - 1)
    assert huge.value.code is ErrorCode.IMAGE_TOO_LARGE
    with pytest.raises(ImagingError) as garbage:
        with_legend(b"\x89PNG\r\n\x1a\nnot really", 0.1)
    assert garbage.value.code in (ErrorCode.CORRUPT_IMAGE, ErrorCode.UNSUPPORTED_FORMAT)

"""The heatmap legend SVG: its scale is the palette's breakpoints, the tolerance is marked where
it belongs, every colour is said in words, and it loads nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.heatmap import ANTIALIAS_MAGENTA, HEATMAP_BREAKPOINTS, NEUTRAL_GREY
from core.imaging.legend import LEGEND_SPAN, render_legend_svg

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

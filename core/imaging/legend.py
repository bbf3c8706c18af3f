"""The heatmap's legend as a small SVG: the colour scale with the tolerance marked, and the two
colours outside it (anti-aliasing, not compared); and the same legend drawn as a strip under a
heatmap preview (:func:`with_legend`), for a PNG that explains itself wherever it is shown.

The scale is drawn from ``heatmap.HEATMAP_BREAKPOINTS`` (the same numbers that build the PNG
palette), over differences of 0 to ``LEGEND_SPAN`` of the data range: everything above the last
breakpoint (30 %) is full red, so the bar ends soon after it. The tolerance is a black line with
a white edge (visible on every colour of the bar), labelled with its percentage and 8-bit levels.
Every colour is also said in words, so the legend reads without colour vision. The SVG has no
script, no external reference and no font file: it can be shown in an ``<img>`` under a strict
Content-Security-Policy.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import cv2
import numpy as np

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.header import read_header
from core.imaging.heatmap import (
    ANTIALIAS_MAGENTA,
    HEATMAP_BREAKPOINTS,
    NEUTRAL_GREY,
    heatmap_palette,
)

__all__ = [
    "LEGEND_MAX_PIXELS",
    "LEGEND_SPAN",
    "STRIP_HEIGHT",
    "STRIP_MIN_WIDTH",
    "render_legend_svg",
    "with_legend",
]

#: Largest difference (fraction of the data range) the colour bar shows; red from 0.30 on.
LEGEND_SPAN = 0.4

_WIDTH = 520
_BAR_X, _BAR_Y, _BAR_W, _BAR_H = 16, 46, 488, 22
_KEY_Y = _BAR_Y + _BAR_H + 30  # top of the key in words
_TEXT = "#1a1a1a"  # on white: contrast 17:1


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _x(d: float) -> float:
    return _BAR_X + min(d, LEGEND_SPAN) / LEGEND_SPAN * _BAR_W


def _percent(d: float) -> str:
    text = f"{d * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text} %"


def render_legend_svg(tolerance: float, *, antialiasing: bool = True) -> str:
    """The legend of a heatmap drawn with ``tolerance``, as an SVG document (UTF-8 text).

    Parameters
    ----------
    tolerance
        The comparison's noise tolerance, a fraction of the data range in [0, 1); marked on
        the bar (at its right end, labelled with the true value, when above ``LEGEND_SPAN``).
    antialiasing
        Whether the comparison detected anti-aliasing: when False the magenta entry says that
        no pixel was set apart as anti-aliasing.

    Returns
    -------
    str
        A 520 px wide SVG with a title, the colour bar, tick labels and a key in words.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ImagingError(ErrorCode.INVALID_OPTIONS, "tolerance must be in [0, 1)")
    levels = tolerance * 255.0
    stops = "".join(
        f'<stop offset="{min(d, LEGEND_SPAN) / LEGEND_SPAN:.4f}" stop-color="{_hex(c)}"/>'
        for d, c in HEATMAP_BREAKPOINTS
    )
    ticks = []
    for d, _ in HEATMAP_BREAKPOINTS:
        x = _x(d)
        anchor = "start" if d == 0.0 else "middle"
        ticks.append(
            f'<line x1="{x:.1f}" y1="{_BAR_Y + _BAR_H}" x2="{x:.1f}" y2="{_BAR_Y + _BAR_H + 5}" '
            f'stroke="{_TEXT}"/>'
            f'<text x="{x:.1f}" y="{_BAR_Y + _BAR_H + 18}" text-anchor="{anchor}">'
            f"{_percent(d)} ({round(d * 255)})</text>"
        )
    mark = _x(tolerance)
    above = ", off the bar" if tolerance > LEGEND_SPAN else ""
    # The label centred on the mark, kept inside the picture near either end.
    label_x, label_anchor = mark, "middle"
    if mark < _BAR_X + 90:
        label_x, label_anchor = max(mark - 8, _BAR_X), "start"
    elif mark > _BAR_X + _BAR_W - 90:
        label_x, label_anchor = min(mark + 8, _WIDTH - 4), "end"
    aa_words = (
        "magenta: anti-aliasing or resampling at edges, rendering noise, not counted as changed"
        if antialiasing
        else "magenta: not used (anti-aliasing detection was off)"
    )
    key = [
        ("#0000ff", "blue: identical (0 levels)"),
        (
            _hex(HEATMAP_BREAKPOINTS[1][1]),
            "blue to green: noise such as re-compression, up to 5 %",
        ),
        (
            _hex(HEATMAP_BREAKPOINTS[2][1]),
            "green to yellow: soft change (filter, colour shift), 5 to 15 %",
        ),
        (_hex(HEATMAP_BREAKPOINTS[3][1]), "yellow to red: clear change; red from 30 %: content"),
        (_hex(ANTIALIAS_MAGENTA), aa_words),
        (_hex(NEUTRAL_GREY), "grey: not compared (outside the overlap, or ignored)"),
    ]
    rows = "".join(
        f'<rect x="16" y="{_KEY_Y + i * 14}" width="10" height="10" fill="{colour}" '
        f'stroke="{_TEXT}" stroke-width="0.5"/>'
        f'<text x="32" y="{_KEY_Y + 9 + i * 14}">{escape(words)}</text>'
        for i, (colour, words) in enumerate(key)
    )
    title = (
        f"Heatmap legend: largest channel difference of A and B; tolerance {_percent(tolerance)}"
        f" ({levels:.1f} of 255 levels)"
    )
    height = _KEY_Y + len(key) * 14 + 4
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-labelledby="t" '
        f'font-family="sans-serif" font-size="11" fill="{_TEXT}">'
        f'<title id="t">{escape(title)}</title>'
        f'<rect width="{_WIDTH}" height="{height}" fill="#ffffff"/>'
        f'<text x="16" y="18" font-size="12" font-weight="bold">'
        f"Heatmap legend (largest channel difference)</text>"
        f'<defs><linearGradient id="scale" x1="0" x2="1" y1="0" y2="0">{stops}</linearGradient>'
        f"</defs>"
        f'<rect x="{_BAR_X}" y="{_BAR_Y}" width="{_BAR_W}" height="{_BAR_H}" fill="url(#scale)" '
        f'stroke="{_TEXT}" stroke-width="0.5"/>'
        f"{''.join(ticks)}"
        f'<rect x="{mark - 2:.1f}" y="{_BAR_Y - 4}" width="4" height="{_BAR_H + 8}" '
        f'fill="#ffffff"/>'
        f'<rect x="{mark - 1:.1f}" y="{_BAR_Y - 4}" width="2" height="{_BAR_H + 8}" '
        f'fill="#000000"/>'
        f'<text x="{label_x:.1f}" y="{_BAR_Y - 7}" text-anchor="{label_anchor}">'
        f"tolerance {_percent(tolerance)} ({levels:.1f} levels){above}</text>"
        f"{rows}</svg>"
    )


#: Largest image (pixels) :func:`with_legend` draws on (decoded whole, in RGB): 4096 x 4096; a
#: bigger heatmap has a downscaled preview for that.
LEGEND_MAX_PIXELS = 4096 * 4096
#: Height of the legend strip drawn under a preview, in pixels.
STRIP_HEIGHT = 58
#: A preview narrower than this is widened with white so that the strip's words fit.
STRIP_MIN_WIDTH = 420
_MARGIN = 8
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (26, 26, 26)


def _label(canvas: np.ndarray, text: str, x: int, y: int) -> int:
    """Write ``text`` (ASCII) with its baseline at ``y``; return the x after it."""
    cv2.putText(canvas, text, (x, y), _FONT, 0.38, _INK, 1, cv2.LINE_AA)
    (width, _), _ = cv2.getTextSize(text, _FONT, 0.38, 1)
    return x + width


def _strip(width: int, tolerance: float, antialiasing: bool) -> np.ndarray:
    """The legend strip, ``STRIP_HEIGHT x width x 3`` RGB: the colour bar over 0 to
    ``LEGEND_SPAN`` with the tolerance marked and its ticks labelled, then the two other
    colours and the tolerance in words."""
    strip = np.full((STRIP_HEIGHT, width, 3), 255, np.uint8)
    left, right = _MARGIN, width - _MARGIN
    bar_top, bar_bottom = 6, 20
    span = right - left
    palette = heatmap_palette()
    # Each column takes the palette colour of its difference level: the heatmap's own colours.
    levels = np.minimum(np.arange(span) / max(span - 1, 1) * LEGEND_SPAN * 255.0, 253)
    strip[bar_top:bar_bottom, left:right] = palette[np.rint(levels).astype(np.intp)][None, :, :]
    cv2.rectangle(strip, (left, bar_top), (right - 1, bar_bottom - 1), _INK, 1)

    def column(d: float) -> int:
        return left + round(min(d, LEGEND_SPAN) / LEGEND_SPAN * (span - 1))

    for d, _ in HEATMAP_BREAKPOINTS:
        x = column(d)
        cv2.line(strip, (x, bar_bottom), (x, bar_bottom + 3), _INK, 1)
        text = _percent(d).replace(" ", "")
        (text_width, _), _ = cv2.getTextSize(text, _FONT, 0.38, 1)
        _label(strip, text, min(max(x - text_width // 2, left), right - text_width), 34)
    mark = column(tolerance)
    cv2.rectangle(strip, (mark - 2, bar_top - 3), (mark + 2, bar_bottom + 2), (255, 255, 255), -1)
    cv2.rectangle(strip, (mark - 1, bar_top - 3), (mark + 1, bar_bottom + 2), (0, 0, 0), -1)
    y, size = 50, 9
    x = _label(strip, f"tolerance {_percent(tolerance).replace(' ', '')}", left, y)
    for colour, words in (
        (ANTIALIAS_MAGENTA, "anti-aliasing" if antialiasing else "anti-aliasing: off"),
        (NEUTRAL_GREY, "not compared"),
    ):
        x += 14
        cv2.rectangle(strip, (x, y - size), (x + size, y), colour, -1)
        cv2.rectangle(strip, (x, y - size), (x + size, y), _INK, 1)
        x = _label(strip, words, x + size + 5, y)
    return strip


def with_legend(
    png: bytes,
    tolerance: float,
    *,
    antialiasing: bool = True,
    max_pixels: int = LEGEND_MAX_PIXELS,
) -> bytes:
    """The heatmap (or its preview) PNG with the legend drawn under it, as an RGB PNG.

    The strip (:data:`STRIP_HEIGHT` px) holds the colour bar of the heatmap's own palette with
    ``tolerance`` marked, the percentages of its breakpoints, and the magenta (anti-aliasing)
    and grey (not compared) swatches with their words. An image narrower than
    :data:`STRIP_MIN_WIDTH` is widened with white on the right; the image's pixels are kept.

    Parameters
    ----------
    png
        A PNG (palette or RGB), such as ``CompareResult.heatmap_png`` or a stored preview.
    tolerance
        The comparison's tolerance, a fraction of the data range in [0, 1).
    antialiasing
        Whether anti-aliasing was detected (its swatch says "off" otherwise).
    max_pixels
        Largest ``width * height`` accepted (checked from the header, before decoding).

    Returns
    -------
    bytes
        The PNG, ``max(width, STRIP_MIN_WIDTH)`` wide and ``height + STRIP_HEIGHT`` tall.

    Raises
    ------
    ImagingError
        ``invalid_options`` (tolerance), ``image_too_large`` (over ``max_pixels``),
        ``corrupt_image`` or ``unsupported_format`` (not a readable image).
    """
    if not 0.0 <= tolerance < 1.0:
        raise ImagingError(ErrorCode.INVALID_OPTIONS, "tolerance must be in [0, 1)")
    read_header(png, max_pixels=max_pixels)
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImagingError(ErrorCode.CORRUPT_IMAGE, "the heatmap is not a readable PNG")
    image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    out_width = max(width, STRIP_MIN_WIDTH)
    canvas = np.full((height + STRIP_HEIGHT, out_width, 3), 255, np.uint8)
    canvas[:height, :width] = image
    canvas[height:] = _strip(out_width, tolerance, antialiasing)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise ImagingError(ErrorCode.CORRUPT_IMAGE, "the legend could not be encoded")
    return bytes(encoded.tobytes())

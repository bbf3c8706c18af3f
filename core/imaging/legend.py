"""The heatmap's legend as a small SVG: the colour scale with the tolerance marked, and the two
colours outside it (anti-aliasing, not compared).

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

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.heatmap import ANTIALIAS_MAGENTA, HEATMAP_BREAKPOINTS, NEUTRAL_GREY

__all__ = ["LEGEND_SPAN", "render_legend_svg"]

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

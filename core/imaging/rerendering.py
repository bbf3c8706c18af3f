"""A page rendered again: differences that dissolve at the scale of a glyph's rasterisation.

Text rendered twice by a browser (another glyph positioning, ``text-rendering``, a transform of a
fraction of a pixel, another device scale reduced to 1x) differs in the shape of every glyph's
rim and thin strokes, by up to a pixel or two; the 3x3 anti-aliasing test
(``core.imaging.noise``) explains most of those pixels but not all, and what is left can look
like a few small edits. A changed word does not have that property: its letters differ at the
scale of a letter, several pixels.

The test is applied only where rendering noise dominates the pair (:func:`rendering_dominates`:
at least 1 % of the compared pixels anti-aliased, and more of them than pixels still changed),
so a faint edit on a photograph or on a page otherwise pixel-identical is never dissolved.
There, both images are blurred with a Gaussian of ``RERENDER_SIGMA_PX`` (2 px), which removes
what lies below about two pixels, and the difference is compared with the comparison's
tolerance:

- a region in which no blurred pixel differs by more than the tolerance is rendering, not
  content, and is dropped;
- a pair whose regions were all dropped so, and whose blurred images differ nowhere by more
  than ``RERENDER_PAIR_SLACK`` tolerances, is the same page rendered again (verdict
  ``identical``). A pair with no region to begin with is left to the rendering floor
  (``core.imaging.floors``): JPEG noise on a photograph can pass the anti-aliasing test as
  often as glyph rims do, and only the regions' own evidence tells the two apart.

Measured on the verdict corpus (tolerance 0.1, 25 levels): the regions left on pages rendered
again reach at most 23 levels after the blur, a changed word on a rendered or drawn page at
least 33.

Limit: on such a pair, with anti-aliasing tolerance on, a change that the blur dissolves below
the tolerance (a hairline fainter than about half the image's contrast) counts as rendering;
turn ``antialiasing`` off to count every pixel.

Bounded memory: the images are blurred in row bands of ``BAND_ROWS`` rows (plus the kernel's
reach), ``uint8``/``uint16`` like their input.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from core.imaging.regions import Region

__all__ = [
    "BAND_ROWS",
    "RERENDER_BOX_PAD",
    "RERENDER_MIN_DOMINANCE",
    "RERENDER_MIN_NOISE",
    "RERENDER_PAIR_SLACK",
    "RERENDER_SIGMA_PX",
    "dissolves_when_blurred",
    "region_dissolves",
    "rendering_dominates",
]

#: Standard deviation of the Gaussian blur, in px: the scale of glyph rasterisation differences.
RERENDER_SIGMA_PX = 2.0
#: The test applies only to pairs whose changed pixels are mostly rendering noise: at least this
#: share of the compared pixels anti-aliased ...
RERENDER_MIN_NOISE = 0.01
#: ... and at least this many times the pixels still changed (a changed word on a page that is
#: otherwise pixel-identical has far fewer anti-aliased pixels than changed ones).
RERENDER_MIN_DOMINANCE = 1.0
#: A whole pair is rendered again when no region is left and no blurred pixel differs by more
#: than this many tolerances (a region is judged at one tolerance; the whole page holds more
#: glyph rims, whose blurred differences reach further into the tail).
RERENDER_PAIR_SLACK = 1.5
#: Pixels added around a region's box (a glyph's rim beyond the box).
RERENDER_BOX_PAD = 4
#: Rows per band of the blur (bounded temporaries whatever the image's size).
BAND_ROWS = 256
#: Reach of the Gaussian kernel, in px (3 sigma, as OpenCV sizes it for 8-bit images).
_REACH = math.ceil(3 * RERENDER_SIGMA_PX)


def rendering_dominates(antialiased_ratio: float, changed_ratio: float) -> bool:
    """Whether a pair's differences are mostly rendering noise (``RERENDER_MIN_NOISE``,
    ``RERENDER_MIN_DOMINANCE``): the pairs the blur test is for. Ratios of the compared pixels,
    0..1."""
    return (
        antialiased_ratio >= RERENDER_MIN_NOISE
        and antialiased_ratio >= RERENDER_MIN_DOMINANCE * changed_ratio
    )


def dissolves_when_blurred(
    pa: np.ndarray,
    pb: np.ndarray,
    level: float,
    box: tuple[int, int, int, int] | None = None,
) -> bool:
    """True when no pixel of the two images blurred by ``RERENDER_SIGMA_PX`` differs by more
    than ``level`` in any channel (inside ``box`` only, if given).

    Parameters
    ----------
    pa, pb
        ``HxWxC`` arrays of one shape and dtype (``uint8`` or ``uint16``).
    level
        The tolerance in the arrays' own units (0..255 for ``uint8``, 0..65535 for ``uint16``).
    box
        ``(x, y, width, height)`` in px; None: the whole image. The blur takes its context from
        around the box (the box's own edge is not a border).

    Returns
    -------
    bool
        False as soon as one band holds a blurred difference above ``level``.
    """
    if pa.shape != pb.shape:
        raise ValueError(f"shapes differ: {pa.shape} and {pb.shape}")
    height, width = pa.shape[:2]
    x, y, w, h = box if box is not None else (0, 0, width, height)
    x0, x1 = max(0, x), min(width, x + w)
    y0, y1 = max(0, y), min(height, y + h)
    if x0 >= x1 or y0 >= y1:
        return True
    cx0, cx1 = max(0, x0 - _REACH), min(width, x1 + _REACH)
    for top in range(y0, y1, BAND_ROWS):
        bottom = min(y1, top + BAND_ROWS)
        ct0, ct1 = max(0, top - _REACH), min(height, bottom + _REACH)
        blurred = [
            cv2.GaussianBlur(
                np.ascontiguousarray(p[ct0:ct1, cx0:cx1]), (0, 0), RERENDER_SIGMA_PX
            ).reshape(ct1 - ct0, cx1 - cx0, -1)
            for p in (pa, pb)
        ]
        inner = (slice(top - ct0, bottom - ct0), slice(x0 - cx0, x1 - cx0))
        diff = cv2.absdiff(blurred[0][inner], blurred[1][inner])
        if float(diff.max()) > level:
            return False
    return True


def region_dissolves(pa: np.ndarray, pb: np.ndarray, region: Region, level: float) -> bool:
    """:func:`dissolves_when_blurred` on ``region``'s box widened by ``RERENDER_BOX_PAD`` px:
    the region is glyphs rendered again, not an edit."""
    pad = RERENDER_BOX_PAD
    box = (region.x - pad, region.y - pad, region.width + 2 * pad, region.height + 2 * pad)
    return dissolves_when_blurred(pa, pb, level, box=box)

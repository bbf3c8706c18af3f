"""Rendering noise: changed pixels that anti-aliasing, font smoothing or resampling explain.

Anti-aliasing detection
-----------------------
pixelmatch and odiff do not count a differing pixel when its neighbourhood shows it is an
anti-aliased edge pixel: its value lies between its neighbours' darkest and brightest. This
module applies the same idea in both directions and per channel, which also covers font
smoothing, sub-pixel glyph placement and the interpolation of an aligned (warped) copy:

A changed pixel ``p`` (difference above the tolerance) is *anti-aliased* when

- B's value at ``p`` lies within the range (min .. max per channel) of A's 3x3 neighbourhood
  of ``p``, widened by the tolerance plus ``CONTRAST_SLACK`` of that range, **and**
- A's value at ``p`` lies within the range of B's 3x3 neighbourhood, widened likewise, **and**
- in both A and B, ``p`` is an in-between tone of its own neighbourhood (as pixelmatch requires
  an anti-aliased pixel to lie on an edge, neither its neighbourhood's darkest nor brightest).

Without the last condition, a word replaced by another on a UI page would mostly vanish: text
is a dense mix of ink and background, so both neighbourhoods hold both colours. Where ink turned
to background (or back) the pixel is an extreme tone in one of the images.

Sub-pixel re-rasterisation. A page rendered again a fraction of a pixel away (another glyph
positioning, a transform of a third of a pixel, another device scale) moves every thin stroke:
a stroke's core stays the darkest pixel of its neighbourhood yet lightens by tens of levels, so
it fails the in-between test. Such a pixel is still noise when, besides the two range tests,
its difference is at most ``SHIFT_SHARE`` of the contrast (3x3 range) of *both* neighbourhoods
in every channel: an edge moved by ``d`` px changes a pixel by about ``d`` times the edge's
contrast, while ink turned to background (or a colour replaced) changes it by the whole
contrast. A replaced word keeps its cores (ink where there was background) and is still found;
``compare`` takes the extent of each significant region from the stricter edge-only test
(:attr:`NoiseMasks.edges`), so the word's box is whole.

The share of the local range in the slack makes the test gradient-aware: at a sharp glyph edge
(range ~200 levels) a sharper or softer filter moves the stroke's core by tens of levels, which
is smoothing, not an edit; in flat areas (range ~0) only the tolerance applies, so a patch
painted on a flat background is never explained away.

After alignment, ``resampled_mask`` adds the pixels that B's warped copy shares with A
resampled there and back (``compare`` computes that copy for the resampling floor).

A smoothed edge or glyph passes both tests: the other image has the same edge within a pixel,
so the intermediate tone is found between its neighbours. A pasted, removed or recoloured
object fails at least one of them everywhere but at its rim: inside it, neither image's
neighbourhood holds the other's colours (an added object fails the first test, a removed one
the second). A new word on a UI page fails too wherever its strokes fall on background or its
gaps on ink: the region is still found, only its rim pixels are not counted.

The test costs two 3x3 erosions and dilations per image, on the bounding box of the changed
pixels only, band by band (``BAND_ROWS`` rows: its float temporaries stay a few MB whatever the
image's size; bands without a changed pixel are skipped).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import cv2
import numpy as np

#: Side of the square neighbourhood, in px (pixelmatch and odiff look at the 8 neighbours).
NEIGHBOURHOOD = 3
#: Share of the local (3x3) range added to the tolerance in the range test.
CONTRAST_SLACK = 0.3
#: An anti-aliased pixel sits at least this share of the tolerance inside its own 3x3 range.
INSIDE_MARGIN = 0.5
#: A changed pixel whose difference is at most this share of both 3x3 contrasts is an edge
#: moved by a fraction of a pixel (see the module docstring). Tuned on the verdict corpus.
SHIFT_SHARE = 0.5
#: Rows per band of the tests (bounded temporaries: a few MB per band at 4K width).
BAND_ROWS = 256


class NoiseMasks(NamedTuple):
    """Changed pixels explained as rendering noise, ``bool`` ``HxW`` each (subsets of the
    changed mask): ``all`` by any test, ``edges`` by the edge (in-between tone) test alone."""

    all: np.ndarray
    edges: np.ndarray


def antialiased_mask(
    a: np.ndarray,
    b: np.ndarray,
    changed: np.ndarray,
    *,
    threshold: int,
) -> np.ndarray:
    """Which changed pixels are anti-aliasing / resampling noise (see the module docstring).

    Parameters
    ----------
    a, b
        Same-shape ``HxWxC`` (or ``HxW``) ``uint8`` or ``uint16`` images.
    changed
        ``bool`` ``HxW``: the pixels whose difference exceeds the tolerance.
    threshold
        The tolerance as an 8-bit level 0..255 (scaled by 257 for 16-bit images).

    Returns
    -------
    numpy.ndarray
        ``bool`` ``HxW``, True where a changed pixel is explained by its neighbourhoods; always
        a subset of ``changed``.
    """
    return antialiased_masks(a, b, changed, threshold=threshold).all


def antialiased_masks(
    a: np.ndarray,
    b: np.ndarray,
    changed: np.ndarray,
    *,
    threshold: int,
) -> NoiseMasks:
    """:func:`antialiased_mask` and the stricter edge-only mask, computed together (the same
    parameters); ``edges`` is a subset of ``all``."""
    out = np.zeros(changed.shape, dtype=bool)
    if not changed.any():
        return NoiseMasks(out, out.copy())
    height, width = changed.shape
    # The changed pixels' bounding box, read from the 0/1 bytes in place (no coordinate
    # arrays: a photograph re-encoded changes millions of pixels).
    bx, by, bw, bh = cv2.boundingRect(np.ascontiguousarray(changed).view(np.uint8))
    y0, y1 = max(by - 1, 0), min(by + bh + 1, height)
    x0, x1 = max(bx - 1, 0), min(bx + bw + 1, width)
    slack = threshold * (257 if a.dtype == np.uint16 else 1)
    edge_out = out.copy()
    # Band by band (BAND_ROWS rows, one row of neighbours above and below), so that the
    # float32 temporaries stay small: every test is per pixel on 3x3 neighbourhoods, so the
    # bands give the same masks as the whole box (whose own edge is replicated, as before).
    for r0 in range(y0, y1, BAND_ROWS):
        r1 = min(r0 + BAND_ROWS, y1)
        band_changed = changed[r0:r1, x0:x1]
        if not band_changed.any():
            continue
        h0, h1 = max(r0 - 1, y0), min(r1 + 1, y1)
        ca = np.ascontiguousarray(a[h0:h1, x0:x1])
        cb = np.ascontiguousarray(b[h0:h1, x0:x1])
        range_a, range_b = _Range(ca), _Range(cb)
        inner = slice(r0 - h0, r0 - h0 + (r1 - r0))
        in_range = (range_a.holds(cb, slack) & range_b.holds(ca, slack))[inner] & band_changed
        edges = in_range & (range_a.inside(ca, slack) & range_b.inside(cb, slack))[inner]
        moved = in_range & _moved_edge(ca, cb, range_a, range_b)[inner]
        edge_out[r0:r1, x0:x1] = edges
        out[r0:r1, x0:x1] = edges | moved
    return NoiseMasks(out, edge_out)


def _moved_edge(ca: np.ndarray, cb: np.ndarray, range_a: _Range, range_b: _Range) -> np.ndarray:
    """In every channel the difference is at most ``SHIFT_SHARE`` of the smaller of the two
    3x3 contrasts: an edge moved by a fraction of a pixel. ``bool`` ``HxW``."""
    diff = cv2.absdiff(ca, cb)
    low = cv2.min(range_a.span, range_b.span)
    ok = diff <= _share_table(ca.dtype, SHIFT_SHARE, 0)[low]
    return _every_channel(ok)


@functools.lru_cache(maxsize=64)
def _share_table(dtype: np.dtype[Any], share: float, slack: int) -> np.ndarray:
    """For every contrast ``s`` of ``dtype`` (0..255 or 0..65535): the largest integer
    difference ``d`` with ``d <= s * share + slack`` as float32 arithmetic computes it (the
    tests compare integers with that bound: a table gives the same answers without float
    copies of the images). A few dozen kept: one per dtype, share and tolerance in use (a
    16-bit table is 128 kB)."""
    top = int(np.iinfo(dtype).max)
    spans = np.arange(top + 1, dtype=np.float32)
    bound = np.floor(spans * share + slack)
    return np.asarray(np.clip(bound, 0, top), dtype=dtype)


def _every_channel(ok: np.ndarray) -> np.ndarray:
    """``ok.all(axis=2)`` of an ``HxWxC`` bool array (``HxW`` as it is), channel by channel:
    a reduction over a short last axis is several times slower in NumPy."""
    if ok.ndim == 2:
        return ok
    out = ok[..., 0].copy()
    for channel in range(1, ok.shape[2]):
        out &= ok[..., channel]
    return out


def _some_channel(ok: np.ndarray) -> np.ndarray:
    """``ok.any(axis=2)`` likewise."""
    if ok.ndim == 2:
        return ok
    out = ok[..., 0].copy()
    for channel in range(1, ok.shape[2]):
        out |= ok[..., channel]
    return out


class _Range:
    """The 3x3 minimum and maximum, per channel, of one image (and their difference)."""

    def __init__(self, img: np.ndarray) -> None:
        kernel = np.ones((NEIGHBOURHOOD, NEIGHBOURHOOD), np.uint8)
        self.low = cv2.erode(img, kernel, borderType=cv2.BORDER_REPLICATE)
        self.high = cv2.dilate(img, kernel, borderType=cv2.BORDER_REPLICATE)
        self.span = cv2.subtract(self.high, self.low)

    def holds(self, value: np.ndarray, slack: int) -> np.ndarray:
        """Every channel of ``value`` lies in this range, widened by ``slack`` plus
        ``CONTRAST_SLACK`` of the range."""
        below = cv2.subtract(self.low, value)  # saturating: 0 where value >= low
        above = cv2.subtract(value, self.high)
        excess = cv2.max(below, above)
        return _every_channel(excess <= _share_table(value.dtype, CONTRAST_SLACK, slack)[self.span])

    def inside(self, own: np.ndarray, slack: int) -> np.ndarray:
        """The image's own value is an in-between tone of its neighbourhood (an edge pixel):
        in some channel at least ``INSIDE_MARGIN`` of the tolerance above the 3x3 minimum and
        below the maximum. A flat area's pixel or a stroke's core is not."""
        # Integer levels against a margin of k/2: ``level >= margin`` is ``level >= ceil``.
        margin = math.ceil(np.float32(slack * INSIDE_MARGIN))
        up = cv2.subtract(own, self.low) >= margin
        down = cv2.subtract(self.high, own) >= margin
        return _some_channel(up & down)


def resampled_mask(
    warped_b: np.ndarray, resampled_a: np.ndarray, changed: np.ndarray, *, threshold: int
) -> np.ndarray:
    """Changed pixels where B's aligned copy matches A resampled there and back within the
    tolerance (every channel): differences the resampling alone makes. ``bool`` ``HxW``."""
    slack = threshold * (257 if warped_b.dtype == np.uint16 else 1)
    excess = cv2.absdiff(warped_b, resampled_a)
    within = np.asarray(excess <= slack)
    ok = _every_channel(within)
    return np.asarray(ok & changed)

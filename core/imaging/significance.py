"""Which changed regions count as edits, and how far they reach: a region grown to the whole
extent of the change it is part of (a replaced word, not its fragments), the regions that
stand out from the rest of the pair (a local-SSIM test), and the pixels left when local edits
are set aside."""

from __future__ import annotations

import numpy as np

from core.imaging.regions import (
    MERGE_GAP_KERNELS,
    Region,
    box_gap,
    closing_kernel_size,
    find_regions,
    merge_nearby,
    stacked,
)
from core.imaging.verdict import IDENTICAL_MIN_SSIM, LOCAL_MAX_EXTENT, rest_ssim

__all__ = [
    "EXTENT_GROWTH",
    "NOISY_MIN_MEAN_DIFF",
    "REGION_MIN_SSIM_DROP",
    "local_holes",
    "stand_out",
    "whole_extents",
]

#: A region is an edit only when its own SSIM is at least this much below the rest's.
REGION_MIN_SSIM_DROP = 0.15
#: On a pair with a global residual, a region's mean difference must reach this many tolerances.
#: ... unless its own SSIM lies this much below the rest's: an edit re-compressed or warped
#: after it was made keeps its change of structure while its amplitude is softened.
STRONG_SSIM_DROP = 0.5
NOISY_MIN_MEAN_DIFF = 2.0
#: A significant region takes the extent of the edge-test region it lies in (``whole_extents``)
#: when that region's box is at most this many times the box of the regions inside it.
EXTENT_GROWTH = 4.0


def whole_extents(
    regions: list[Region],
    diff: np.ndarray,
    threshold: int,
    valid: np.ndarray | None,
    edges: np.ndarray,
) -> list[Region]:
    """The significant regions grown to the extent of the edge-test regions they meet.

    Significance is decided on the pixels no noise test explains; but the moved-edge test
    (``noise.SHIFT_SHARE``) also explains the rims and thin strokes of a replaced word, which
    shrinks it or splits it into fragments smaller than the word. Each significant region is
    replaced by the union of the regions of the changed pixels the edge test alone leaves
    (``edges``: stricter) that overlap its box, unless that union's box is over
    ``EXTENT_GROWTH`` times the region's own (a whole re-rendered text block around a small
    edit). The union grows on to the strict regions within the merge gap of it (the other
    words of a changed line) or stacked with it (``regions.stacked``: the other lines of a
    reflowed paragraph), and the grown regions are merged as ``significant_regions`` does.
    """
    strict, _ = find_regions(diff, threshold=threshold, valid=valid, exclude=edges)
    gap = MERGE_GAP_KERNELS * closing_kernel_size(diff.shape[0], diff.shape[1])
    everything = max(diff.shape)
    out: list[Region] = []
    for region in regions:
        limit = EXTENT_GROWTH * region.width * region.height
        kept, meeting = region, [whole for whole in strict if _overlap(region, whole)]
        while meeting:  # the strict regions it overlaps, then those within the merge gap
            grown = merge_nearby(meeting, everything)[0]
            if grown.width * grown.height > limit:
                break  # keep the last extent within the limit
            kept = grown
            more = [
                w
                for w in strict
                if w not in meeting and (box_gap(grown, w) <= gap or stacked(grown, w))
            ]
            if not more:
                break
            meeting += more
        out.append(kept)
    return merge_nearby(out, gap)


def _overlap(a: Region, b: Region) -> bool:
    return (
        a.x < b.x + b.width
        and b.x < a.x + a.width
        and a.y < b.y + b.height
        and b.y < a.y + a.height
    )


def stand_out(regions: list[Region], score: float, compared: int, tolerance: float) -> list[Region]:
    """The regions that stand out from the rest of the pair (re-estimated once without the
    dropped ones), a local-SSIM test:

    - a region's own SSIM must lie at least ``REGION_MIN_SSIM_DROP`` below the SSIM of the
      rest of the pair (``verdict.rest_ssim``): a region as similar as everything else is the
      pair's overall noise, not an edit;
    - on a pair with a global residual (the rest's SSIM below ``IDENTICAL_MIN_SSIM``: JPEG,
      resampling, a filter) a region must also differ by at least ``NOISY_MIN_MEAN_DIFF``
      tolerances on average: the residual's own peaks hug the tolerance, an edit does not.
    """
    kept = regions
    for _ in range(2):
        rest = rest_ssim(score, kept, compared)
        floor = NOISY_MIN_MEAN_DIFF * tolerance if rest < IDENTICAL_MIN_SSIM else 0.0
        kept = [
            r
            for r in regions
            if (r.ssim is None or r.ssim <= rest - REGION_MIN_SSIM_DROP)
            and (r.mean_diff >= floor or (r.ssim is not None and r.ssim <= rest - STRONG_SSIM_DROP))
        ]
    return kept


def local_holes(regions: list[Region], shape: tuple[int, ...]) -> list[Region]:
    """The regions to leave out of the content correlation: all of them when they are local
    (together at most ``LOCAL_MAX_EXTENT`` of the image), else none; local edits must not
    lower the content correlation."""
    covered = sum(r.width * r.height for r in regions)
    if not regions or covered > LOCAL_MAX_EXTENT * shape[0] * shape[1]:
        return []
    return list(regions)

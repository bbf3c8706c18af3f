"""Group the changed pixels of a difference map into regions: boxes a person can look at.

A pixel is *changed* when its difference level exceeds the noise threshold and it is compared
(``valid``). One edit rarely changes every pixel it covers: a pasted object shares colours with
the background here and there, text is strokes with gaps. So before labelling, the changed mask
is closed (dilated then eroded) with a square kernel of side ``closing_kernel_size(H, W)``:
about 1 % of the shorter image side, at least 3 px, odd (11 px at 1920x1080, 5 px at 512x512).
Fragments less than about a kernel apart become one region, while edits further apart than that
stay separate. Connected components of the closed mask (8-connectivity) are the regions; their
statistics count only the pixels that were changed before closing. Closing and labelling run in
row bands (``core.imaging.labelling``), so a region map never costs a label per pixel of the image.

Regions whose changed pixels number fewer than ``MIN_REGION_AREA`` are specks (isolated noise
above the threshold) and are left out of the list, but still counted in the changed total.

Significance against the pair's own noise floor (``significant_regions``): a JPEG re-save or a
resampled copy leaves changed and anti-aliased pixels scattered over the image, denser where
the image has detail, and the closing groups them into many small regions that mean nothing.
Modelling that noise as independent pixels at density ``rho``, a region whose box grown by
the closing kernel side (the area its closing could gather pixels from) covers ``S`` pixels
holds ``n`` changed pixels by chance with probability ``P(Poisson(rho * S) >= n)`` (bounded
from above by Chernoff's bound); it is kept only when that probability is below
``REGION_SIGNIFICANCE``. ``rho`` is the larger of the pair's background density (noise pixels,
changed or anti-aliased, outside the significant regions per compared pixel outside them, in
two passes) and the local density in a margin of one box side around the region. Significant
regions less than ``MERGE_GAP_KERNELS`` kernel sides apart are then merged into one. A clean
pair (no noise) keeps every region of at least ``MIN_REGION_AREA`` pixels; on a noisy pair an
edit must stand out from the noise around it. ``compare`` then applies a local-SSIM test
(``significance.stand_out``).

The threshold must sit above the noise for the boxes to be tight: where many pixels of a
textured area exceed it (a photo re-saved as JPEG at quality 90 or lower, compared at the
default tolerance of 10 levels, often changes 5-10 % of its pixels that way, mostly at colour
edges), the closing bridges that noise into large regions around the real edit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.labelling import BAND_PIXELS, closed_components

#: Regions with fewer changed pixels than this are specks: counted as changed, not listed.
MIN_REGION_AREA = 4
#: A region is significant when noise at the pair's background density would put at least its
#: number of changed pixels into its box with a probability below this (see the module docstring).
REGION_SIGNIFICANCE = 1e-6
#: Significant regions closer than this many closing-kernel sides are one edit (merged).
MERGE_GAP_KERNELS = 2
#: Two regions whose columns overlap by at least this share of the narrower one, one line's
#: height apart or less, are lines of one edit (``stacked``).
STACK_MIN_OVERLAP = 0.5
#: Closing kernel side as a fraction of the shorter image side (see ``closing_kernel_size``).
CLOSING_FRACTION = 0.01
#: Smallest closing kernel side, in pixels.
MIN_CLOSING_KERNEL = 3


@dataclass(frozen=True)
class Region:
    """One changed region, in A's pixel coordinates.

    Attributes
    ----------
    x, y, width, height
        Bounding box in pixels: columns ``x .. x + width - 1``, rows ``y .. y + height - 1``.
    area
        Number of changed pixels inside the region (after thresholding, before closing).
    mean_diff
        Mean difference level of those pixels, as a fraction of the data range, 0..1.
    max_diff
        Largest difference level of those pixels, as a fraction of the data range, 0..1.
    kind
        What happened there (``core.imaging.findings.classify_region``): ``added``,
        ``removed``, ``recoloured`` or ``changed`` (the default, when it cannot be told).
    ssim
        SSIM of A and B over the region's box, 0..1, or None when not measured.
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    mean_diff: float
    max_diff: float
    kind: str = "changed"
    ssim: float | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The region as JSON-ready numbers (fractions rounded to 6 decimals)."""
        return {
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "area": self.area,
            "mean_diff": round(self.mean_diff, 6),
            "max_diff": round(self.max_diff, 6),
            "kind": self.kind,
            "ssim": None if self.ssim is None else round(max(self.ssim, 0.0), 6),
        }


def closing_kernel_size(height: int, width: int) -> int:
    """Side in pixels of the square closing kernel for an image of ``height x width``.

    ``round(CLOSING_FRACTION * min(height, width))``, at least ``MIN_CLOSING_KERNEL``, made odd
    so the kernel is centred. Gaps of up to ``side - 1`` pixels between changed pixels are bridged.
    """
    side = max(MIN_CLOSING_KERNEL, round(CLOSING_FRACTION * min(height, width)))
    return side | 1


def find_regions(
    diff: np.ndarray,
    *,
    threshold: int,
    valid: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    max_regions: int = 100,
) -> tuple[list[Region], int]:
    """Find the regions of changed pixels in a difference map.

    Parameters
    ----------
    diff
        ``uint8`` ``HxW`` difference levels 0..255 (``diffmap.difference_map``).
    threshold
        Noise threshold as a level 0..255: a pixel is changed when ``diff > threshold``
        (a difference equal to the threshold is noise).
    valid
        ``bool`` ``HxW``, True where a pixel is compared, or None for every pixel. Pixels outside
        it are never changed and never part of a region.
    exclude
        ``bool`` ``HxW``, True where a compared pixel is not counted (explained as noise), or
        None: the same as passing ``valid & ~exclude`` as ``valid``, without that full-size mask.
    max_regions
        Largest number of regions returned, >= 0.

    Returns
    -------
    regions : list of Region
        At most ``max_regions`` regions, largest ``area`` first (ties: top to bottom, then left
        to right); specks smaller than ``MIN_REGION_AREA`` changed pixels are left out.
    changed_pixels : int
        Number of changed pixels in the whole map, including those of specks and of regions
        beyond ``max_regions``; ``changed_ratio`` is this over the number of valid pixels.

    Raises
    ------
    ImagingError
        ``INVALID_OPTIONS`` for a threshold outside 0..255 or a negative ``max_regions``;
        ``UNSUPPORTED_FORMAT`` or ``SIZE_MISMATCH`` for a malformed ``diff`` or ``valid``.
    """
    if diff.dtype != np.uint8 or diff.ndim != 2:
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"a difference map is a uint8 HxW array, got {diff.dtype} {diff.shape}",
        )
    if not 0 <= threshold <= 255:
        raise ImagingError(ErrorCode.INVALID_OPTIONS, f"threshold must be 0..255, not {threshold}")
    if max_regions < 0:
        raise ImagingError(ErrorCode.INVALID_OPTIONS, "max_regions must be >= 0")
    if diff.size == 0:
        return [], 0
    diff = np.ascontiguousarray(diff)
    valid_u8 = _mask_u8(valid, diff.shape) if valid is not None else None
    exclude_u8 = _mask_u8(exclude, diff.shape) if exclude is not None else None
    height, width = diff.shape
    rows = max(1, BAND_PIXELS // width)

    restricted = valid_u8 is not None or exclude_u8 is not None

    def counted_rows(r0: int, r1: int, x0: int = 0, x1: int = width) -> np.ndarray:
        """The 0/1 mask of the pixels that may count as changed (only when ``restricted``)."""
        if exclude_u8 is None:
            assert valid_u8 is not None
            return np.ascontiguousarray(valid_u8[r0:r1, x0:x1])
        counted = np.bitwise_xor(exclude_u8[r0:r1, x0:x1], np.uint8(1))
        if valid_u8 is not None:
            counted &= valid_u8[r0:r1, x0:x1]
        return counted

    def changed_rows(r0: int, r1: int, x0: int = 0, x1: int = width) -> np.ndarray:
        # A 0/1 mask (not 0/255), so that it can be viewed as a NumPy bool array for free.
        band = np.ascontiguousarray(diff[r0:r1, x0:x1])
        _, changed = cv2.threshold(band, int(threshold), 1, cv2.THRESH_BINARY)  # > threshold
        if restricted:
            changed = cv2.bitwise_and(changed, counted_rows(r0, r1, x0, x1))
        return np.asarray(changed)

    # First pass, band by band: how many pixels changed, and their bounding box.
    changed_count, bx0, by0, bx1, by1 = 0, width, height, 0, 0
    for r0 in range(0, height, rows):
        band = changed_rows(r0, min(r0 + rows, height))
        count = int(cv2.countNonZero(band))
        if count:
            x, y, w, h = cv2.boundingRect(band)
            changed_count += count
            bx0, by0 = min(bx0, x), min(by0, y + r0)
            bx1, by1 = max(bx1, x + w), max(by1, y + r0 + h)
    if changed_count == 0 or max_regions == 0:
        return [], changed_count

    # Work on the bounding box of the changed pixels plus a margin of one kernel side: closing
    # inside it equals closing the whole map (dilation reaches at most half a side beyond a
    # changed pixel, erosion looks at most half a side further), and a localised edit costs
    # only its neighbourhood. The closing and labelling run in row bands (core.imaging.labelling).
    side = closing_kernel_size(height, width)
    x0, y0 = max(bx0 - side, 0), max(by0 - side, 0)
    x1, y1 = min(bx1 + side, width), min(by1 + side, height)
    found = closed_components(
        lambda r0, r1: changed_rows(y0 + r0, y0 + r1, x0, x1),
        diff[y0:y1, x0:x1],
        (lambda r0, r1: counted_rows(y0 + r0, y0 + r1, x0, x1)) if restricted else None,
        side=side,
    )
    boxes, areas = found.boxes, found.areas
    keep = np.flatnonzero(areas >= MIN_REGION_AREA)
    order = np.lexsort((boxes[keep, 0], boxes[keep, 1], -areas[keep]))[:max_regions]
    regions: list[Region] = []
    for label in keep[order]:
        area = int(areas[label])
        left, top, box_width, box_height = (int(v) for v in boxes[label])
        regions.append(
            Region(
                x=left + x0,
                y=top + y0,
                width=box_width,
                height=box_height,
                area=area,
                mean_diff=float(found.sums[label]) / area / 255.0,
                max_diff=int(found.peaks[label]) / 255.0,
            )
        )
    return regions, changed_count


def significant_regions(
    regions: list[Region],
    noise: np.ndarray,
    valid: np.ndarray | None = None,
) -> list[Region]:
    """The regions that stand out from the pair's own noise (see the module docstring).

    Parameters
    ----------
    regions
        Regions of ``find_regions``, in its order.
    noise
        ``bool`` ``HxW``: every pixel that is evidence of noise or change: changed pixels and
        the anti-aliased ones (``noise.antialiased_mask``).
    valid
        ``bool`` ``HxW`` compared pixels, or None for all.

    Returns
    -------
    list of Region
        The significant regions, in the same order.
    """
    if not regions:
        return []
    height, width = noise.shape
    side = closing_kernel_size(height, width)
    # Counts in boxes straight off the masks (views, no copy), once per region: the boxes do
    # not change between the two passes. No summed-area table: two of them would take 8 bytes
    # a pixel (800 MB at 100 megapixels) for the few boxes asked.
    evidence = np.ascontiguousarray(noise).view(np.uint8)
    compared = None if valid is None else np.ascontiguousarray(valid).view(np.uint8)

    def count_in(mask: np.ndarray | None, x0: int, y0: int, x1: int, y1: int) -> int:
        if mask is None:
            return (x1 - x0) * (y1 - y0)
        return int(cv2.countNonZero(mask[y0:y1, x0:x1])) if x1 > x0 and y1 > y0 else 0

    total_compared = count_in(compared, 0, 0, width, height)
    total_evidence = count_in(evidence, 0, 0, width, height)
    around_of: dict[int, tuple[int, int]] = {}
    for index, r in enumerate(regions):
        margin = max(r.width, r.height)
        x0, y0 = max(r.x - margin, 0), max(r.y - margin, 0)
        x1, y1 = min(r.x + r.width + margin, width), min(r.y + r.height + margin, height)
        around_of[index] = (
            count_in(evidence, x0, y0, x1, y1) - r.area,
            count_in(compared, x0, y0, x1, y1) - r.width * r.height,
        )

    kept = regions
    for _ in range(2):
        inside = sum(r.area for r in kept)
        boxes = sum(r.width * r.height for r in kept)
        rho_global = max(total_evidence - inside, 0) / max(total_compared - boxes, 1)
        next_kept = []
        for index, r in enumerate(regions):
            around, area = around_of[index]
            rho = max(rho_global, around / area if area > 0 else 0.0)
            reach = (r.width + side) * (r.height + side)
            if _chance(r.area, rho * reach) < REGION_SIGNIFICANCE:
                next_kept.append(r)
        kept = next_kept
    return merge_nearby(kept, MERGE_GAP_KERNELS * side)


def merge_nearby(regions: list[Region], gap: int) -> list[Region]:
    """Merge regions whose boxes are at most ``gap`` px apart (fragments of one edit, such as
    the words of a changed line) or that are :func:`stacked` (the lines of one changed text
    block), repeatedly; the merged region sums the areas, keeps the area-weighted mean and the
    largest difference. Largest area first, as ``find_regions``."""
    merged = list(regions)
    changed = True
    while changed and len(merged) > 1:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                if box_gap(merged[i], merged[j]) <= gap or stacked(merged[i], merged[j]):
                    merged[i] = _union(merged[i], merged[j])
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    merged.sort(key=lambda r: (-r.area, r.y, r.x))
    return merged


def stacked(a: Region, b: Region) -> bool:
    """Whether two regions lie one above the other as lines of one text block: their columns
    overlap by at least ``STACK_MIN_OVERLAP`` of the narrower one, and the rows between them are
    at most the lower of their heights (one line's spacing)."""
    overlap = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    gy = max(b.y - (a.y + a.height), a.y - (b.y + b.height), 0)
    return overlap >= STACK_MIN_OVERLAP * min(a.width, b.width) and gy <= min(a.height, b.height)


def box_gap(a: Region, b: Region) -> int:
    """Pixels between the two boxes (the larger of the x and y gaps; 0 when they touch)."""
    gx = max(b.x - (a.x + a.width), a.x - (b.x + b.width), 0)
    gy = max(b.y - (a.y + a.height), a.y - (b.y + b.height), 0)
    return max(gx, gy)


def _union(a: Region, b: Region) -> Region:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1 = max(a.x + a.width, b.x + b.width)
    y1 = max(a.y + a.height, b.y + b.height)
    area = a.area + b.area
    return Region(
        x=x0,
        y=y0,
        width=x1 - x0,
        height=y1 - y0,
        area=area,
        mean_diff=(a.mean_diff * a.area + b.mean_diff * b.area) / area,
        max_diff=max(a.max_diff, b.max_diff),
    )


def _chance(count: int, expected: float) -> float:
    """Chernoff bound of ``P(Poisson(expected) >= count)``: the chance of ``count`` noise
    pixels in a box, ``exp(-expected) * (e * expected / count) ** count`` above the mean."""
    if expected <= 0.0:
        return 0.0 if count > 0 else 1.0
    if count <= expected:
        return 1.0
    return math.exp(count - expected + count * math.log(expected / count))


def _mask_u8(valid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The bool mask as a contiguous ``uint8`` 0/1 view (no copy when already contiguous)."""
    if valid.shape != shape:
        raise ImagingError(
            ErrorCode.SIZE_MISMATCH,
            f"valid mask shape {valid.shape} does not match the difference map {shape}",
        )
    if valid.dtype != np.bool_:
        raise ImagingError(
            ErrorCode.UNSUPPORTED_FORMAT, f"the valid mask must be bool, got {valid.dtype}"
        )
    return np.ascontiguousarray(valid).view(np.uint8)

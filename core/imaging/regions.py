"""Group the changed pixels of a difference map into regions: boxes a person can look at.

A pixel is *changed* when its difference level exceeds the noise threshold and it is compared
(``valid``). One edit rarely changes every pixel it covers: a pasted object shares colours with
the background here and there, text is strokes with gaps. So before labelling, the changed mask
is closed (dilated then eroded) with a square kernel of side ``closing_kernel_size(H, W)``:
about 1 % of the shorter image side, at least 3 px, odd (11 px at 1920x1080, 5 px at 512x512).
Fragments less than about a kernel apart become one region, while edits further apart than that
stay separate. Connected components of the closed mask (8-connectivity) are the regions; their
statistics count only the pixels that were changed before closing.

Regions whose changed pixels number fewer than ``MIN_REGION_AREA`` are specks (isolated noise
above the threshold) and are left out of the list, but still counted in the changed total.

The threshold must sit above the noise for the boxes to be tight: where many pixels of a
textured area exceed it (a photo re-saved as JPEG at quality 90 or lower, compared at the
default tolerance of 10 levels, often changes 5-10 % of its pixels that way, mostly at colour
edges), the closing bridges that noise into large regions around the real edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.imaging.errors import ErrorCode, ImagingError

#: Regions with fewer changed pixels than this are specks: counted as changed, not listed.
MIN_REGION_AREA = 4
#: Closing kernel side as a fraction of the shorter image side (see ``closing_kernel_size``).
CLOSING_FRACTION = 0.01
#: Smallest closing kernel side, in pixels.
MIN_CLOSING_KERNEL = 3
#: Up to this many labels, per-label statistics come from one label x level histogram.
_HISTOGRAM_MAX_LABELS = 4096


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
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    mean_diff: float
    max_diff: float

    def to_dict(self) -> dict[str, float | int]:
        """The region as JSON-ready numbers (fractions rounded to 6 decimals)."""
        return {
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "area": self.area,
            "mean_diff": round(self.mean_diff, 6),
            "max_diff": round(self.max_diff, 6),
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
    # A 0/1 mask (not 0/255), so that it can be viewed as a NumPy bool array for free.
    _, changed = cv2.threshold(diff, int(threshold), 1, cv2.THRESH_BINARY)  # diff > threshold
    valid_u8: np.ndarray | None = None
    if valid is not None:
        valid_u8 = _mask_u8(valid, diff.shape)
        changed = cv2.bitwise_and(changed, valid_u8)
    changed_count = int(cv2.countNonZero(changed))
    if changed_count == 0 or max_regions == 0:
        return [], changed_count

    # Work on the bounding box of the changed pixels plus a margin of one kernel side: closing
    # inside it equals closing the whole map (dilation reaches at most half a side beyond a
    # changed pixel, erosion looks at most half a side further), and a localised edit costs
    # only its neighbourhood.
    height, width = diff.shape
    side = closing_kernel_size(height, width)
    bx, by, bw, bh = cv2.boundingRect(changed)
    x0, y0 = max(bx - side, 0), max(by - side, 0)
    x1, y1 = min(bx + bw + side, width), min(by + bh + side, height)
    crop_changed = np.ascontiguousarray(changed[y0:y1, x0:x1])
    crop_diff = diff[y0:y1, x0:x1]
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    closed = cv2.morphologyEx(crop_changed, cv2.MORPH_CLOSE, kernel)
    if valid_u8 is not None:  # closing must not reach into pixels that are not compared
        closed = cv2.bitwise_and(closed, valid_u8[y0:y1, x0:x1])
    count, labels, boxes = _label(closed)

    # Per-label statistics over the changed pixels only, in one pass over them.
    positions = np.flatnonzero(crop_changed.view(np.bool_))
    label_of = labels.ravel()[positions]
    level_of = crop_diff.ravel()[positions]
    areas, sums, peaks = _label_stats(label_of, level_of, count)

    keep = np.flatnonzero(areas >= MIN_REGION_AREA)
    keep = keep[keep != 0]  # label 0 is the background
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
                mean_diff=float(sums[label]) / area / 255.0,
                max_diff=int(peaks[label]) / 255.0,
            )
        )
    return regions, changed_count


def _label(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected components (8-connectivity) of a 0/1 mask and their bounding boxes.

    Returns ``(count, labels, boxes)``: ``labels`` is ``int32`` ``HxW`` (0 = background) and
    ``boxes`` is ``(count, 4)`` ``int64`` ``(left, top, width, height)`` per label (row 0 unused).

    The boxes come from the horizontal runs of equal labels, not from
    ``connectedComponentsWithStats``: its per-pixel statistics cost about 12 ms on a mostly
    changed 1920x1080 mask (a global change), while labelling alone takes about 1.5 ms and
    the runs about 3 ms whatever the mask. A run starts where the label differs from its left
    neighbour and ends where it differs from its right neighbour, so a component's box is the
    extent of its runs.
    """
    count, found = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    labels = np.asarray(found, dtype=np.int32)  # no copy: already int32
    height, width = labels.shape
    foreground = labels != 0
    starts = np.empty((height, width), dtype=np.bool_)
    starts[:, 0] = foreground[:, 0]
    np.not_equal(labels[:, 1:], labels[:, :-1], out=starts[:, 1:])
    starts[:, 1:] &= foreground[:, 1:]
    ends = np.empty((height, width), dtype=np.bool_)
    ends[:, -1] = foreground[:, -1]
    np.not_equal(labels[:, :-1], labels[:, 1:], out=ends[:, :-1])
    ends[:, :-1] &= foreground[:, :-1]
    start_at = np.flatnonzero(starts)
    end_at = np.flatnonzero(ends)
    flat = labels.ravel()
    start_label, end_label = flat[start_at], flat[end_at]
    start_row = start_at // width
    start_col = start_at - start_row * width
    end_col = end_at % width
    left = np.full(count, width, dtype=np.int64)
    right = np.full(count, -1, dtype=np.int64)
    top = np.full(count, height, dtype=np.int64)
    bottom = np.full(count, -1, dtype=np.int64)
    np.minimum.at(left, start_label, start_col)
    np.maximum.at(right, end_label, end_col)
    np.minimum.at(top, start_label, start_row)
    np.maximum.at(bottom, start_label, start_row)
    boxes = np.stack([left, top, right - left + 1, bottom - top + 1], axis=1)
    return int(count), labels, boxes


def _label_stats(
    label_of: np.ndarray, level_of: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label: number of pixels, sum of their levels, largest level (arrays of ``count``).

    ``label_of`` and ``level_of`` give the label and the ``uint8`` level of each changed pixel.
    With up to ``_HISTOGRAM_MAX_LABELS`` labels, one ``bincount`` of ``label * 256 + level``
    yields a level histogram per label, from which all three follow (5 ms for 1.8 million
    changed pixels, against 17 ms for two ``bincount`` calls and ``np.maximum.at``); beyond
    that the histogram would be too large and the direct route is taken.
    """
    if count <= _HISTOGRAM_MAX_LABELS:
        key = label_of.astype(np.int32)
        key <<= 8
        key |= level_of
        histogram = np.bincount(key, minlength=count * 256).reshape(count, 256)
        areas = histogram.sum(axis=1)
        sums = histogram @ np.arange(256, dtype=np.int64)
        # Largest level with a nonzero count (meaningless for a label without changed pixels,
        # which is dropped as a speck anyway).
        peaks = 255 - np.argmax(histogram[:, ::-1] > 0, axis=1)
        return areas, sums.astype(np.float64), peaks
    areas = np.bincount(label_of, minlength=count)
    sums = np.bincount(label_of, weights=level_of, minlength=count)
    peaks = np.zeros(count, dtype=np.int64)
    np.maximum.at(peaks, label_of, level_of)
    return areas, sums, peaks


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

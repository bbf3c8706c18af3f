"""The pixel measurements of a large pair in row bands: one pass, no whole-image temporaries.

The whole-image route (``compare._measure``) makes one full-size array per stage: the SSIM map
(4 bytes per pixel), the interleaved absolute difference and its channel planes (2 x C bytes),
the heatmap's scanlines and the preview's coded copy (1 byte each), each written, then read
once. At 37 megapixels that is over a gigabyte of memory touched for the first time, and the
page faults and cache misses, not the arithmetic, set the time. Here the image is walked in the
heatmap PNG's own strips (``heatmap.heatmap_strips``, at most 16, on the thread pool), and each
strip in sub-bands of about ``band_bytes`` per image: per sub-band the difference map rows, the
squared-error sum and the histograms; per strip its heatmap scanlines, deflated at once, and its
preview column maxima. SSIM runs band by band already (``metrics.ssim``) and is asked for its
means only (``keep_map=False``), after the difference map, which tells it the rows where A and B
are identical: a band whose windows see only such rows has SSIM exactly 1 and is counted, not
filtered. Screenshots of one page before and after a change differ in few rows, so their SSIM
costs about what the changed rows cost.

The results are those of the whole-image route: the same difference map and heatmap and
preview bytes (same strips, same strategies, Adler-32 combined), the same SSIM (same bands,
same sums), PSNR from exact integer sums, histograms from exactly summed counts (float64 here,
OpenCV's float32 over the whole image: within 1e-7). The difference map is kept whole
(1 byte per pixel), since region labelling (``regions.find_regions``) needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import cv2
import numpy as np

from core.imaging.diffmap import difference_map
from core.imaging.heatmap import (
    TOP_LEVEL_INDEX,
    deflate_strip,
    encode_palette_png,
    heatmap_indices,
    heatmap_palette,
    heatmap_strips,
    palette_png,
)
from core.imaging.metrics import (
    SSIMResult,
    bhattacharyya_mean,
    channel_histograms,
    psnr_from_squared_error,
    squared_error_sum,
    ssim,
)
from core.imaging.parallel import parallel_map

__all__ = ["DEFAULT_BAND_BYTES", "BandedMeasurement", "measure_banded"]

#: Default bytes of each image's pixels per sub-band (a sub-band's temporaries stay cache-sized).
DEFAULT_BAND_BYTES = 2 * 1024 * 1024
#: Bins of the histogram similarity (as ``metrics.histogram_similarity``'s default).
HISTOGRAM_BINS = 64


@dataclass(frozen=True)
class BandedMeasurement:
    """What one banded pass measures.

    Attributes
    ----------
    ssim
        SSIM means and components (``ssim_map`` empty: not kept).
    psnr, mse
        PSNR in dB (``None`` when identical) and MSE in squared pixel units.
    histogram_similarity
        Mean Bhattacharyya coefficient over channels, 0..1.
    diff
        ``uint8`` ``HxW`` difference map (``diffmap.difference_map``).
    nonzero_pixels
        Pixels whose difference level is nonzero (compared or not).
    heatmap_png
        ``heatmap.render_heatmap(diff, valid=valid)``, byte for byte.
    preview_png
        ``heatmap.render_preview(diff, valid=valid, max_side=...)``, or ``None`` when not asked.
    """

    ssim: SSIMResult
    psnr: float | None
    mse: float
    histogram_similarity: float
    diff: np.ndarray
    nonzero_pixels: int
    heatmap_png: bytes
    preview_png: bytes | None


@dataclass
class _Strip:
    squared_error: float
    values: int
    hists_a: list[np.ndarray]
    hists_b: list[np.ndarray]
    nonzero: int
    deflated: tuple[bytes, int, int]


def measure_banded(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: int,
    valid: np.ndarray | None = None,
    preview_max_side: int | None = None,
    band_bytes: int = DEFAULT_BAND_BYTES,
) -> BandedMeasurement:
    """Measure two same-shape images band by band.

    Parameters
    ----------
    a, b
        ``HxWxC`` ``uint8`` or ``uint16`` images of one shape and dtype (``decode.harmonise``),
        B already equal to A outside ``valid``.
    data_range
        255 or 65535.
    valid
        ``bool`` ``HxW``, True where a pixel is compared, or ``None`` for all.
    preview_max_side
        Longest side of the preview PNG in pixels (>= 1), or ``None`` for no preview.
    band_bytes
        Bytes of each image's pixels per sub-band (>= 1; at least one row is taken): bounds the
        pass's temporaries. Results do not depend on it.

    Returns
    -------
    BandedMeasurement
        The scores, the difference map and the two PNGs.
    """
    if a.shape != b.shape or a.dtype != b.dtype or a.ndim != 3:
        raise ValueError(f"a and b must be HxWxC of one shape and dtype: {a.shape}, {b.shape}")
    if band_bytes < 1:
        raise ValueError(f"band_bytes must be >= 1, not {band_bytes}")
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    height, width, _ = a.shape
    mask_u8 = None if valid is None else np.ascontiguousarray(valid).view(np.uint8)
    diff = np.empty((height, width), dtype=np.uint8)
    factor = 0
    columns: np.ndarray | None = None
    if preview_max_side is not None:
        factor = max(1, math.ceil(max(height, width) / preview_max_side))
        columns = np.empty((height, -(-width // factor)), dtype=np.uint8)
    sub_rows = max(1, band_bytes // (a.strides[0]))
    rows = heatmap_strips(height, width)
    changed_rows = np.empty(height, dtype=np.bool_)

    def strip(bounds: tuple[int, int]) -> _Strip:
        r0, r1 = bounds
        squared, values = 0.0, 0
        hists_a: list[np.ndarray] = []
        hists_b: list[np.ndarray] = []
        for s0 in range(r0, r1, sub_rows):
            s1 = min(r1, s0 + sub_rows)
            band_a, band_b = a[s0:s1], b[s0:s1]
            band_mask = None if mask_u8 is None else mask_u8[s0:s1]
            levels = difference_map(band_a, band_b)
            diff[s0:s1] = levels
            sq, count = squared_error_sum(band_a, band_b, band_mask)
            squared, values = squared + sq, values + count
            ha = channel_histograms(band_a, band_mask, bins=HISTOGRAM_BINS, data_range=data_range)
            if cv2.countNonZero(levels) == 0:  # identical rows: B's counts are A's
                hb = ha
            else:
                hb = channel_histograms(
                    band_b, band_mask, bins=HISTOGRAM_BINS, data_range=data_range
                )
            hists_a = ha if not hists_a else [x + y for x, y in zip(hists_a, ha, strict=True)]
            hists_b = hb if not hists_b else [x + y for x, y in zip(hists_b, hb, strict=True)]
        levels = diff[r0:r1]
        band_valid = None if valid is None else valid[r0:r1]
        if columns is not None:
            coded = np.minimum(levels, np.uint8(TOP_LEVEL_INDEX))
            coded += np.uint8(1)
            if band_valid is not None:
                coded *= band_valid
            columns[r0:r1] = np.maximum.reduceat(coded, np.arange(0, width, factor), axis=1)
        changed_rows[r0:r1] = levels.any(axis=1)
        deflated = deflate_strip(heatmap_indices(levels, band_valid), last=r1 == height)
        return _Strip(squared, values, hists_a, hists_b, cv2.countNonZero(levels), deflated)

    strips = parallel_map(strip, list(pairwise(rows)))
    # SSIM after the difference map: bands that see only identical rows are not filtered.
    score = ssim(
        a, b, data_range=data_range, mask=valid, keep_map=False, identical_rows=~changed_rows
    )
    palette = heatmap_palette()
    heatmap_png = palette_png(width, height, [s.deflated for s in strips], palette)
    preview_png = None
    if columns is not None:
        reduced = np.maximum.reduceat(columns, np.arange(0, height, factor), axis=0)
        preview_png = encode_palette_png(reduced - np.uint8(1), palette)

    sq = sum(s.squared_error for s in strips)
    values = sum(s.values for s in strips)
    psnr_db, mse = psnr_from_squared_error(sq, values, data_range=data_range)
    if mask_u8 is not None and values == 0:
        hist = 1.0
    else:
        hists_a = [
            np.sum(parts, axis=0) for parts in zip(*(s.hists_a for s in strips), strict=True)
        ]
        hists_b = [
            np.sum(parts, axis=0) for parts in zip(*(s.hists_b for s in strips), strict=True)
        ]
        hist = bhattacharyya_mean(hists_a, hists_b)
    return BandedMeasurement(
        ssim=score,
        psnr=psnr_db,
        mse=mse,
        histogram_similarity=hist,
        diff=diff,
        nonzero_pixels=sum(s.nonzero for s in strips),
        heatmap_png=heatmap_png,
        preview_png=preview_png,
    )

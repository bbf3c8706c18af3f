"""``compare``: the whole pipeline for one pair, bytes in, result and heatmap out.

Stages: decode both images (headers and limits first), harmonise them (same channels and bit
depth), optionally align B onto A, measure (SSIM, PSNR, histogram, difference map, regions),
decide a verdict, render the heatmap. The worker and the command line both call exactly this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import cv2
import numpy as np

from core.imaging.align import Alignment, estimate_alignment, is_identity, warp_into
from core.imaging.banded import measure_banded
from core.imaging.budget import check_pair
from core.imaging.decode import DecodedImage, decode, harmonise
from core.imaging.diffmap import difference_map
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.heatmap import render_heatmap, render_preview
from core.imaging.metrics import histogram_similarity, psnr, ssim
from core.imaging.options import CompareOptions, Rect
from core.imaging.parallel import parallel_map
from core.imaging.regions import Region, find_regions
from core.imaging.result import CompareResult
from core.imaging.verdict import VerdictInputs, classify

#: Direct verdicts that may be misregistration: only these are tried with alignment (auto mode)
#: or diagnosed for a transform (pixel mode). Identical pairs and localised edits never pay
#: for feature matching.
MISREGISTRATION_SUSPECTS = frozenset({"global_change", "different"})
#: The aligned comparison replaces the direct one only if it raises SSIM by at least this much.
AUTO_ALIGN_MIN_GAIN = 0.01
#: Pairs of at least this many pixels are measured band by band (``banded``): same results,
#: no whole-image temporaries; the heatmap and preview are then encoded in the same pass.
BANDED_MIN_PIXELS = 4_000_000


@dataclass
class _Measurement:
    """Scores of one pixel-wise comparison of two same-shape arrays over a valid mask."""

    ssim: float
    luminance: float
    contrast: float
    structure: float
    psnr: float | None
    mse: float
    histogram_similarity: float
    diff: np.ndarray
    valid: np.ndarray | None
    regions: list[Region]
    changed_pixels: int
    compared_pixels: int
    nonzero_pixels: int
    heatmap_png: bytes | None = None  # already encoded (banded pass)
    preview_png: bytes | None = None

    @property
    def changed_ratio(self) -> float:
        return self.changed_pixels / self.compared_pixels if self.compared_pixels else 0.0

    @property
    def nonzero_ratio(self) -> float:
        return self.nonzero_pixels / self.compared_pixels if self.compared_pixels else 0.0


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


def compare(a: bytes, b: bytes, options: CompareOptions | None = None) -> CompareResult:
    """Compare image B against reference image A.

    Parameters
    ----------
    a, b
        Encoded images (PNG, JPEG, WebP, TIFF, BMP or GIF).
    options
        How to compare; defaults to ``CompareOptions()`` (auto mode).

    Returns
    -------
    CompareResult
        Scores over the compared pixels, verdict, regions in A's pixel coordinates, and the
        heatmap PNG on A's pixel grid.

    Raises
    ------
    ImagingError
        With code ``empty_file``, ``unsupported_format``, ``corrupt_image``,
        ``image_too_large``, ``size_mismatch`` (pixel mode, different sizes) or
        ``alignment_failed`` (align mode, no trustworthy transform).
    """
    opts = options or CompareOptions()
    timer = _Timer()
    start = time.perf_counter()
    if opts.max_job_bytes is not None:  # refuse from the headers, before any pixel is decoded
        check_pair(
            a,
            b,
            max_bytes=opts.max_bytes,
            max_pixels=opts.max_pixels,
            budget_bytes=opts.max_job_bytes,
        )
    with timer.stage("decode"):
        # The two decodes run on two threads (the codecs release the GIL); A's error wins.
        image_a, image_b = parallel_map(lambda item: _decode(*item, opts), [(a, "a"), (b, "b")])
        pa, pb, data_range = harmonise(image_a.pixels, image_b.pixels)
    height, width = pa.shape[:2]
    ignored = _clip_rects(opts.ignore, width, height)
    job = _Job(pa, pb, data_range, _ignore_mask(ignored, width, height), opts, timer)
    if opts.mode == "pixel":
        m, alignment, verdict, summary = _compare_pixel(job)
    elif opts.mode == "align" or pa.shape != pb.shape:
        m, alignment, verdict, summary = _compare_aligned(job)
    else:
        m, alignment, verdict, summary = _compare_auto(job)

    with timer.stage("heatmap"):
        heatmap_png = m.heatmap_png or render_heatmap(m.diff, valid=m.valid)
        preview_png = (
            m.preview_png or render_preview(m.diff, valid=m.valid, max_side=opts.preview_max_side)
            if opts.preview_max_side is not None
            else None
        )
    timer.ms["total"] = (time.perf_counter() - start) * 1000.0
    return CompareResult(
        mode=opts.mode,
        width=width,
        height=height,
        bit_depth=16 if data_range > 255 else 8,
        ssim=m.ssim,
        ssim_luminance=m.luminance,
        ssim_contrast=m.contrast,
        ssim_structure=m.structure,
        psnr=m.psnr,
        mse=m.mse,
        histogram_similarity=m.histogram_similarity,
        changed_ratio=m.changed_ratio,
        changed_pixels=m.changed_pixels,
        compared_pixels=m.compared_pixels,
        tolerance=opts.tolerance,
        verdict=verdict,
        summary=summary,
        alignment=alignment,
        regions=m.regions,
        ignored=ignored,
        timings_ms=timer.ms,
        heatmap_png=heatmap_png,
        preview_png=preview_png,
    )


@dataclass
class _Job:
    """One comparison's harmonised inputs and settings, passed to the per-mode functions."""

    pa: np.ndarray
    pb: np.ndarray
    data_range: int
    ignore_mask: np.ndarray | None
    opts: CompareOptions
    timer: _Timer

    def measure(self, pb: np.ndarray, overlap: np.ndarray | None = None) -> _Measurement:
        return _measure(
            self.pa,
            pb,
            overlap,
            self.ignore_mask,
            self.data_range,
            self.opts.tolerance,
            self.timer,
            self.opts.preview_max_side,
        )

    def measure_aligned(self, alignment: Alignment) -> _Measurement:
        assert alignment.homography is not None
        with self.timer.stage("warp"):
            warped, overlap = warp_into(self.pb, alignment.homography, self.pa.shape[:2])
        return self.measure(warped, overlap)


_Outcome = tuple[_Measurement, Alignment, str, str]


def _compare_pixel(job: _Job) -> _Outcome:
    """Never warp; sizes must match. A suspected misregistration is diagnosed, not applied."""
    height, width = job.pa.shape[:2]
    if job.pa.shape != job.pb.shape:
        raise ImagingError(
            ErrorCode.SIZE_MISMATCH,
            f"pixel mode needs equal sizes: A is {width}x{height},"
            f" B is {job.pb.shape[1]}x{job.pb.shape[0]}; use auto or align mode",
        )
    alignment = _not_aligned("pixel mode never aligns")
    m = job.measure(job.pb)
    verdict, summary = _classify(m, alignment)
    if verdict in MISREGISTRATION_SUSPECTS:
        with job.timer.stage("align"):
            detected = _diagnose(job.pa, job.pb)
        if detected is not None:
            verdict, summary = _classify(m, alignment, detected)
            alignment = replace(detected, applied=False, reason="pixel mode: not applied")
    return m, alignment, verdict, summary


def _compare_aligned(job: _Job) -> _Outcome:
    """Align B onto A first (align mode, or auto mode with different sizes)."""
    with job.timer.stage("align"):
        alignment = estimate_alignment(job.pa, job.pb)
    if alignment.applied:
        m = job.measure_aligned(alignment)
    elif job.opts.mode == "align":
        raise ImagingError(
            ErrorCode.ALIGNMENT_FAILED, f"no trustworthy transform: {alignment.reason}"
        )
    else:
        alignment = _not_aligned(
            f"{alignment.reason}; B was resized to A's size to compare what can be compared"
        )
        height, width = job.pa.shape[:2]
        with job.timer.stage("align"):
            resized = cv2.resize(job.pb, (width, height), interpolation=cv2.INTER_AREA)
        m = job.measure(resized)
    return (m, alignment, *_classify(m, alignment))


def _compare_auto(job: _Job) -> _Outcome:
    """Compare directly; align only when the direct verdict suggests misregistration and a
    confident, non-identity transform improves SSIM by at least ``AUTO_ALIGN_MIN_GAIN``."""
    alignment = _not_aligned("not needed: the direct comparison shows no misregistration")
    m = job.measure(job.pb)
    verdict, summary = _classify(m, alignment)
    if verdict not in MISREGISTRATION_SUSPECTS:
        return m, alignment, verdict, summary
    with job.timer.stage("align"):
        candidate = estimate_alignment(job.pa, job.pb)
    if not candidate.applied or candidate.homography is None:
        return m, _not_aligned(f"tried: {candidate.reason}"), verdict, summary
    if is_identity(candidate.homography, job.pa.shape[:2]):
        return m, _not_aligned("tried: the best transform is the identity"), verdict, summary
    aligned = job.measure_aligned(candidate)
    if aligned.ssim < m.ssim + AUTO_ALIGN_MIN_GAIN:
        reason = "tried: aligning did not improve the comparison"
        return m, _not_aligned(reason), verdict, summary
    return (aligned, candidate, *_classify(aligned, candidate))


def _decode(data: bytes, name: str, opts: CompareOptions) -> DecodedImage:
    try:
        return decode(data, max_bytes=opts.max_bytes, max_pixels=opts.max_pixels)
    except ImagingError as exc:
        raise exc.with_image(name) from exc


def _measure(
    pa: np.ndarray,
    pb: np.ndarray,
    overlap: np.ndarray | None,
    ignore_mask: np.ndarray | None,
    data_range: int,
    tolerance: float,
    timer: _Timer,
    preview_max_side: int | None = None,
) -> _Measurement:
    """Compare two same-shape arrays over ``overlap`` minus ``ignore_mask``.

    Pixels outside the compared area are first copied from A into B, so they neither count
    as differences nor disturb the SSIM windows of their neighbours.
    """
    valid = _valid_mask(overlap, ignore_mask)
    if valid is not None:
        pb = pb.copy()
        np.copyto(pb, pa, where=~valid[..., None])
    banded = None
    with timer.stage("metrics"):
        if pa.shape[0] * pa.shape[1] >= BANDED_MIN_PIXELS:
            banded = measure_banded(
                pa, pb, data_range=data_range, valid=valid, preview_max_side=preview_max_side
            )
            s, psnr_db, mse = banded.ssim, banded.psnr, banded.mse
            hist = banded.histogram_similarity
        else:
            s = ssim(pa, pb, data_range=data_range, mask=valid)
            psnr_db, mse = psnr(pa, pb, data_range=data_range, mask=valid)
            hist = histogram_similarity(pa, pb, data_range=data_range, mask=valid)
    with timer.stage("regions"):
        diff = banded.diff if banded is not None else difference_map(pa, pb)
        threshold = int(np.floor(tolerance * 255.0 + 1e-9))
        regions, changed = find_regions(diff, threshold=threshold, valid=valid)
        compared = int(np.count_nonzero(valid)) if valid is not None else diff.size
        nonzero = banded.nonzero_pixels if banded is not None else cv2.countNonZero(diff)
    return _Measurement(
        ssim=s.score,
        luminance=s.luminance,
        contrast=s.contrast,
        structure=s.structure,
        psnr=psnr_db,
        mse=mse,
        histogram_similarity=hist,
        diff=diff,
        valid=valid,
        regions=regions,
        changed_pixels=changed,
        compared_pixels=compared,
        nonzero_pixels=int(nonzero),
        heatmap_png=None if banded is None else banded.heatmap_png,
        preview_png=None if banded is None else banded.preview_png,
    )


def _classify(
    m: _Measurement, alignment: Alignment, detected: Alignment | None = None
) -> tuple[str, str]:
    return classify(
        VerdictInputs(
            identical_pixels=m.psnr is None,
            ssim=m.ssim,
            luminance=m.luminance,
            contrast=m.contrast,
            structure=m.structure,
            changed_ratio=m.changed_ratio,
            nonzero_ratio=m.nonzero_ratio,
            changed_pixels=m.changed_pixels,
            compared_pixels=m.compared_pixels,
            regions=m.regions,
            alignment=alignment,
            detected_misregistration=detected,
        )
    )


def _diagnose(pa: np.ndarray, pb: np.ndarray) -> Alignment | None:
    """In pixel mode: find (not apply) a non-identity transform that explains the differences."""
    found = estimate_alignment(pa, pb)
    if not found.applied or found.homography is None:
        return None
    if is_identity(found.homography, pa.shape[:2]):
        return None
    return found


def _not_aligned(reason: str) -> Alignment:
    return Alignment(
        applied=False,
        method=None,
        homography=None,
        inliers=0,
        inlier_ratio=0.0,
        reprojection_error=None,
        translation=None,
        rotation_deg=None,
        scale=None,
        overlap_ratio=None,
        reason=reason,
    )


def _clip_rects(rects: tuple[Rect, ...], width: int, height: int) -> list[Rect]:
    """Clip ignore rectangles to the image; drop those entirely outside."""
    out: list[Rect] = []
    for x, y, w, h in rects:
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1 - x0, y1 - y0))
    return out


def _ignore_mask(rects: list[Rect], width: int, height: int) -> np.ndarray | None:
    if not rects:
        return None
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in rects:
        mask[y : y + h, x : x + w] = True
    return mask


def _valid_mask(overlap: np.ndarray | None, ignore_mask: np.ndarray | None) -> np.ndarray | None:
    if ignore_mask is None:
        return overlap
    keep = ~ignore_mask
    return keep if overlap is None else overlap & keep

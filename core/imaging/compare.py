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

from core.imaging.align.estimate import estimate_alignment
from core.imaging.align.geometry import is_identity
from core.imaging.align.result import Alignment
from core.imaging.align.warp import warp_into
from core.imaging.banded import measure_banded
from core.imaging.budget import check_pair
from core.imaging.decode import DecodedImage, decode, harmonise
from core.imaging.diffmap import difference_map
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.findings import (
    Finding,
    classify_region,
    edit_finding,
    file_findings,
    pixel_findings,
)
from core.imaging.heatmap import render_heatmap, render_preview
from core.imaging.metrics import histogram_similarity, psnr, ssim
from core.imaging.noise import antialiased_masks, resampled_mask
from core.imaging.options import CompareOptions, Rect
from core.imaging.parallel import parallel_map
from core.imaging.regions import (
    MERGE_GAP_KERNELS,
    Region,
    box_gap,
    closing_kernel_size,
    find_regions,
    merge_nearby,
    significant_regions,
)
from core.imaging.result import CompareResult
from core.imaging.verdict import (
    IDENTICAL_MAX_CHANGED,
    IDENTICAL_MIN_SSIM,
    LOCAL_MAX_EXTENT,
    THUMB_SIDE,
    VerdictInputs,
    classify,
    rest_ssim,
)

#: Direct verdicts that may be misregistration: only these are tried with alignment (auto mode)
#: or diagnosed for a transform (pixel mode). Identical pairs and localised edits never pay
#: for feature matching.
MISREGISTRATION_SUSPECTS = frozenset({"global_change", "different"})
#: The aligned comparison replaces the direct one only if it raises SSIM by at least this much.
AUTO_ALIGN_MIN_GAIN = 0.01
#: An "identical" direct verdict with more anti-aliased pixels than this share may be a
#: misregistration of about a pixel: it is checked like the suspects above.
AA_SUSPECT_RATIO = 0.005
#: A mirrored B is adopted when its thumbnail correlation with A reaches this...
FLIP_MIN_CORRELATION = 0.95
#: ... and beats the direct comparison's by this much.
FLIP_MIN_GAIN = 0.02
#: At most this many significant regions are classified (the verdict names up to 12).
MAX_CLASSIFIED_REGIONS = 32
#: A region is an edit only when its own SSIM is at least this much below the rest's.
REGION_MIN_SSIM_DROP = 0.15
#: On a pair with a global residual, a region's mean difference must reach this many tolerances.
NOISY_MIN_MEAN_DIFF = 2.0
#: The flips tried: name, and the axes of ``numpy.flip``.
_FLIPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("horizontal", (1,)),
    ("vertical", (0,)),
    ("both", (0, 1)),
)
#: Pairs of at least this many pixels are measured band by band (``banded``): same results,
#: no whole-image temporaries; the heatmap and preview are then encoded in the same pass.
BANDED_MIN_PIXELS = 4_000_000
#: A significant region takes the extent of the edge-test region it lies in (``_whole_extents``)
#: when that region's box is at most this many times the box of the regions inside it.
EXTENT_GROWTH = 4.0
#: The rendering floor (``_rendering_floor``) is estimated only when rendering noise dominates:
#: at least this share of the compared pixels anti-aliased ...
RENDER_MIN_NOISE = 0.01
#: ... and at least this many times the pixels still changed.
RENDER_NOISE_DOMINANCE = 3.0
#: The sub-pixel offset (px, along both axes) of the rendering floor's copy of A.
RENDER_SHIFT_PX = 0.25


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
    antialiased_pixels: int
    content_correlation: float
    filters: list[Finding]
    ssim_floor: float | None = None
    pb: np.ndarray | None = None
    heatmap_png: bytes | None = None  # already encoded (banded pass)
    preview_png: bytes | None = None
    antialiased: np.ndarray | None = None  # bool HxW: drawn magenta on the heatmap
    tolerance_level: int = 0

    @property
    def antialiased_ratio(self) -> float:
        return self.antialiased_pixels / self.compared_pixels if self.compared_pixels else 0.0

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

    with timer.stage("findings"):
        regions = m.regions
        findings = _findings(a, b, image_a.pixels.shape, image_b.pixels.shape, m, alignment)
        edits = edit_finding(regions)
        if edits is not None and verdict == "localized_edit":
            findings.append(edits)
    with timer.stage("heatmap"):
        # The banded pass encodes both PNGs on the way; anti-aliased pixels are known only
        # after it, and then the PNGs are drawn again with them in magenta.
        aa = m.antialiased
        heatmap_png = (m.heatmap_png if aa is None else None) or render_heatmap(
            m.diff, valid=m.valid, antialiased=aa
        )
        preview_png = (
            (m.preview_png if aa is None else None)
            or render_preview(
                m.diff,
                valid=m.valid,
                max_side=opts.preview_max_side,
                antialiased=aa,
                tolerance_level=m.tolerance_level,
            )
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
        antialiased_ratio=m.antialiased_ratio,
        antialiased_pixels=m.antialiased_pixels,
        content_correlation=m.content_correlation,
        ssim_floor=m.ssim_floor,
        findings=findings,
        verdict=verdict,
        summary=summary,
        alignment=alignment,
        regions=regions,
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
            antialiasing=self.opts.antialiasing,
            preview_max_side=self.opts.preview_max_side,
        )

    def measure_aligned(self, alignment: Alignment) -> _Measurement:
        assert alignment.homography is not None
        with self.timer.stage("warp"):
            warped, overlap = warp_into(self.pb, alignment.homography, self.pa.shape[:2])
            # B's own outermost pixels may blend with the fill of whoever warped it: one more
            # pixel of the overlap's rim is not compared.
            rim = np.ones((3, 3), np.uint8)
            overlap = (
                cv2.erode(
                    np.ascontiguousarray(overlap).view(np.uint8),
                    rim,
                    borderType=cv2.BORDER_CONSTANT,
                    borderValue=0,
                )
                > 0
            )
            resampled_a = _round_trip(self.pa, alignment.homography, self.pb.shape[:2])
        m = _measure(
            self.pa,
            warped,
            overlap,
            self.ignore_mask,
            self.data_range,
            self.opts.tolerance,
            self.timer,
            antialiasing=self.opts.antialiasing,
            resampled_a=resampled_a,
        )
        with self.timer.stage("metrics"):
            m.ssim_floor = ssim(
                self.pa, resampled_a, data_range=self.data_range, mask=m.valid
            ).score
        return m

    def measure_flipped(self) -> tuple[_Measurement, Alignment] | None:
        """B mirrored back, when a mirror explains it far better than the direct comparison."""
        if self.pa.shape != self.pb.shape:
            return None
        direct = _correlation(self.pa, self.pb, None)
        best: tuple[float, str, tuple[int, ...]] | None = None
        for name, axes in _FLIPS:
            score = _correlation(self.pa, np.flip(self.pb, axis=axes), None)
            if best is None or score > best[0]:
                best = (score, name, axes)
        assert best is not None
        score, name, axes = best
        if score < FLIP_MIN_CORRELATION or score < direct + FLIP_MIN_GAIN:
            return None
        flipped = np.ascontiguousarray(np.flip(self.pb, axis=axes))
        return self.measure(flipped), _flip_alignment(name, self.pa.shape[:2])


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
    if _suspect(verdict, m):
        with job.timer.stage("align"):
            flipped = job.measure_flipped()
            detected = flipped[1] if flipped is not None else _diagnose(job.pa, job.pb)
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
    if not _suspect(verdict, m):
        return m, alignment, verdict, summary
    with job.timer.stage("align"):
        flipped = job.measure_flipped()
    if flipped is not None and flipped[0].ssim >= m.ssim + AUTO_ALIGN_MIN_GAIN:
        return (flipped[0], flipped[1], *_classify(*flipped))
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
    *,
    antialiasing: bool = True,
    resampled_a: np.ndarray | None = None,
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
        counted = valid
        antialiased = 0
        noise = edges = None
        if antialiasing:
            over = diff > threshold
            if valid is not None:
                over &= valid
            noise, edges = antialiased_masks(pa, pb, over, threshold=threshold)
            if resampled_a is not None:
                resampled = resampled_mask(pb, resampled_a, over, threshold=threshold)
                noise |= resampled
                edges |= resampled
            antialiased = int(np.count_nonzero(noise))
            if antialiased:
                counted = ~noise if valid is None else valid & ~noise
        found, changed = find_regions(diff, threshold=threshold, valid=counted)
        compared = int(np.count_nonzero(valid)) if valid is not None else diff.size
        regions: list[Region] = []
        if found:
            evidence = diff > threshold
            if valid is not None:
                evidence &= valid
            regions = significant_regions(found, evidence, valid)
            if regions and noise is not None and edges is not None and antialiased:
                regions = _whole_extents(regions, diff, threshold, valid, edges)
            regions = [_with_kind(pa, pb, r) for r in regions[:MAX_CLASSIFIED_REGIONS]]
            regions = _stand_out(regions, s.score, compared, tolerance)
        nonzero = banded.nonzero_pixels if banded is not None else cv2.countNonZero(diff)
        correlation = _correlation(pa, pb, _without(valid, regions, diff.shape))
    with timer.stage("findings"):
        filters = pixel_findings(pa, pb, valid) if nonzero else []
    floor = None
    if resampled_a is None and not regions and compared:
        floor = _rendering_floor(
            pa, s.score, changed / compared, antialiased / compared, valid, data_range
        )
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
        antialiased_pixels=antialiased,
        content_correlation=correlation,
        filters=filters,
        pb=pb,
        heatmap_png=None if banded is None else banded.heatmap_png,
        preview_png=None if banded is None else banded.preview_png,
        antialiased=noise if antialiased else None,
        tolerance_level=threshold,
        ssim_floor=floor,
    )


def _whole_extents(
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
    words of a changed line), and the grown regions are merged as ``significant_regions`` does.
    """
    counted = ~edges if valid is None else valid & ~edges
    strict, _ = find_regions(diff, threshold=threshold, valid=counted)
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
            more = [w for w in strict if w not in meeting and box_gap(grown, w) <= gap]
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


def _rendering_floor(
    pa: np.ndarray,
    score: float,
    changed_ratio: float,
    noise_ratio: float,
    valid: np.ndarray | None,
    data_range: int,
) -> float | None:
    """SSIM of A against A moved by ``RENDER_SHIFT_PX`` px (bilinear): what rendering the same
    content a fraction of a pixel away costs (another glyph positioning, device scale or
    transform), the floor below which an otherwise unchanged re-rendered page cannot go.

    Estimated only where it can decide the verdict: no significant region, few pixels still
    changed, SSIM below ``IDENTICAL_MIN_SSIM``, and rendering noise dominating the changed
    pixels (``RENDER_MIN_NOISE``, ``RENDER_NOISE_DOMINANCE``); else None.
    """
    if (
        score >= IDENTICAL_MIN_SSIM
        or changed_ratio > IDENTICAL_MAX_CHANGED
        or noise_ratio < RENDER_MIN_NOISE
        or noise_ratio < RENDER_NOISE_DOMINANCE * changed_ratio
    ):
        return None
    shift = np.array([[1.0, 0.0, RENDER_SHIFT_PX], [0.0, 1.0, RENDER_SHIFT_PX]], np.float32)
    moved = cv2.warpAffine(
        pa,
        shift,
        (pa.shape[1], pa.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    moved = np.asarray(moved)
    if moved.ndim < pa.ndim:
        moved = moved[..., None]
    return ssim(pa, moved, data_range=data_range, mask=valid, keep_map=False).score


def _classify(
    m: _Measurement, alignment: Alignment, detected: Alignment | None = None
) -> tuple[str, str]:
    return classify(
        VerdictInputs(
            identical_pixels=m.psnr is None,
            ssim=m.ssim,
            changed_ratio=m.changed_ratio,
            antialiased_ratio=m.antialiased_ratio,
            changed_pixels=m.changed_pixels,
            compared_pixels=m.compared_pixels,
            regions=m.regions,
            alignment=alignment,
            content_correlation=m.content_correlation,
            ssim_floor=m.ssim_floor,
            filters=tuple(f.kind for f in m.filters),
            detected_misregistration=detected,
        )
    )


def _suspect(verdict: str, m: _Measurement) -> bool:
    """Whether a direct verdict may be misregistration (worth trying flips and alignment)."""
    if verdict in MISREGISTRATION_SUSPECTS:
        return True
    return verdict in ("identical", "localized_edit") and m.antialiased_ratio > AA_SUSPECT_RATIO


def _correlation(pa: np.ndarray, pb: np.ndarray, valid: np.ndarray | None) -> float:
    """Pearson correlation (-1..1) of grey thumbnails of A and B over the compared pixels.

    Thumbnails have a longer side of ``THUMB_SIDE`` px (area averaging); only thumbnail
    pixels wholly inside ``valid`` count. Flat images (no variance) correlate 1 when their
    means agree within 2 % of the range, else 0.
    """
    height, width = pa.shape[:2]
    k = THUMB_SIDE / max(height, width)
    size = (max(1, round(width * k)), max(1, round(height * k)))
    scale = 1.0 / 257.0 if pa.dtype == np.uint16 else 1.0

    def thumb(img: np.ndarray) -> np.ndarray:
        grey = img[..., :3].astype(np.float32).mean(axis=2) * scale
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    ta, tb = thumb(pa), thumb(pb)
    if valid is not None:
        keep = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.999
        ta, tb = ta[keep], tb[keep]
    ta, tb = ta.ravel().astype(np.float64), tb.ravel().astype(np.float64)
    if ta.size < 2:
        return 0.0
    sa, sb = float(ta.std()), float(tb.std())
    if sa < 1e-3 or sb < 1e-3:
        return 1.0 if abs(float(ta.mean()) - float(tb.mean())) <= 0.02 * 255 else 0.0
    return float(np.mean((ta - ta.mean()) * (tb - tb.mean())) / (sa * sb))


def _round_trip(pa: np.ndarray, homography: np.ndarray, b_shape: tuple[int, int]) -> np.ndarray:
    """A resampled into B's frame (bilinear, as most editors resample) and back onto A's grid
    with ``warp_into``: what an untouched, warped copy of A looks like after alignment. Its
    SSIM against A is the resampling floor (``ssim_floor``)."""
    height, width = b_shape
    inverse = np.linalg.inv(homography)
    there = cv2.warpPerspective(
        pa, inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if there.ndim == 2:
        there = there[..., None]
    back, _ = warp_into(np.ascontiguousarray(there), homography, pa.shape[:2])
    return back


def _flip_alignment(axis: str, shape: tuple[int, int]) -> Alignment:
    height, width = shape
    h = np.eye(3)
    if axis in ("horizontal", "both"):
        h[0, 0], h[0, 2] = -1.0, width - 1.0
    if axis in ("vertical", "both"):
        h[1, 1], h[1, 2] = -1.0, height - 1.0
    h.flags.writeable = False
    return Alignment(
        applied=True,
        method=f"flip-{axis}",
        homography=h,
        inliers=0,
        inlier_ratio=0.0,
        reprojection_error=None,
        translation=None,
        rotation_deg=180.0 if axis == "both" else None,
        scale=1.0,
        overlap_ratio=1.0,
        reason=None,
    )


def _stand_out(
    regions: list[Region], score: float, compared: int, tolerance: float
) -> list[Region]:
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
            if (r.ssim is None or r.ssim <= rest - REGION_MIN_SSIM_DROP) and r.mean_diff >= floor
        ]
    return kept


def _without(
    valid: np.ndarray | None, regions: list[Region], shape: tuple[int, ...]
) -> np.ndarray | None:
    """``valid`` minus the regions' boxes when they are local (together at most
    ``LOCAL_MAX_EXTENT`` of the image): local edits must not lower the content correlation."""
    covered = sum(r.width * r.height for r in regions)
    if not regions or covered > LOCAL_MAX_EXTENT * shape[0] * shape[1]:
        return valid
    keep = np.ones(shape[:2], dtype=bool) if valid is None else valid.copy()
    for r in regions:
        keep[r.y : r.y + r.height, r.x : r.x + r.width] = False
    return keep if keep.any() else valid


def _with_kind(pa: np.ndarray, pb: np.ndarray, region: Region) -> Region:
    """The region with its kind and local SSIM filled in."""
    kind, local = classify_region(pa, pb, region)
    return replace(region, kind=kind, ssim=local)


def _findings(
    a: bytes,
    b: bytes,
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    m: _Measurement,
    alignment: Alignment,
) -> list[Finding]:
    found = file_findings(
        a_bytes=a,
        b_bytes=b,
        a_size=(a_shape[1], a_shape[0]),
        b_size=(b_shape[1], b_shape[0]),
        alignment=alignment,
    )
    found.extend(m.filters)
    if m.antialiased_pixels:
        found.append(
            Finding(
                "antialiasing",
                min(1.0, m.antialiased_ratio / 0.001),
                {"ratio": m.antialiased_ratio, "pixels": m.antialiased_pixels},
            )
        )
    return found


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

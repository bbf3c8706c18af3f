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
from core.imaging.align.result import Alignment, failed_alignment
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
from core.imaging.floors import rendering_floor, round_trip
from core.imaging.header import read_header
from core.imaging.heatmap import render_heatmap, render_preview
from core.imaging.metrics import histogram_similarity, psnr, ssim
from core.imaging.misregistration import (
    FLIP_MIN_CORRELATION,
    FLIP_MIN_GAIN,
    FLIPS,
    diagnose,
    flip_alignment,
    thumbnail_correlation,
)
from core.imaging.noise import antialiased_masks, resampled_mask
from core.imaging.options import CompareOptions, Rect
from core.imaging.parallel import parallel_map
from core.imaging.regions import (
    Region,
    find_regions,
    significant_regions,
)
from core.imaging.rerendering import (
    RERENDER_PAIR_SLACK,
    dissolves_when_blurred,
    region_dissolves,
    rendering_dominates,
)
from core.imaging.result import CompareResult
from core.imaging.significance import local_holes, stand_out, whole_extents
from core.imaging.verdict import (
    FILTER_MIN_CONFIDENCE,
    VerdictInputs,
    classify,
    rendered_again,
)

#: Direct verdicts that may be misregistration: only these are tried with alignment (auto mode)
#: or diagnosed for a transform (pixel mode). Identical pairs and localised edits never pay
#: for feature matching.
MISREGISTRATION_SUSPECTS = frozenset({"global_change", "different"})
#: ... and so is a localised edit whose regions cover at least this share of the image: a
#: slightly rotated or rescaled copy matches near the centre and differs in broad areas
#: towards the edges. The alignment is adopted only if it raises SSIM (AUTO_ALIGN_MIN_GAIN).
LOCAL_SUSPECT_COVERAGE = 0.10
#: The aligned comparison replaces the direct one only if it raises SSIM by at least this much.
AUTO_ALIGN_MIN_GAIN = 0.01
#: An "identical" direct verdict with more anti-aliased pixels than this share may be a
#: misregistration of about a pixel: it is checked like the suspects above.
AA_SUSPECT_RATIO = 0.005
#: At most this many significant regions are classified (the verdict names up to 12).
MAX_CLASSIFIED_REGIONS = 32
#: Pairs of at least this many pixels are measured band by band (``banded``): same results,
#: no whole-image temporaries; the heatmap and preview are then encoded in the same pass.
BANDED_MIN_PIXELS = 4_000_000
#: Images of more pixels than this are decoded one after the other, not on two threads: a
#: decoder holds about twice its decoded image at its peak (OpenCV's PNG decoder, measured),
#: and two at once would set the job's peak memory.
PARALLEL_DECODE_MAX_PIXELS = 16_000_000


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
    #: Every region dissolved when both images were blurred, and the whole page with them
    #: (``core.imaging.rerendering``): the same page rendered again.
    rerendered: bool = False

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
        # The two decodes run on two threads (the codecs release the GIL); A's error wins. A
        # decoder holds about twice its image while it works, so big images go one at a time.
        items = [(a, "a"), (b, "b")]
        if max(_header_pixels(a, opts), _header_pixels(b, opts)) > PARALLEL_DECODE_MAX_PIXELS:
            image_a, image_b = (_decode(*item, opts) for item in items)
        else:
            image_a, image_b = parallel_map(lambda item: _decode(*item, opts), items)
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
            resampled_a = round_trip(self.pa, alignment.homography, self.pb.shape[:2])
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
        direct = thumbnail_correlation(self.pa, self.pb, None)
        best: tuple[float, str, tuple[int, ...]] | None = None
        for name, axes in FLIPS:
            score = thumbnail_correlation(self.pa, np.flip(self.pb, axis=axes), None)
            if best is None or score > best[0]:
                best = (score, name, axes)
        assert best is not None
        score, name, axes = best
        if score < FLIP_MIN_CORRELATION or score < direct + FLIP_MIN_GAIN:
            return None
        flipped = np.ascontiguousarray(np.flip(self.pb, axis=axes))
        return self.measure(flipped), flip_alignment(name, self.pa.shape[:2])


_Outcome = tuple[_Measurement, Alignment, str, str]


def _compare_pixel(job: _Job) -> _Outcome:
    """Never warp; sizes must match. A suspected misregistration is diagnosed, not applied:
    ``misaligned`` when a flip or a transform would raise SSIM as auto mode requires."""
    height, width = job.pa.shape[:2]
    if job.pa.shape != job.pb.shape:
        raise ImagingError(
            ErrorCode.SIZE_MISMATCH,
            f"pixel mode needs equal sizes: A is {width}x{height},"
            f" B is {job.pb.shape[1]}x{job.pb.shape[0]}; use auto or align mode",
        )
    alignment = failed_alignment("pixel mode never aligns")
    m = job.measure(job.pb)
    verdict, summary = _classify(m, alignment)
    if _suspect(verdict, m):
        # Misregistration only where auto mode would align: a transform whose warp raises SSIM
        # by AUTO_ALIGN_MIN_GAIN. A page rendered again fits a sub-pixel similarity that
        # explains nothing (its glyphs differ, not their places).
        with job.timer.stage("align"):
            flipped = job.measure_flipped()
            if flipped is not None:
                detected = flipped[1] if flipped[0].ssim >= m.ssim + AUTO_ALIGN_MIN_GAIN else None
            else:
                detected = diagnose(job.pa, job.pb)
        rendered = False
        if detected is not None and flipped is None:
            aligned = job.measure_aligned(detected)
            if aligned.ssim >= m.ssim + AUTO_ALIGN_MIN_GAIN:
                # Warped, is B the same page rendered again (glyphs rasterised otherwise)?
                rendered = rendered_again(_verdict_inputs(aligned, detected))
            else:
                detected = None
        if detected is not None:
            verdict, summary = _classify(m, alignment, detected, rendered_when_aligned=rendered)
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
        alignment = failed_alignment(
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
    alignment = failed_alignment("not needed: the direct comparison shows no misregistration")
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
        return m, failed_alignment(f"tried: {candidate.reason}"), verdict, summary
    if is_identity(candidate.homography, job.pa.shape[:2]):
        return m, failed_alignment("tried: the best transform is the identity"), verdict, summary
    aligned = job.measure_aligned(candidate)
    if aligned.ssim < m.ssim + AUTO_ALIGN_MIN_GAIN:
        reason = "tried: aligning did not improve the comparison"
        return m, failed_alignment(reason), verdict, summary
    return (aligned, candidate, *_classify(aligned, candidate))


def _header_pixels(data: bytes, opts: CompareOptions) -> int:
    """Pixels the header of ``data`` announces; 0 when it is refused (the decode says why)."""
    try:
        header = read_header(data, max_bytes=opts.max_bytes, max_pixels=opts.max_pixels)
    except ImagingError:
        return 0
    return header.width * header.height


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
        antialiased = 0
        noise = edges = None
        over = diff > threshold  # the changed pixels (also the evidence of significance)
        if valid is not None:
            over &= valid
        if antialiasing:
            noise, edges = antialiased_masks(pa, pb, over, threshold=threshold)
            if resampled_a is not None:
                resampled = resampled_mask(pb, resampled_a, over, threshold=threshold)
                noise |= resampled
                edges |= resampled
                del resampled
            antialiased = int(np.count_nonzero(noise))
        found, changed = find_regions(
            diff, threshold=threshold, valid=valid, exclude=noise if antialiased else None
        )
        compared = int(np.count_nonzero(valid)) if valid is not None else diff.size
        # a page rendered again? (core.imaging.rerendering; the blur test applies only there)
        rendering = bool(
            antialiasing
            and compared
            and rendering_dominates(antialiased / compared, changed / compared)
        )
        regions: list[Region] = []
        dissolved = 0  # regions the blur test explained as glyphs rendered again
        if found:
            regions = significant_regions(found, over, valid)
            if regions and noise is not None and edges is not None and antialiased:
                regions = whole_extents(regions, diff, threshold, valid, edges)
            edges = None  # the edge test's mask is no longer needed: free it before the rest
            regions = [_with_kind(pa, pb, r) for r in regions[:MAX_CLASSIFIED_REGIONS]]
            regions = stand_out(regions, s.score, compared, tolerance)
            if rendering and regions:
                level = threshold * data_range / 255
                kept = [r for r in regions if not region_dissolves(pa, pb, r, level)]
                dissolved, regions = len(regions) - len(kept), kept
        nonzero = banded.nonzero_pixels if banded is not None else cv2.countNonZero(diff)
        correlation = thumbnail_correlation(pa, pb, valid, holes=local_holes(regions, diff.shape))
    with timer.stage("findings"):
        filters = pixel_findings(pa, pb, valid) if nonzero else []
    floor = None
    if resampled_a is None and not regions and compared:
        floor = rendering_floor(
            pa, s.score, changed / compared, antialiased / compared, valid, data_range
        )
    rerendered = False
    if dissolved and not regions:  # every region was glyphs rendered again: the whole page?
        level = RERENDER_PAIR_SLACK * threshold * data_range / 255
        x, y, w, h = cv2.boundingRect(over.view(np.uint8))
        rerendered = dissolves_when_blurred(pa, pb, level, box=(x, y, w, h))
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
        rerendered=rerendered,
    )


def _classify(
    m: _Measurement,
    alignment: Alignment,
    detected: Alignment | None = None,
    *,
    rendered_when_aligned: bool = False,
) -> tuple[str, str]:
    return classify(_verdict_inputs(m, alignment, detected, rendered_when_aligned))


def _verdict_inputs(
    m: _Measurement,
    alignment: Alignment,
    detected: Alignment | None = None,
    rendered_when_aligned: bool = False,
) -> VerdictInputs:
    return VerdictInputs(
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
        rerendered=m.rerendered,
        filters=tuple(f.kind for f in m.filters if f.confidence >= FILTER_MIN_CONFIDENCE),
        detected_misregistration=detected,
        rendered_again_when_aligned=rendered_when_aligned,
    )


def _suspect(verdict: str, m: _Measurement) -> bool:
    """Whether a direct verdict may be misregistration (worth trying flips and alignment)."""
    if verdict in MISREGISTRATION_SUSPECTS:
        return True
    if verdict == "localized_edit" and _coverage(m) >= LOCAL_SUSPECT_COVERAGE:
        return True
    return verdict in ("identical", "localized_edit") and m.antialiased_ratio > AA_SUSPECT_RATIO


def _coverage(m: _Measurement) -> float:
    """Share of the compared image (0..1) covered by the boxes of the regions."""
    covered = sum(r.width * r.height for r in m.regions)
    return covered / m.compared_pixels if m.compared_pixels else 0.0


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

"""Turn scores and the shape of the differences into a verdict and a sentence a person can act on.

SSIM alone cannot separate the cases: a brightness shift lights every pixel yet keeps SSIM's
structure term high; a pasted patch is concentrated; compression is spread thin. The rules below
use where and how the differences fall. The thresholds are constants tuned on generated cases
(``tests/core/imaging/test_verdict.py`` holds them):

=================  ===========================================================================
verdict            rule (first match wins)
=================  ===========================================================================
identical          no compared pixel differs; or no significant region (``regions``: already
                   tested against the pair's noise floor), at most IDENTICAL_MAX_CHANGED of
                   the pixels changed beyond the tolerance (anti-aliased pixels are not
                   changes) and SSIM at least IDENTICAL_MIN_SSIM, or, for an aligned pair, at
                   least the resampling floor minus FLOOR_MARGIN (``ssim_floor``: SSIM of A
                   against A resampled there and back with the same transform, so an aligned
                   but otherwise untouched copy is identical; for an unaligned pair whose
                   differences are mostly rendering noise, SSIM of A against A moved a
                   quarter pixel, so a page rendered again is identical; or, for such a
                   pair, when its differences dissolve once both images are blurred by 2 px:
                   ``rerendered``, see ``core.imaging.rerendering``)
localized_edit     significant regions whose boxes cover at most LOCAL_MAX_EXTENT of the
                   image, with at most LOCAL_MAX_SPREAD of the pixels changed outside them,
                   on a pair that shows the same picture (``content_correlation`` >=
                   SAME_PICTURE_MIN)
misaligned         no alignment was applied, yet a non-identity transform (or a mirror)
                   maps B onto A, and warping by it raises SSIM by
                   ``compare.AUTO_ALIGN_MIN_GAIN`` (as auto mode requires before it aligns);
                   unless B so warped would be identical only as a page rendered again
                   (``rendered_again``): then ``identical``, "the same page rendered again"
different          the same layout, but at least DIFFERENT_MIN_REGIONS significant regions that
                   are not a localised edit (another page of one layout)
global_change      the same picture (``content_correlation`` >= SAME_PICTURE_MIN), changed
                   everywhere by compression, resampling or a filter (brightness, colour, blur)
different          anything else: the content itself differs
=================  ===========================================================================

``content_correlation`` is the Pearson correlation of the two images' grey thumbnails (longer
side ``THUMB_SIDE`` px, compared pixels only): about 1 for any re-encode, tone or colour change
and for local edits, near 0 for unrelated pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.imaging.align.result import Alignment
from core.imaging.regions import Region

IDENTICAL_MIN_SSIM = 0.99
IDENTICAL_MAX_CHANGED = 0.02
#: An aligned pair is identical down to this much below its resampling floor SSIM.
FLOOR_MARGIN = 0.01
LOCAL_MAX_EXTENT = 0.35
LOCAL_MAX_SPREAD = 0.02
#: Most regions named in a localised verdict.
LOCAL_MAX_REGIONS = 12
#: A pair of one layout (thumbnails that correlate) whose significant regions are at least this
#: many and not a localised edit is ``different``: each region already stood out from the pair's
#: noise (``significance.stand_out``), and a global filter leaves at most a couple (strong
#: edges of a blurred photograph); many separate content differences are other content, such
#: as another page of the same layout.
DIFFERENT_MIN_REGIONS = 5
#: Two images whose grey thumbnails correlate at least this much show the same picture.
SAME_PICTURE_MIN = 0.9
#: Outside its regions, a localised edit's pair must match at least this well (SSIM estimated
#: from the whole and the regions' own SSIM), or its resampling floor minus FLOOR_MARGIN.
LOCAL_MIN_REST_SSIM = 0.9
#: Pixel findings that name a global filter: with one of them an unaligned pair is never
#: ``identical`` (a colour shift of a smooth picture keeps SSIM near 1 yet is not a re-save).
#: Blur and sharpening are left out: other font smoothing sharpens or softens every glyph edge.
FILTER_KINDS = frozenset({"tone", "colour", "greyscale"})
#: ... when found with at least this confidence (0..1). Measured on the verdict corpus: every
#: real tone, colour or greyscale change at 0.89 or more; the tone curve fitted to a document
#: whose fonts were smoothed again (its ink a little bolder) at 0.52 to 0.60.
FILTER_MIN_CONFIDENCE = 0.75
_CAUSE_WORDS = {
    "blur": "blurred",
    "sharpen": "sharpened",
    "tone": "brightness, contrast or gamma changed",
    "colour": "colours shifted",
    "greyscale": "converted to greyscale",
}
#: Longer side of the thumbnails of ``content_correlation``, px.
THUMB_SIDE = 64


@dataclass(frozen=True, kw_only=True)
class VerdictInputs:
    """What the verdict looks at. Ratios are fractions of the compared pixels (0..1)."""

    identical_pixels: bool
    ssim: float
    changed_ratio: float
    antialiased_ratio: float
    changed_pixels: int
    compared_pixels: int
    #: Significant regions only (``regions.significant_regions``).
    regions: Sequence[Region]
    alignment: Alignment
    content_correlation: float
    #: SSIM of A against A resampled with the alignment's transform and back, or (unaligned
    #: pairs dominated by rendering noise) against A moved a quarter pixel; else None.
    ssim_floor: float | None = None
    #: A pair dominated by rendering noise whose regions all dissolved when both images were
    #: blurred, and the whole page with them (``core.imaging.rerendering``): rendered again.
    rerendered: bool = False
    #: Kinds of the pixel findings (``findings.pixel_findings``) found with at least
    #: ``FILTER_MIN_CONFIDENCE``: blur, tone, colour ...
    filters: Sequence[str] = ()
    #: A transform found while diagnosing but not applied (pixel mode), else None.
    detected_misregistration: Alignment | None = None
    #: Pixel mode: B warped by that transform would be identical only as a page rendered
    #: again (``rendered_again`` of the aligned comparison): the transform is where glyphs
    #: were rasterised, not a misregistration.
    rendered_again_when_aligned: bool = False


def classify(inputs: VerdictInputs) -> tuple[str, str]:
    """Return ``(verdict, summary)``; the verdict is one of ``result.VERDICTS``.

    Every number in the summary is a field of the result: ``ssim``, ``changed_ratio``,
    ``antialiased_ratio``, the regions' boxes and the alignment's transform.
    """
    pct = f"SSIM {max(inputs.ssim, 0.0) * 100:.1f} %"
    prefix = _alignment_prefix(inputs.alignment)
    noise = _noise_note(inputs)
    if inputs.identical_pixels:
        return (
            "identical",
            prefix + "The compared pixels are identical (at most a lossless re-save).",
        )
    found = inputs.detected_misregistration
    if not inputs.alignment.applied and found is not None and found.applied:
        if inputs.rendered_again_when_aligned:
            return "identical", (
                f"The same page rendered again ({pct}): its glyphs are rasterised differently"
                f" and set a fraction of a pixel apart ({_describe_transform(found)}; found, not"
                f" applied){noise}."
            )
        return "misaligned", (
            f"B is misregistered against A ({_describe_transform(found)}), so the pixels do not"
            f" line up ({pct}); compare in auto or align mode to see real content differences."
        )
    floor = _identical_floor(inputs)
    if _identical(inputs, floor):
        what = "the same image, moved" if inputs.alignment.applied else "visually identical"
        if inputs.rerendered and inputs.ssim < floor:
            return "identical", (
                prefix + f"The same page rendered again ({pct}): its differences are glyph"
                f" rasterisation, below the noise tolerance once smoothed{noise}."
            )
        return "identical", (
            prefix + f"{what.capitalize()} ({pct}): differences stay below the noise"
            f" tolerance{noise}."
        )
    same_picture = inputs.content_correlation >= SAME_PICTURE_MIN
    local = _localized(inputs, floor) if same_picture else None
    if local is not None:
        return "localized_edit", prefix + local + f" The rest matches ({pct}{noise})."
    if same_picture and len(inputs.regions) >= DIFFERENT_MIN_REGIONS:
        return "different", prefix + (
            f"The content differs in {len(inputs.regions)} separate areas ({pct},"
            f" {inputs.changed_ratio * 100:.1f} % of pixels changed): another image of the same"
            " layout, or a heavily edited one."
        )
    if same_picture:
        causes = [_CAUSE_WORDS[k] for k in inputs.filters if k in _CAUSE_WORDS]
        cause = "; ".join(causes) if causes else "re-compression or resampling"
        return "global_change", prefix + (
            f"The same picture, changed throughout ({pct}, {inputs.changed_ratio * 100:.1f} %"
            f" of pixels beyond the tolerance{noise}): {cause}."
        )
    return "different", prefix + (
        f"The images differ throughout ({pct}, {inputs.changed_ratio * 100:.1f} % of pixels"
        " changed): a different image or a heavily edited one."
    )


def rendered_again(inputs: VerdictInputs) -> bool:
    """Whether :func:`classify` calls the pair ``identical`` only as a page rendered again:
    under its SSIM floor, its regions all dissolved in the blur test (``rerendered``)."""
    floor = _identical_floor(inputs)
    return _identical(inputs, floor) and inputs.rerendered and inputs.ssim < floor


def _identical_floor(inputs: VerdictInputs) -> float:
    """The SSIM from which a pair with no significant region is identical."""
    floor = IDENTICAL_MIN_SSIM
    if inputs.ssim_floor is not None:
        floor = min(floor, inputs.ssim_floor - FLOOR_MARGIN)
    return floor


def _identical(inputs: VerdictInputs, floor: float) -> bool:
    """The ``identical`` rule after the identical-pixels and misregistration ones."""
    filtered = not inputs.alignment.applied and any(k in FILTER_KINDS for k in inputs.filters)
    return (
        not inputs.regions
        and not filtered
        and (inputs.ssim >= floor or inputs.rerendered)
        and inputs.changed_ratio <= IDENTICAL_MAX_CHANGED
    )


def _noise_note(inputs: VerdictInputs) -> str:
    if inputs.antialiased_ratio <= 0.0:
        return ""
    return f"; {inputs.antialiased_ratio * 100:.1f} % of pixels are anti-aliasing noise"


def rest_ssim(ssim: float, regions: Sequence[Region], compared_pixels: int) -> float:
    """SSIM outside the regions, estimated: the whole's mean minus each box's share of its own
    SSIM (boxes taken as disjoint), 0..1 (1 when the boxes cover everything)."""
    covered = sum(r.width * r.height for r in regions)
    if compared_pixels <= covered:
        return 1.0
    inside = sum((r.ssim if r.ssim is not None else 0.0) * r.width * r.height for r in regions)
    return min(1.0, (ssim * compared_pixels - inside) / (compared_pixels - covered))


def _localized(inputs: VerdictInputs, floor: float) -> str | None:
    regions = list(inputs.regions)
    if not regions or inputs.compared_pixels == 0:
        return None
    extent = sum(r.width * r.height for r in regions) / inputs.compared_pixels
    inside = sum(r.area for r in regions)
    rest = max(inputs.changed_pixels - inside, 0) / inputs.compared_pixels
    if extent > LOCAL_MAX_EXTENT or rest > LOCAL_MAX_SPREAD or len(regions) > LOCAL_MAX_REGIONS:
        return None
    if rest_ssim(inputs.ssim, regions, inputs.compared_pixels) < min(LOCAL_MIN_REST_SSIM, floor):
        return None
    first = regions[0]
    where = f"at x={first.x}, y={first.y} ({first.width}x{first.height} px, {first.kind})"
    if len(regions) == 1:
        return f"One localised change {where}, covering {extent * 100:.1f} % of the image."
    return (
        f"{len(regions)} localised changes, the largest {where}; together they cover"
        f" {extent * 100:.1f} % of the image."
    )


def _alignment_prefix(alignment: Alignment) -> str:
    if not alignment.applied:
        return ""
    return f"After aligning B onto A ({_describe_transform(alignment)}): "


def _describe_transform(alignment: Alignment) -> str:
    method = alignment.method or ""
    if method.startswith("flip-"):
        axis = method.removeprefix("flip-")
        return {
            "horizontal": "mirrored left to right",
            "vertical": "mirrored top to bottom",
            "both": "turned 180 degrees",
        }.get(axis, "mirrored")
    parts: list[str] = []
    if alignment.translation is not None:
        dx, dy = alignment.translation
        parts.append(f"shift {dx:+.1f}, {dy:+.1f} px")
    if alignment.rotation_deg is not None and abs(alignment.rotation_deg) >= 0.05:
        parts.append(f"rotation {alignment.rotation_deg:+.1f} deg")
    if alignment.scale is not None and abs(alignment.scale - 1.0) >= 0.005:
        parts.append(f"scale {alignment.scale:.3f}x")
    return ", ".join(parts) if parts else "no significant motion"

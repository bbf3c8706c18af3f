"""Turn scores and the shape of the differences into a verdict and a sentence a person can act on.

SSIM alone cannot separate the cases: a brightness shift lights every pixel yet keeps SSIM's
structure term high; a pasted patch is concentrated; compression is spread thin. The rules below
use where and how the differences fall. The thresholds are constants tuned on generated cases
(``tests/core/imaging/test_verdict.py`` holds them):

=================  ===========================================================================
verdict            rule (first match wins)
=================  ===========================================================================
identical          no compared pixel differs, or SSIM >= IDENTICAL_MIN_SSIM and at most
                   IDENTICAL_MAX_CHANGED of the pixels differ beyond the tolerance
localized_edit     the "red" regions (mean difference >= EDIT_MEAN_DIFF) are few, their boxes
                   cover at most LOCAL_MAX_EXTENT of the image, they hold at least
                   LOCAL_MIN_SHARE of all changed pixels, and the rest changes by at most
                   LOCAL_MAX_SPREAD beyond the tolerance
misaligned         no alignment was applied, yet a non-identity transform maps B onto A
global_change      the structure term stays >= GLOBAL_MIN_STRUCTURE: the same picture, changed
                   everywhere by compression or a filter (brightness, colour, blur)
different          anything else: the content itself differs
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.imaging.align import Alignment
from core.imaging.regions import Region

IDENTICAL_MIN_SSIM = 0.99
IDENTICAL_MAX_CHANGED = 0.001
#: A region whose changed pixels differ by this fraction of the data range on average is a
#: "red patch" (an edit). Compression and filters leave regions around 0.1-0.2 (tuned cases).
EDIT_MEAN_DIFF = 0.25
LOCAL_TOP_REGIONS = 5
LOCAL_MAX_EXTENT = 0.35
LOCAL_MAX_SPREAD = 0.02
#: ... and hold at least this share of all changed pixels (a patch, not speckle everywhere).
LOCAL_MIN_SHARE = 0.5
GLOBAL_MIN_STRUCTURE = 0.6


@dataclass(frozen=True, kw_only=True)
class VerdictInputs:
    """What the verdict looks at. Ratios are fractions of the compared pixels (0..1)."""

    identical_pixels: bool
    ssim: float
    luminance: float
    contrast: float
    structure: float
    changed_ratio: float
    nonzero_ratio: float
    changed_pixels: int
    compared_pixels: int
    regions: Sequence[Region]
    alignment: Alignment
    #: A transform found while diagnosing but not applied (pixel mode), else None.
    detected_misregistration: Alignment | None = None


def classify(inputs: VerdictInputs) -> tuple[str, str]:
    """Return ``(verdict, summary)``; the verdict is one of ``result.VERDICTS``."""
    pct = f"SSIM {max(inputs.ssim, 0.0) * 100:.1f} %"
    prefix = _alignment_prefix(inputs.alignment)
    if inputs.identical_pixels:
        return (
            "identical",
            prefix + "The compared pixels are identical (at most a lossless re-save).",
        )
    if inputs.ssim >= IDENTICAL_MIN_SSIM and inputs.changed_ratio <= IDENTICAL_MAX_CHANGED:
        return "identical", (
            prefix + f"Visually identical ({pct}): differences stay below the noise tolerance."
        )
    local = _localized(inputs)
    if local is not None:
        return "localized_edit", prefix + local + f" The rest matches ({pct})."
    found = inputs.detected_misregistration
    if not inputs.alignment.applied and found is not None and found.applied:
        return "misaligned", (
            f"B is misregistered against A ({_describe_transform(found)}), so the pixels do not"
            f" line up ({pct}); compare in auto or align mode to see real content differences."
        )
    if inputs.structure >= GLOBAL_MIN_STRUCTURE:
        return "global_change", prefix + _describe_global(inputs, pct)
    return "different", prefix + (
        f"The images differ throughout ({pct}, {inputs.changed_ratio * 100:.0f} % of pixels"
        " changed): a different image or a heavily edited one."
    )


def _localized(inputs: VerdictInputs) -> str | None:
    strong = [r for r in inputs.regions if r.mean_diff >= EDIT_MEAN_DIFF]
    if not strong or inputs.compared_pixels == 0:
        return None
    top = strong[:LOCAL_TOP_REGIONS]
    extent = sum(r.width * r.height for r in top) / inputs.compared_pixels
    in_top = sum(r.area for r in top)
    rest = max(inputs.changed_pixels - in_top, 0) / inputs.compared_pixels
    share = in_top / inputs.changed_pixels if inputs.changed_pixels else 0.0
    if extent > LOCAL_MAX_EXTENT or rest > LOCAL_MAX_SPREAD or share < LOCAL_MIN_SHARE:
        return None
    first = top[0]
    where = f"at x={first.x}, y={first.y} ({first.width}x{first.height} px)"
    if len(top) == 1:
        return f"One localised change {where}, covering {extent * 100:.1f} % of the image."
    return (
        f"{len(top)} localised changes, the largest {where}; together they cover"
        f" {extent * 100:.1f} % of the image."
    )


def _describe_global(inputs: VerdictInputs, pct: str) -> str:
    causes: list[str] = []
    if inputs.luminance < 0.995:
        causes.append("brightness or colour shifted")
    if inputs.contrast < 0.97:
        causes.append("detail or contrast lost (compression, blur or a filter)")
    cause = "; ".join(causes) if causes else "re-compression or a mild global filter"
    return (
        f"A thin change spread over the whole image ({pct}, {inputs.nonzero_ratio * 100:.0f} %"
        f" of pixels differ): {cause}."
    )


def _alignment_prefix(alignment: Alignment) -> str:
    if not alignment.applied:
        return ""
    return f"After aligning B onto A ({_describe_transform(alignment)}): "


def _describe_transform(alignment: Alignment) -> str:
    parts: list[str] = []
    if alignment.translation is not None:
        dx, dy = alignment.translation
        parts.append(f"shift {dx:+.1f}, {dy:+.1f} px")
    if alignment.rotation_deg is not None and abs(alignment.rotation_deg) >= 0.05:
        parts.append(f"rotation {alignment.rotation_deg:+.1f} deg")
    if alignment.scale is not None and abs(alignment.scale - 1.0) >= 0.005:
        parts.append(f"scale {alignment.scale:.3f}x")
    return ", ".join(parts) if parts else "no significant motion"

"""The result of one comparison: the JSON contract (``to_dict``) plus the heatmap PNGs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.imaging.align.result import Alignment
from core.imaging.findings import Finding
from core.imaging.regions import Region

#: Version of the comparison engine; part of every result so a result can be reproduced.
ENGINE_VERSION = "0.1.0"

Verdict = str
#: The fixed set of verdicts, from most to least similar.
VERDICTS: tuple[Verdict, ...] = (
    "identical",
    "localized_edit",
    "global_change",
    "misaligned",
    "different",
)


@dataclass(frozen=True, kw_only=True)
class CompareResult:
    """Scores, verdict and heatmap of one comparison of image A (the reference) with image B.

    Every score is computed over the compared pixels only: the overlap of A and the aligned B,
    minus the ignored rectangles. ``to_dict()`` gives the JSON contract shared by the CLI, the
    API and webhooks.
    """

    mode: str
    width: int
    height: int
    bit_depth: int
    ssim: float
    ssim_luminance: float
    ssim_contrast: float
    ssim_structure: float
    psnr: float | None
    mse: float
    histogram_similarity: float
    changed_ratio: float
    changed_pixels: int
    compared_pixels: int
    tolerance: float
    antialiased_ratio: float
    antialiased_pixels: int
    content_correlation: float
    ssim_floor: float | None
    findings: list[Finding]
    verdict: Verdict
    summary: str
    alignment: Alignment
    regions: list[Region]
    ignored: list[tuple[int, int, int, int]]
    timings_ms: dict[str, float]
    heatmap_png: bytes = field(repr=False)
    preview_png: bytes | None = field(default=None, repr=False)
    engine_version: str = ENGINE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The result contract as JSON-ready plain types (see README, "Result contract")."""
        return {
            "engine_version": self.engine_version,
            "mode": self.mode,
            "width": self.width,
            "height": self.height,
            "bit_depth": self.bit_depth,
            "ssim": _round(max(self.ssim, 0.0)),
            "ssim_components": {
                "luminance": _round(self.ssim_luminance),
                "contrast": _round(self.ssim_contrast),
                "structure": _round(self.ssim_structure),
            },
            "psnr": None if self.psnr is None else _round(self.psnr),
            "mse": _round(self.mse),
            "histogram_similarity": _round(self.histogram_similarity),
            "changed_ratio": _round(self.changed_ratio),
            "changed_pixels": self.changed_pixels,
            "compared_pixels": self.compared_pixels,
            "tolerance": _round(self.tolerance),
            "antialiased_ratio": _round(self.antialiased_ratio),
            "antialiased_pixels": self.antialiased_pixels,
            "content_correlation": _round(self.content_correlation),
            "ssim_floor": None if self.ssim_floor is None else _round(self.ssim_floor),
            "verdict": self.verdict,
            "summary": self.summary,
            "alignment": self.alignment.to_dict(),
            "regions": [r.to_dict() for r in self.regions],
            "findings": [f.to_dict() for f in self.findings],
            "ignored": [list(r) for r in self.ignored],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits)

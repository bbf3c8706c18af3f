"""Options of one comparison, validated once, with documented units and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.imaging.errors import ErrorCode, ImagingError

Mode = Literal["auto", "pixel", "align"]
Rect = tuple[int, int, int, int]

#: Largest decoded image accepted, in pixels (width x height), checked from the header.
DEFAULT_MAX_PIXELS = 100_000_000
#: Largest encoded file accepted, in bytes.
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: Default noise tolerance, as a fraction of the data range (0..1): a pixel whose largest
#: channel difference exceeds it counts as changed (25.5 of 255 levels; pixelmatch and odiff
#: default to the same 0.1). Below it, JPEG re-compression (quality 60 and up) and
#: anti-aliasing noise mostly does not count towards ``changed_ratio`` or regions.
DEFAULT_TOLERANCE = 0.1
#: Longest side of the heatmap preview PNG, in pixels.
DEFAULT_PREVIEW_MAX_SIDE = 512


@dataclass(frozen=True, kw_only=True)
class CompareOptions:
    """How to compare two images.

    Attributes
    ----------
    mode
        ``"pixel"`` never aligns (sizes must match), ``"align"`` always aligns B onto A,
        ``"auto"`` (default) compares directly and aligns only when the result looks like
        misregistration and a confident, non-identity transform exists; pairs of different
        sizes are always aligned in auto mode.
    ignore
        Rectangles ``(x, y, width, height)`` in A's pixel coordinates excluded from every
        metric and drawn grey in the heatmap. Parts outside the image are clipped.
    tolerance
        Noise tolerance in [0, 1), a fraction of the data range; see ``DEFAULT_TOLERANCE``.
    max_pixels
        Largest image accepted, in decoded pixels; refused from the header before decoding.
    max_bytes
        Largest encoded file accepted, in bytes.
    preview_max_side
        Longest side of the heatmap preview in pixels, or ``None`` for no preview.
    max_job_bytes
        Memory budget of the comparison in bytes (decoded pair and intermediates, estimated
        from the headers by ``core.imaging.budget`` before decoding), or ``None`` for none.
    antialiasing
        Detect anti-aliasing and resampling noise (``core.imaging.noise``, on by default):
        changed pixels it explains are counted in ``antialiased_ratio``, drawn in the
        heatmap's anti-aliasing colour and not counted as changes. False counts every pixel
        beyond the tolerance as changed.
    """

    mode: Mode = "auto"
    ignore: tuple[Rect, ...] = field(default_factory=tuple)
    tolerance: float = DEFAULT_TOLERANCE
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    preview_max_side: int | None = DEFAULT_PREVIEW_MAX_SIDE
    max_job_bytes: int | None = None
    antialiasing: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "pixel", "align"):
            raise ImagingError(
                ErrorCode.INVALID_OPTIONS, f"mode must be auto, pixel or align, not {self.mode!r}"
            )
        if not 0.0 <= float(self.tolerance) < 1.0:
            raise ImagingError(ErrorCode.INVALID_OPTIONS, "tolerance must be in [0, 1)")
        if self.max_pixels <= 0 or self.max_bytes <= 0:
            raise ImagingError(ErrorCode.INVALID_OPTIONS, "max_pixels and max_bytes must be > 0")
        if self.preview_max_side is not None and self.preview_max_side < 16:
            raise ImagingError(ErrorCode.INVALID_OPTIONS, "preview_max_side must be >= 16")
        rects: list[Rect] = []
        for rect in self.ignore:
            if len(rect) != 4:
                raise ImagingError(
                    ErrorCode.INVALID_OPTIONS, f"an ignore rectangle is (x, y, w, h), got {rect!r}"
                )
            x, y, w, h = (int(v) for v in rect)
            if w <= 0 or h <= 0:
                raise ImagingError(
                    ErrorCode.INVALID_OPTIONS, f"ignore rectangle {rect!r} has no area"
                )
            rects.append((x, y, w, h))
        object.__setattr__(self, "ignore", tuple(rects))

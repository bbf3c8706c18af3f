"""The heatmap legend use case: the SVG legend for a tolerance (``core.imaging.legend``)."""

from __future__ import annotations

from typing import Final

from core.imaging.errors import ImagingError
from core.imaging.legend import render_legend_svg
from core.imaging.options import DEFAULT_TOLERANCE
from core.services.errors import InvalidRequest

__all__ = ["DEFAULT_LEGEND_TOLERANCE", "heatmap_legend_svg"]

#: The tolerance marked when none is given: the comparisons' default.
DEFAULT_LEGEND_TOLERANCE: Final = DEFAULT_TOLERANCE


def heatmap_legend_svg(tolerance: float, *, antialiasing: bool = True) -> str:
    """The legend SVG for a comparison made with ``tolerance`` (fraction in [0, 1)) and
    anti-aliasing detection on or off; ``InvalidRequest`` (``invalid_options``) otherwise."""
    try:
        return render_legend_svg(tolerance, antialiasing=antialiasing)
    except ImagingError as exc:
        raise InvalidRequest(exc.message, code="invalid_options") from exc

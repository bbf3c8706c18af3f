"""``/v1/heatmap-legend.svg``: the heatmap's legend (colour scale, tolerance mark, the colours of
anti-aliased and not-compared pixels) as a small SVG, for any tolerance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import TenantDep
from api.routes import problem_responses
from core.services.legend import DEFAULT_LEGEND_TOLERANCE, heatmap_legend_svg

router = APIRouter(tags=["comparisons"])

#: The SVG holds no script and loads nothing; this keeps it that way if it is opened directly.
_SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"


@router.get(
    "/v1/heatmap-legend.svg",
    response_class=Response,
    summary="Get the heatmap legend as SVG",
    responses={
        200: {"content": {"image/svg+xml": {}}, "description": "The legend (SVG, 520 px wide)."},
        **problem_responses(422),
    },
)
def get_heatmap_legend(
    _tenant: TenantDep,
    tolerance: Annotated[
        float,
        Query(
            ge=0.0,
            lt=1.0,
            description="The comparison's tolerance (fraction of the data range), marked on the "
            "scale: a result's `tolerance` field.",
        ),
    ] = DEFAULT_LEGEND_TOLERANCE,
    antialiasing: Annotated[
        bool,
        Query(description="Whether anti-aliasing detection was on (the comparison's option)."),
    ] = True,
) -> Response:
    """The colour scale of every heatmap (blue identical, green noise, yellow, red content
    changes) with ``tolerance`` marked, magenta for anti-aliased pixels and grey for pixels not
    compared, each also in words. The same bytes for the same query, cacheable."""
    return Response(
        heatmap_legend_svg(tolerance, antialiasing=antialiasing),
        media_type="image/svg+xml",
        headers={
            "Cache-Control": "private, max-age=86400",
            "Content-Security-Policy": _SVG_CSP,
            "X-Content-Type-Options": "nosniff",
        },
    )

"""``/v1/comparisons/{id}/previews``: the viewer's images of a succeeded comparison.

``a`` is A as decoded, ``b`` is B in A's frame (warped by the applied alignment, transparent
outside the overlap), ``heatmap`` the heatmap: all on A's grid, so they overlay pixel for
pixel. Three forms:

- ``GET .../previews/{name}``: the full-resolution PNG (``a`` and ``b`` rendered on the first
  request and kept);
- ``GET .../previews/{name}?level=N``: the downscaled preview, longest side at most
  ``api.preview_max_side`` (2048 px), where ``N`` is ``preview_level`` of the manifest; the
  heatmap's is reduced by block maxima, so a small edit stays red;
- ``GET .../previews/{name}/tiles/{level}/{column}_{row}.png``: a 512 px tile of a level below
  the preview's (level 0: A's full resolution), for deep zoom and exact hover values.

``GET .../previews`` is the manifest: sizes, levels, tile grid, and whether the viewer should use
the preview and tiles (``tiled``, big images) rather than the full PNGs. All are streamed through
the API (never a redirect to storage), so a page on this origin can fetch them with its session
under a same-origin Content-Security-Policy.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.routes import problem_responses
from core.services import previews

router = APIRouter(tags=["comparisons"])

_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The PNG."}
}
#: Previews and tiles never change once rendered (a comparison's result is final).
_CACHE = {"Cache-Control": "private, max-age=3600"}


class PreviewLevel(BaseModel):
    """One level of the pyramid: ``level`` 0 is A's full resolution, each next one half."""

    level: int = Field(ge=0)
    width: int = Field(ge=1, description="Pixels.")
    height: int = Field(ge=1, description="Pixels.")
    columns: int = Field(ge=0, description="Tiles across (0: the preview level, not tiled).")
    rows: int = Field(ge=0, description="Tiles down (0: the preview level, not tiled).")


class PreviewManifest(BaseModel):
    """How to show a comparison's images: full PNGs, or a downscaled preview and tiles."""

    width: int = Field(description="A's width in pixels.")
    height: int = Field(description="A's height in pixels.")
    tiled: bool = Field(
        description="A is big (over api.preview_tiled_above_pixels): show the downscaled "
        "previews (?level=preview_level) and full-resolution tiles, not the full PNGs."
    )
    max_side: int = Field(description="Longest side of the downscaled preview, pixels.")
    tile_size: int = Field(description="Side of a tile in pixels (edge tiles are smaller).")
    preview_level: int = Field(ge=0, description="The level whose whole image is the preview.")
    levels: list[PreviewLevel]


@router.get(
    "/v1/comparisons/{comparison_id}/previews",
    response_model=PreviewManifest,
    summary="Get the manifest of a comparison's previews (levels and tiles)",
    responses=problem_responses(404, 503),
)
def get_manifest(
    comparison_id: uuid.UUID, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> PreviewManifest:
    """Sizes, pyramid levels and tile grid of a ``succeeded`` comparison's previews (nothing
    is rendered): 404 ``preview_not_available`` when not succeeded."""
    manifest = previews.preview_manifest(
        session,
        tenant_id=tenant.id,
        comparison_id=comparison_id,
        max_side=settings.api.preview_max_side,
        tiled_above_pixels=settings.api.preview_tiled_above_pixels,
    )
    return PreviewManifest.model_validate(manifest)


@router.get(
    "/v1/comparisons/{comparison_id}/previews/{name}",
    response_class=Response,
    summary="Get a preview PNG on A's grid (a, b in A's frame, heatmap)",
    responses={**_PNG, **problem_responses(404, 422, 503)},
)
def get_preview(
    comparison_id: uuid.UUID,
    name: previews.PreviewName,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    level: int | None = Query(
        default=None,
        ge=0,
        description="The manifest's preview_level: the downscaled preview (longest side at "
        "most api.preview_max_side; the heatmap reduced by block maxima). Omitted: full "
        "resolution.",
    ),
    legend: bool = Query(
        default=False,
        description="With name=heatmap: the legend drawn under the image (the colour scale with "
        "this comparison's tolerance marked, anti-aliasing and not-compared colours in words). "
        "422 for a or b.",
    ),
) -> Response:
    """A preview of a ``succeeded`` comparison, rendered on the first request (a few seconds
    for a 4K pair; the downscaled previews of a 37 MP pair about as long) and kept: 404
    ``preview_not_available`` when not succeeded, or for a level other than the preview's."""

    def read() -> bytes:
        if level is None:
            return previews.get_preview(
                session,
                store,
                tenant_id=tenant.id,
                comparison_id=comparison_id,
                name=name,
                limits=settings.limits,
            )
        return previews.get_pyramid_piece(
            session,
            store,
            tenant_id=tenant.id,
            comparison_id=comparison_id,
            name=name,
            level=level,
            max_side=settings.api.preview_max_side,
            limits=settings.limits,
        )

    data = (
        previews.heatmap_with_legend(
            session, tenant_id=tenant.id, comparison_id=comparison_id, name=name, png=read
        )
        if legend
        else read()
    )
    return Response(data, media_type="image/png", headers=_CACHE)


@router.get(
    "/v1/comparisons/{comparison_id}/previews/{name}/tiles/{level}/{column:int}_{row:int}.png",
    response_class=Response,
    summary="Get a tile of a preview level (level 0: full resolution)",
    responses={**_PNG, **problem_responses(404, 503)},
)
def get_tile(
    comparison_id: uuid.UUID,
    name: str,
    level: int,
    column: int,
    row: int,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """Tile ``column``, ``row`` (``tile_size`` px squares from the top left) of ``level`` of
    ``a``, ``b`` or ``heatmap``, for the levels below the manifest's ``preview_level``: 404
    ``preview_not_available`` for any other name, level or tile. Rendered with the pyramid on
    the first request (the whole pyramid at once) and kept."""
    data = previews.get_pyramid_piece(
        session,
        store,
        tenant_id=tenant.id,
        comparison_id=comparison_id,
        name=name,
        level=level,
        tile=(column, row),
        max_side=settings.api.preview_max_side,
        limits=settings.limits,
    )
    return Response(data, media_type="image/png", headers=_CACHE)

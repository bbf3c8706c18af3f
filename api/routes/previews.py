"""``/v1/comparisons/{id}/previews/{name}``: the viewer's images of a succeeded comparison.

``a`` is A as decoded, ``b`` is B in A's frame (warped by the applied alignment, transparent
outside the overlap), ``heatmap`` the heatmap: all PNGs of A's size, so they overlay pixel for
pixel. ``a`` and ``b`` are rendered on the first request and kept in storage. All are streamed
through the API (never a redirect to storage), so a page on this origin can fetch them with its
key under a same-origin Content-Security-Policy.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.routes import problem_responses
from core.services import previews

router = APIRouter(tags=["comparisons"])


@router.get(
    "/v1/comparisons/{comparison_id}/previews/{name}",
    response_class=Response,
    summary="Get a preview PNG on A's grid (a, b in A's frame, heatmap)",
    responses={
        200: {"content": {"image/png": {}}, "description": "The PNG."},
        **problem_responses(404, 503),
    },
)
def get_preview(
    comparison_id: uuid.UUID,
    name: previews.PreviewName,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """A preview of a ``succeeded`` comparison, rendered on the first request (a few seconds
    for a 4K pair) and kept: 404 ``preview_not_available`` when not succeeded."""
    data = previews.get_preview(
        session,
        store,
        tenant_id=tenant.id,
        comparison_id=comparison_id,
        name=name,
        limits=settings.limits,
    )
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

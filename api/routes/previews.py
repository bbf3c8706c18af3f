"""``/v1/comparisons/{id}/previews/{name}``: the viewer's images of a succeeded comparison.

``a`` is A as decoded, ``b`` is B in A's frame (warped by the applied alignment, transparent
outside the overlap), ``heatmap`` the heatmap: all PNGs of A's size, so they overlay pixel for
pixel. They are streamed through the API (never a redirect to storage), so a page on this
origin can fetch them with its key under a same-origin Content-Security-Policy.
"""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Response

from api.deps import SessionDep, StoreDep, TenantDep
from api.routes import problem_responses
from core.db.models import ComparisonState
from core.services import comparisons
from core.services.errors import NotFound
from core.services.previews import preview_key
from core.storage import ObjectNotFound

router = APIRouter(tags=["comparisons"])

PreviewName = Literal["a", "b", "heatmap"]


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
    name: PreviewName,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
) -> Response:
    """A preview of a ``succeeded`` comparison: 404 ``preview_not_available`` otherwise (not
    finished, canceled, or finished before previews were stored)."""
    comparison = comparisons.get_comparison(
        session, tenant_id=tenant.id, comparison_id=comparison_id
    )
    session.commit()  # no transaction held while talking to storage
    key = comparison.heatmap_key if name == "heatmap" else preview_key(comparison_id, name)
    if comparison.state != ComparisonState.SUCCEEDED or key is None:
        raise NotFound(
            f"comparison {comparison_id} has no {name} preview (state {comparison.state})",
            code="preview_not_available",
        )
    try:
        data = store.get(key)
    except ObjectNotFound:
        raise NotFound(
            f"comparison {comparison_id} has no stored {name} preview",
            code="preview_not_available",
        ) from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

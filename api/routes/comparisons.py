"""``/v1/comparisons``: submit (202 + Location), poll, list, fetch the heatmap, cancel/delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import RedirectResponse
from pydantic import AwareDatetime
from sqlalchemy.orm import Session

from api import etags
from api.deps import QueueDep, SessionDep, SettingsDep, StoreDep, TenantDep, webhook_networks
from api.idempotency import IdempotentRoute
from api.routes import Cursor, Limit, page_limit, problem_responses
from api.routes.bodies import (
    COMPARISON_REQUEST_BODY,
    ComparisonSubmission,
    read_comparison_submission,
)
from api.schemas import ComparisonOut, Page
from core.config import LimitsSettings
from core.db.models import ComparisonState
from core.services import comparisons, images
from core.services.errors import ImageRejected, NotFound
from core.storage import ObjectStore

router = APIRouter(route_class=IdempotentRoute, tags=["comparisons"])

#: Seconds a client is told to wait before polling a comparison that is not final.
POLL_RETRY_AFTER_S: Final = 1
#: Lifetime of the presigned heatmap URL a redirect points to, in seconds (at most).
HEATMAP_URL_TTL_S: Final = 300

Submission = Annotated[ComparisonSubmission, Depends(read_comparison_submission)]


def _image_id(
    value: uuid.UUID | bytes,
    field: str,
    *,
    session: Session,
    store: ObjectStore,
    tenant_id: uuid.UUID,
    limits: LimitsSettings,
) -> uuid.UUID:
    """The id of an image given by id, or of the file uploaded with the request."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        image, _created = images.store_image(
            session, store, tenant_id=tenant_id, data=value, limits=limits
        )
    except ImageRejected as exc:
        raise ImageRejected(
            f"image {field}: {exc.message}", code=exc.code, details={**exc.details, "field": field}
        ) from exc
    return image.id


@router.post(
    "/v1/comparisons",
    status_code=202,
    response_model=ComparisonOut,
    summary="Submit a comparison",
    openapi_extra=COMPARISON_REQUEST_BODY,
    responses=problem_responses(400, 404, 409, 413, 415, 422),
)
def create_comparison(
    tenant: TenantDep,
    submission: Submission,
    session: SessionDep,
    store: StoreDep,
    queue: QueueDep,
    settings: SettingsDep,
    response: Response,
) -> ComparisonOut:
    """Queue a comparison of image A against image B; answer 202 with ``Location``.

    JSON ``{"a": image_id, "b": image_id, "options": {...}, "metadata": {...},
    "webhook_url": ...}``, or multipart with files ``a`` and ``b`` (stored and validated like
    ``POST /v1/images``) and JSON text fields ``options`` and ``metadata``. Poll the
    ``Location`` until the state is final.
    """
    image_a, image_b = (
        _image_id(
            value,
            field,
            session=session,
            store=store,
            tenant_id=tenant.id,
            limits=settings.limits,
        )
        for value, field in ((submission.a, "a"), (submission.b, "b"))
    )
    comparison = comparisons.create_comparison(
        session,
        queue,
        tenant_id=tenant.id,
        image_a_id=image_a,
        image_b_id=image_b,
        options=submission.options,
        metadata=submission.metadata,
        webhook_url=submission.webhook_url,
        allowed_networks=webhook_networks(settings),
        big_image_pixels=settings.worker.big_image_pixels,
    )
    out = ComparisonOut.from_comparison(comparison, base_url=settings.api.public_base_url)
    response.headers["Location"] = out.links.self_
    return out


@router.get(
    "/v1/comparisons",
    response_model=Page[ComparisonOut],
    summary="List comparisons",
    responses=problem_responses(422),
)
def list_comparisons(
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    state: ComparisonState | None = None,
    batch_id: uuid.UUID | None = None,
    created_after: Annotated[
        AwareDatetime | None, Query(description="Created at or after (ISO 8601 with offset).")
    ] = None,
    created_before: Annotated[
        AwareDatetime | None, Query(description="Created before (ISO 8601 with offset).")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[ComparisonOut]:
    """Your comparisons, newest first, with filters; walk pages with ``cursor``."""
    page = comparisons.list_comparisons(
        session,
        tenant_id=tenant.id,
        state=state,
        batch_id=batch_id,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=page_limit(limit, settings),
    )
    base = settings.api.public_base_url
    return Page[ComparisonOut](
        items=[ComparisonOut.from_comparison(c, base_url=base) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/v1/comparisons/{comparison_id}",
    response_model=ComparisonOut,
    summary="Get a comparison",
    responses={
        200: {"description": "The comparison.", "headers": etags.ETAG_HEADERS},
        **etags.NOT_MODIFIED_RESPONSE,
        **problem_responses(404),
    },
)
def get_comparison(
    comparison_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    if_none_match: etags.IfNoneMatch = None,
) -> ComparisonOut | Response:
    """The comparison, its result when ``succeeded`` or its error when ``failed``.

    ``Retry-After: 1`` while it is ``queued`` or ``running``. Every answer has a strong
    ``ETag``: poll with ``If-None-Match: <etag>`` and an unchanged comparison answers
    ``304 Not Modified`` with no body (a cheap read by primary key).
    """
    base = settings.api.public_base_url
    if if_none_match:
        version = comparisons.get_comparison_version(
            session, tenant_id=tenant.id, comparison_id=comparison_id
        )
        etag = etags.make_etag("comparison", base, version.key())
        if etags.matches(if_none_match, etag):
            return etags.not_modified(etag, _retry_after(version.state))
    comparison = comparisons.get_comparison(
        session, tenant_id=tenant.id, comparison_id=comparison_id
    )
    version = comparisons.ComparisonVersion.of(comparison)
    response.headers.update(_retry_after(version.state))
    etags.set_validators(response, etags.make_etag("comparison", base, version.key()))
    return ComparisonOut.from_comparison(comparison, base_url=base)


def _retry_after(state: ComparisonState) -> dict[str, str]:
    """``Retry-After`` for a comparison that is not final (none once it is)."""
    return {} if ComparisonState(state).is_final else {"Retry-After": str(POLL_RETRY_AFTER_S)}


@router.get(
    "/v1/comparisons/{comparison_id}/heatmap",
    response_class=Response,
    summary="Get the heatmap PNG",
    responses={
        200: {"content": {"image/png": {}}, "description": "The PNG (local storage)."},
        307: {"description": "Redirect to a short-lived presigned URL (S3)."},
        **problem_responses(404, 503),
    },
)
def get_heatmap(
    comparison_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """The heatmap once the comparison ``succeeded``: 404 ``heatmap_not_ready`` before."""
    comparison = comparisons.get_comparison(
        session, tenant_id=tenant.id, comparison_id=comparison_id
    )
    session.commit()  # no transaction held while talking to storage
    if comparison.state != ComparisonState.SUCCEEDED or comparison.heatmap_key is None:
        raise NotFound(
            f"comparison {comparison_id} has no heatmap (state {comparison.state})",
            code="heatmap_not_ready",
        )
    expires_s = min(HEATMAP_URL_TTL_S, settings.storage.presign_expiry_s)
    url = store.presign_get(comparison.heatmap_key, expires_s=expires_s)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    data = store.get(comparison.heatmap_key)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private"})


@router.delete(
    "/v1/comparisons/{comparison_id}",
    response_model=ComparisonOut,
    summary="Cancel or delete a comparison",
    responses=problem_responses(404),
)
def delete_comparison(
    comparison_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ComparisonOut:
    """Cancel it if not started, or delete its result and heatmap; it becomes ``canceled``.

    Returns the updated comparison (its row is kept, so a second DELETE answers the same).
    """
    comparison = comparisons.delete_comparison(
        session, store, tenant_id=tenant.id, comparison_id=comparison_id
    )
    return ComparisonOut.from_comparison(comparison, base_url=settings.api.public_base_url)

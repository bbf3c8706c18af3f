"""``/v1/batches``: up to ``limits.max_batch_pairs`` pairs in one request, progress, listing."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api import etags
from api.deps import QueueDep, SessionDep, SettingsDep, TenantDep, webhook_networks
from api.idempotency import IdempotentRoute
from api.routes import Cursor, Limit, page_limit, problem_responses
from api.schemas import (
    BatchCreate,
    BatchCreatedOut,
    BatchItemOutcome,
    BatchOut,
    ComparisonOut,
    Page,
)
from core.db.models import ComparisonState
from core.services import batches, comparisons

router = APIRouter(route_class=IdempotentRoute, tags=["batches"])


@router.post(
    "/v1/batches",
    status_code=202,
    response_model=BatchCreatedOut,
    summary="Submit a batch of comparisons",
    responses=problem_responses(413, 422),
)
def create_batch(
    body: BatchCreate,
    tenant: TenantDep,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
    response: Response,
) -> BatchCreatedOut:
    """Accept up to ``limits.max_batch_pairs`` pairs (10,000 by default) in one transaction.

    Answers 202 with ``Location`` and one outcome per pair, in request order: its comparison
    id, or an ``error`` {code, message} (an unknown image, invalid options...); a bad pair does
    not sink the others. More pairs than the limit: 413 ``batch_too_large``. A malformed body
    (an id that is not a UUID, a missing field) is a 422 ``validation_error`` for the request.
    """
    created = batches.create_batch(
        session,
        queue,
        tenant_id=tenant.id,
        items=[
            batches.BatchItem(a=pair.a, b=pair.b, options=pair.options, metadata=pair.metadata)
            for pair in body.pairs
        ],
        metadata=body.metadata,
        webhook_url=body.webhook_url,
        allowed_networks=webhook_networks(settings),
        max_pairs=settings.limits.max_batch_pairs,
        big_image_pixels=settings.worker.big_image_pixels,
    )
    base = settings.api.public_base_url
    outcome = BatchOut.from_batch(created.batch, base_url=base)
    items = [BatchItemOutcome.from_outcome(item) for item in created.items]
    accepted = sum(1 for item in items if item.comparison_id is not None)
    response.headers["Location"] = outcome.links.self_
    return BatchCreatedOut(
        **outcome.model_dump(by_alias=False),
        accepted=accepted,
        rejected=len(items) - accepted,
        items=items,
    )


@router.get(
    "/v1/batches/{batch_id}",
    response_model=BatchOut,
    summary="Get a batch's progress",
    responses={
        200: {"description": "The batch.", "headers": etags.ETAG_HEADERS},
        **etags.NOT_MODIFIED_RESPONSE,
        **problem_responses(404),
    },
)
def get_batch(
    batch_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    if_none_match: etags.IfNoneMatch = None,
) -> BatchOut | Response:
    """Counts by state, progress (0..1) and verdicts of one of your batches.

    Every answer has a strong ``ETag``: poll with ``If-None-Match: <etag>`` and an unchanged
    batch answers ``304 Not Modified`` with no body (its verdicts are not recounted).
    """
    base = settings.api.public_base_url
    if if_none_match:
        version = batches.get_batch_version(session, tenant_id=tenant.id, batch_id=batch_id)
        etag = etags.make_etag("batch", base, version.key())
        if etags.matches(if_none_match, etag):
            return etags.not_modified(etag)
    summary = batches.get_batch_summary(session, tenant_id=tenant.id, batch_id=batch_id)
    key = batches.BatchVersion.of(summary).key()
    etags.set_validators(response, etags.make_etag("batch", base, key))
    return BatchOut.from_summary(summary, base_url=base)


@router.get(
    "/v1/batches/{batch_id}/comparisons",
    response_model=Page[ComparisonOut],
    summary="List a batch's comparisons",
    responses={
        200: {"description": "One page of the batch's comparisons.", "headers": etags.ETAG_HEADERS},
        **etags.NOT_MODIFIED_RESPONSE,
        **problem_responses(404, 422),
    },
)
def list_batch_comparisons(
    batch_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    state: ComparisonState | None = None,
    cursor: Cursor = None,
    limit: Limit = None,
    if_none_match: etags.IfNoneMatch = None,
) -> Page[ComparisonOut] | Response:
    """The batch's comparisons, newest first, paginated like ``GET /v1/comparisons``.

    Each page has a strong ``ETag`` (``If-None-Match``: 304 while no comparison on the page
    changed and the page holds the same ones).
    """
    size = page_limit(limit, settings)
    batches.get_batch_version(session, tenant_id=tenant.id, batch_id=batch_id)  # 404 if not yours
    base = settings.api.public_base_url
    if if_none_match:
        key = comparisons.list_comparison_versions(
            session, tenant_id=tenant.id, batch_id=batch_id, state=state, cursor=cursor, limit=size
        )
        etag = etags.make_etag("batch-page", base, key)
        if etags.matches(if_none_match, etag):
            return etags.not_modified(etag)
    page = comparisons.list_comparisons(
        session, tenant_id=tenant.id, batch_id=batch_id, state=state, cursor=cursor, limit=size
    )
    key = comparisons.page_version(page.items, page.next_cursor)
    etags.set_validators(response, etags.make_etag("batch-page", base, key))
    return Page[ComparisonOut](
        items=[ComparisonOut.from_comparison(c, base_url=base) for c in page.items],
        next_cursor=page.next_cursor,
    )

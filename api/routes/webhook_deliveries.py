"""``/v1/webhook-deliveries``: the tenant's whole delivery log, ad-hoc deliveries included.

Every delivery is listed here: to a registered endpoint (``endpoint_id`` set; also under
``/v1/webhooks/{id}/deliveries``) and to the ad-hoc ``webhook_url`` of a comparison or a batch
(``endpoint_id`` null; only here). Retry and recover send a delivery again with its original
``webhook-id``, and dispatch it at once, like the endpoint-scoped routes (``webhooks.py``): both
call the use cases of ``core.services.webhooks.dispatch`` and share the parameters of
``api.routes``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import DeliveryPolicyDep, DeliveryQueueDep, SessionDep, SettingsDep, TenantDep
from api.idempotency import IdempotentRoute
from api.routes import (
    Cursor,
    Limit,
    Since,
    SubjectId,
    delivery_page_out,
    page_limit,
    problem_responses,
)
from api.schemas import Page, WebhookDeliveryOut, WebhookRecoverOut
from core.db.models import WebhookDeliveryState, WebhookEventType
from core.services.webhooks import dispatch, log

router = APIRouter(route_class=IdempotentRoute, tags=["webhooks"])

Target = Annotated[
    Literal["endpoint", "ad_hoc"] | None,
    Query(
        description="`endpoint`: deliveries to registered endpoints; `ad_hoc`: deliveries to the "
        "`webhook_url` of a comparison or a batch. Both when left out."
    ),
]


@router.get(
    "/v1/webhook-deliveries",
    response_model=Page[WebhookDeliveryOut],
    summary="List all deliveries",
    responses=problem_responses(422),
)
def list_all_deliveries(
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    target: Target = None,
    subject_id: SubjectId = None,
    event_type: WebhookEventType | None = None,
    state: WebhookDeliveryState | None = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[WebhookDeliveryOut]:
    """Every delivery of yours, to endpoints and to ad-hoc ``webhook_url`` targets (those have
    ``endpoint_id`` null), newest first, each with its attempts; walk pages with ``cursor``."""
    page = log.list_deliveries(
        session,
        tenant_id=tenant.id,
        target=target,
        subject_id=subject_id,
        event_type=event_type,
        state=state,
        cursor=cursor,
        limit=page_limit(limit, settings),
    )
    return delivery_page_out(page, settings)


@router.post(
    "/v1/webhook-deliveries/recover",
    status_code=202,
    response_model=WebhookRecoverOut,
    summary="Re-send failed ad-hoc deliveries",
    responses=problem_responses(422),
)
def recover_ad_hoc(
    tenant: TenantDep,
    session: SessionDep,
    queue: DeliveryQueueDep,
    policy: DeliveryPolicyDep,
    since: Since,
    subject_id: SubjectId = None,
) -> WebhookRecoverOut:
    """Send every ``failed`` ad-hoc delivery (to the ``webhook_url`` of a comparison or a batch)
    created since ``since`` once more, each with its original ``webhook-id``. Endpoints'
    deliveries are recovered per endpoint: ``POST /v1/webhooks/{id}/recover``."""
    ids = dispatch.recover_and_dispatch(
        session,
        queue,
        policy,
        tenant_id=tenant.id,
        endpoint_id=None,
        since=since,
        subject_id=subject_id,
    )
    return WebhookRecoverOut(recovered=len(ids), delivery_ids=ids)


@router.get(
    "/v1/webhook-deliveries/{delivery_id:uuid}",  # only ids: GET .../recover is 405
    response_model=WebhookDeliveryOut,
    summary="Get any delivery",
    responses=problem_responses(404),
)
def get_any_delivery(
    delivery_id: uuid.UUID, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> WebhookDeliveryOut:
    """One of your deliveries (to an endpoint or ad hoc) with its attempts."""
    view = log.get_delivery(session, tenant_id=tenant.id, delivery_id=delivery_id)
    return WebhookDeliveryOut.from_view(view, base_url=settings.api.public_base_url)


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=WebhookDeliveryOut,
    summary="Send any delivery again",
    responses=problem_responses(404, 409),
)
def retry_any_delivery(
    delivery_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    queue: DeliveryQueueDep,
    policy: DeliveryPolicyDep,
) -> WebhookDeliveryOut:
    """One more attempt now, with the original ``webhook-id``. 409 ``delivery_in_progress``
    while it is being sent, 409 ``webhook_disabled`` if its endpoint is disabled."""
    view = dispatch.retry_and_dispatch(
        session, queue, policy, tenant_id=tenant.id, delivery_id=delivery_id
    )
    return WebhookDeliveryOut.from_view(view, base_url=settings.api.public_base_url)

"""``/v1/webhooks``: register endpoints, rotate secrets, ping, read and replay the delivery log.

The routes translate HTTP to the use cases of ``core.services.webhooks`` and back. Deliveries
are sent by the workers (``core.services.webhooks.delivery``); the use cases that create
deliveries (ping, retry, recover: ``core.services.webhooks.dispatch``) dispatch them right after
their commit, so they go out at once (the periodic dispatcher sends them otherwise). The
tenant-wide delivery log, ad-hoc ``webhook_url`` deliveries included, is
``/v1/webhook-deliveries`` (``webhook_deliveries.py``).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api.deps import (
    DeliveryPolicyDep,
    DeliveryQueueDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    webhook_networks,
)
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
from api.schemas import (
    Page,
    WebhookCreate,
    WebhookDeliveryOut,
    WebhookOut,
    WebhookRecoverOut,
    WebhookSecretOut,
    WebhookUpdate,
    WebhookWithSecretOut,
)
from core.db.models import WebhookDeliveryState, WebhookEventType
from core.services.errors import InvalidRequest
from core.services.webhooks import dispatch, endpoints, log, secrets

router = APIRouter(route_class=IdempotentRoute, tags=["webhooks"])


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookWithSecretOut,
    summary="Register a webhook endpoint",
    responses=problem_responses(422),
)
def create_webhook(
    body: WebhookCreate,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookWithSecretOut:
    """Register a URL to receive events, signed per the Standard Webhooks specification.

    The answer holds the endpoint's signing ``secret`` (``whsec_...``): it is shown this once.
    A URL that resolves to a private, loopback or otherwise internal address is refused (422
    ``webhook_url_forbidden``).
    """
    endpoint = endpoints.create_endpoint(
        session,
        tenant_id=tenant.id,
        url=body.url,
        events=body.events,
        description=body.description,
        enabled=body.enabled,
        allowed_networks=webhook_networks(settings),
    )
    out = WebhookWithSecretOut.from_endpoint_with_secret(
        endpoint, base_url=settings.api.public_base_url
    )
    response.headers["Location"] = out.links.self_
    return out


@router.get(
    "/v1/webhooks",
    response_model=Page[WebhookOut],
    summary="List webhook endpoints",
    responses=problem_responses(422),
)
def list_webhooks(
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[WebhookOut]:
    """Your endpoints, newest first; walk pages with ``cursor``."""
    page = endpoints.list_endpoints(
        session, tenant_id=tenant.id, cursor=cursor, limit=page_limit(limit, settings)
    )
    base = settings.api.public_base_url
    return Page[WebhookOut](
        items=[WebhookOut.from_endpoint(e, base_url=base) for e in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/v1/webhooks/default-secret",
    response_model=WebhookSecretOut,
    summary="Get the default signing secret",
)
def get_default_secret(tenant: TenantDep, session: SessionDep) -> WebhookSecretOut:
    """The secret signing deliveries to the ``webhook_url`` of your comparisons and batches.

    Created on first use; readable again (unlike an endpoint's secret, it may have been created
    by a delivery).
    """
    return WebhookSecretOut.from_row(secrets.get_default_secret(session, tenant_id=tenant.id))


@router.post(
    "/v1/webhooks/default-secret/rotate",
    response_model=WebhookSecretOut,
    summary="Rotate the default signing secret",
)
def rotate_default_secret(tenant: TenantDep, session: SessionDep) -> WebhookSecretOut:
    """Replace the default secret; for 24 h the previous one signs every delivery too."""
    return WebhookSecretOut.from_row(secrets.rotate_default_secret(session, tenant_id=tenant.id))


@router.get(
    "/v1/webhooks/{webhook_id:uuid}",  # only ids: /v1/webhooks/default-secret is a path
    response_model=WebhookOut,
    summary="Get a webhook endpoint",
    responses=problem_responses(404),
)
def get_webhook(
    webhook_id: uuid.UUID, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> WebhookOut:
    """One of your endpoints (without its secret)."""
    endpoint = endpoints.get_endpoint(session, tenant_id=tenant.id, endpoint_id=webhook_id)
    return WebhookOut.from_endpoint(endpoint, base_url=settings.api.public_base_url)


@router.patch(
    "/v1/webhooks/{webhook_id:uuid}",  # only ids: /v1/webhooks/default-secret is a path
    response_model=WebhookOut,
    summary="Update a webhook endpoint",
    responses=problem_responses(404, 422),
)
def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookOut:
    """Change the URL, events, description, or enable/disable it; fields not sent are kept.

    Disabling fails its pending deliveries (recover them after enabling it again).
    """
    sent = body.model_fields_set
    if body.url is None and "url" in sent:
        raise InvalidRequest("url cannot be null")
    if body.enabled is None and "enabled" in sent:
        raise InvalidRequest("enabled cannot be null")
    endpoint = endpoints.update_endpoint(
        session,
        tenant_id=tenant.id,
        endpoint_id=webhook_id,
        url=endpoints.UNSET if body.url is None else body.url,
        events=body.events if "events" in sent else endpoints.UNSET,
        description=body.description if "description" in sent else endpoints.UNSET,
        enabled=endpoints.UNSET if body.enabled is None else body.enabled,
        allowed_networks=webhook_networks(settings),
    )
    return WebhookOut.from_endpoint(endpoint, base_url=settings.api.public_base_url)


@router.delete(
    "/v1/webhooks/{webhook_id:uuid}",  # only ids: /v1/webhooks/default-secret is a path
    status_code=204,
    response_class=Response,
    summary="Delete a webhook endpoint",
    responses=problem_responses(404),
)
def delete_webhook(webhook_id: uuid.UUID, tenant: TenantDep, session: SessionDep) -> Response:
    """Delete the endpoint, its deliveries and their log."""
    endpoints.delete_endpoint(session, tenant_id=tenant.id, endpoint_id=webhook_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecretOut,
    summary="Rotate an endpoint's signing secret",
    responses=problem_responses(404),
)
def rotate_secret(
    webhook_id: uuid.UUID, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> WebhookWithSecretOut:
    """Give the endpoint a new secret (shown this once). For 24 h every delivery carries two
    signatures, one per secret, so receivers holding either one verify it."""
    endpoint = endpoints.rotate_endpoint_secret(
        session, tenant_id=tenant.id, endpoint_id=webhook_id
    )
    return WebhookWithSecretOut.from_endpoint_with_secret(
        endpoint, base_url=settings.api.public_base_url
    )


@router.post(
    "/v1/webhooks/{webhook_id}/ping",
    status_code=202,
    response_model=WebhookDeliveryOut,
    summary="Send a test event",
    responses=problem_responses(404),
)
def ping_webhook(
    webhook_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    queue: DeliveryQueueDep,
    policy: DeliveryPolicyDep,
) -> WebhookDeliveryOut:
    """Send a ``ping`` event to the endpoint now (also when it is disabled); follow it in the
    delivery log."""
    view = dispatch.ping_and_dispatch(
        session, queue, policy, tenant_id=tenant.id, endpoint_id=webhook_id
    )
    return WebhookDeliveryOut.from_view(view, base_url=settings.api.public_base_url)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=Page[WebhookDeliveryOut],
    summary="List an endpoint's deliveries",
    responses=problem_responses(404, 422),
)
def list_deliveries(
    webhook_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    subject_id: SubjectId = None,
    event_type: WebhookEventType | None = None,
    state: WebhookDeliveryState | None = None,
    cursor: Cursor = None,
    limit: Limit = None,
) -> Page[WebhookDeliveryOut]:
    """The endpoint's deliveries, newest first, each with its attempts (status code, duration,
    error, the first kilobyte of the answer); filters as ``GET /v1/webhook-deliveries``."""
    page = log.list_deliveries(
        session,
        tenant_id=tenant.id,
        endpoint_id=webhook_id,
        subject_id=subject_id,
        event_type=event_type,
        state=state,
        cursor=cursor,
        limit=page_limit(limit, settings),
    )
    return delivery_page_out(page, settings)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}",
    response_model=WebhookDeliveryOut,
    summary="Get one delivery",
    responses=problem_responses(404),
)
def get_delivery(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookDeliveryOut:
    """One delivery of the endpoint with its attempts."""
    view = log.get_delivery(
        session, tenant_id=tenant.id, delivery_id=delivery_id, endpoint_id=webhook_id
    )
    return WebhookDeliveryOut.from_view(view, base_url=settings.api.public_base_url)


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=WebhookDeliveryOut,
    summary="Send a delivery again",
    responses=problem_responses(404, 409),
)
def retry_delivery(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    queue: DeliveryQueueDep,
    policy: DeliveryPolicyDep,
) -> WebhookDeliveryOut:
    """One more attempt now, with the original ``webhook-id``. 409 ``delivery_in_progress``
    while it is being sent, 409 ``webhook_disabled`` if the endpoint is disabled."""
    view = dispatch.retry_and_dispatch(
        session,
        queue,
        policy,
        tenant_id=tenant.id,
        delivery_id=delivery_id,
        endpoint_id=webhook_id,
    )
    return WebhookDeliveryOut.from_view(view, base_url=settings.api.public_base_url)


@router.post(
    "/v1/webhooks/{webhook_id}/recover",
    status_code=202,
    response_model=WebhookRecoverOut,
    summary="Re-send failed deliveries",
    responses=problem_responses(404, 409, 422),
)
def recover(
    webhook_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    queue: DeliveryQueueDep,
    policy: DeliveryPolicyDep,
    since: Since,
) -> WebhookRecoverOut:
    """Send every ``failed`` delivery created since ``since`` once more, each with its original
    ``webhook-id`` (e.g. after an outage of your receiver). 409 ``webhook_disabled`` if the
    endpoint is disabled."""
    ids = dispatch.recover_and_dispatch(
        session, queue, policy, tenant_id=tenant.id, endpoint_id=webhook_id, since=since
    )
    return WebhookRecoverOut(recovered=len(ids), delivery_ids=ids)

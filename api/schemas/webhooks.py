"""Webhook bodies: endpoints, the tenant's default secret, deliveries and their attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from api.schemas.common import ErrorInfo, InModel, OutModel
from core.db.models import (
    WebhookAttempt,
    WebhookDeliveryState,
    WebhookDisabledReason,
    WebhookEndpoint,
    WebhookTenantSecret,
)
from core.netguard.classify import MAX_URL_LENGTH
from core.services.webhooks.endpoints import SUBSCRIBABLE_EVENTS
from core.services.webhooks.log import DeliveryView
from core.services.webhooks.outbox import webhook_id

#: An endpoint's description: free text, stored as is (no NUL character: not storable as text).
ENDPOINT_DESCRIPTION = "Your note about the endpoint, at most 500 characters (no U+0000)."

__all__ = [
    "WebhookCreate",
    "WebhookDeliveryOut",
    "WebhookOut",
    "WebhookRecoverOut",
    "WebhookSecretOut",
    "WebhookUpdate",
    "WebhookWithSecretOut",
]


EVENTS_DESCRIPTION = (
    "Event types delivered to this endpoint: "
    + ", ".join(f"`{name}`" for name in SUBSCRIBABLE_EVENTS)
    + ". Omitted or null: all of them. `ping` is sent on request only."
)


class WebhookCreate(InModel):
    """JSON body of ``POST /v1/webhooks``."""

    url: str = Field(
        max_length=MAX_URL_LENGTH,
        description="http(s) URL reached with a POST per event; it must resolve to public "
        "addresses (422 `webhook_url_forbidden` otherwise).",
    )
    events: list[str] | None = Field(default=None, description=EVENTS_DESCRIPTION)
    description: str | None = Field(
        default=None, max_length=500, pattern=r"^[^\x00]*$", description=ENDPOINT_DESCRIPTION
    )
    enabled: bool = Field(default=True, description="False registers it disabled.")


def _drop_default(schema: dict[str, Any]) -> None:
    """Leave a field's ``default: null`` out of its JSON schema (null is not a valid value)."""
    schema.pop("default", None)


class WebhookUpdate(InModel):
    """JSON body of ``PATCH /v1/webhooks/{id}``: only the fields sent are changed."""

    # url and enabled cannot be null (422): their schema is a string and a boolean, unset
    # when absent (None here only stands for "not sent").
    url: Annotated[str, Field(max_length=MAX_URL_LENGTH)] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_drop_default
    )
    events: list[str] | None = Field(
        default=None, description="New event types; null subscribes to all of them."
    )
    description: str | None = Field(
        default=None, max_length=500, pattern=r"^[^\x00]*$", description=ENDPOINT_DESCRIPTION
    )
    enabled: bool | SkipJsonSchema[None] = Field(
        default=None,
        json_schema_extra=_drop_default,
        description="false disables it (pending deliveries fail); true enables it again.",
    )


class WebhookLinks(OutModel):
    self_: str = Field(alias="self")
    deliveries: str


class WebhookOut(OutModel):
    """A registered webhook endpoint (its secret is shown only when created or rotated)."""

    id: uuid.UUID
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    disabled_reason: WebhookDisabledReason | None = Field(
        description="`manual`, `gone` (the receiver answered 410) or `failing` (every attempt "
        "failed for days); null while enabled."
    )
    disabled_at: datetime | None
    failing_since: datetime | None = Field(
        description="First failed attempt since the last success; null while healthy."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then the previous secret signs deliveries too."
    )
    created_at: datetime
    updated_at: datetime
    links: WebhookLinks

    @classmethod
    def fields_from(cls, endpoint: WebhookEndpoint, *, base_url: str) -> dict[str, Any]:
        """The resource's fields from a row (shared with :class:`WebhookWithSecretOut`)."""
        url = f"{base_url}/v1/webhooks/{endpoint.id}"
        return {
            "id": endpoint.id,
            "url": endpoint.url,
            "description": endpoint.description,
            "events": list(endpoint.events or []),
            "enabled": endpoint.enabled,
            "disabled_reason": endpoint.disabled_reason,
            "disabled_at": endpoint.disabled_at,
            "failing_since": endpoint.failing_since,
            "previous_secret_expires_at": endpoint.previous_secret_expires_at,
            "created_at": endpoint.created_at,
            "updated_at": endpoint.updated_at,
            "links": WebhookLinks.model_validate({"self": url, "deliveries": f"{url}/deliveries"}),
        }

    @classmethod
    def from_endpoint(cls, endpoint: WebhookEndpoint, *, base_url: str) -> WebhookOut:
        """Build the resource from a row.

        Parameters
        ----------
        endpoint
            The endpoint row.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        WebhookOut
            The response body.
        """
        return cls(**cls.fields_from(endpoint, base_url=base_url))


class WebhookWithSecretOut(WebhookOut):
    """A webhook endpoint with its signing secret: shown once, when created or rotated."""

    secret: str = Field(
        description="`whsec_` + base64 of 32 random bytes: verify deliveries with it "
        "(Standard Webhooks). Not shown again."
    )

    @classmethod
    def from_endpoint_with_secret(
        cls, endpoint: WebhookEndpoint, *, base_url: str
    ) -> WebhookWithSecretOut:
        """Build the resource, secret included, from a row."""
        return cls(**cls.fields_from(endpoint, base_url=base_url), secret=endpoint.secret)


class WebhookSecretOut(OutModel):
    """The tenant's default secret: it signs deliveries to a comparison's or batch's
    ``webhook_url``."""

    secret: str = Field(description="`whsec_` + base64 of 32 random bytes.")
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then the previous secret signs deliveries too."
    )
    created_at: datetime
    rotated_at: datetime | None

    @classmethod
    def from_row(cls, row: WebhookTenantSecret) -> WebhookSecretOut:
        """Build the resource from a row."""
        return cls(
            secret=row.secret,
            previous_secret_expires_at=row.previous_secret_expires_at,
            created_at=row.created_at,
            rotated_at=row.rotated_at,
        )


class WebhookAttemptOut(OutModel):
    """One HTTP attempt of a delivery."""

    number: int = Field(description="1 for the first attempt.")
    started_at: datetime
    duration_ms: int | None
    status_code: int | None = Field(description="The receiver's HTTP status; null if none.")
    error: ErrorInfo | None = Field(
        description="Null on success; else `http_<status>`, `timeout`, `connection_error`, "
        "`forbidden_destination`, `tls_error` or `worker_lost`."
    )
    response_body: str | None = Field(description="The first kilobyte of the answer.")

    @classmethod
    def from_attempt(cls, attempt: WebhookAttempt) -> WebhookAttemptOut:
        """Build the resource from a row."""
        error = None
        if attempt.error_code is not None:
            error = ErrorInfo(code=attempt.error_code, message=attempt.error_message or "")
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.status_code,
            error=error,
            response_body=attempt.response_body,
        )


class WebhookDeliveryLinks(OutModel):
    self_: str = Field(alias="self")
    retry: str


class WebhookDeliveryOut(OutModel):
    """One event's delivery to one target (an endpoint, or an ad-hoc `webhook_url`), with
    every attempt."""

    id: uuid.UUID
    event_id: uuid.UUID
    webhook_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: str
    subject_id: uuid.UUID | None = Field(
        description="The comparison, batch or endpoint the event is about."
    )
    endpoint_id: uuid.UUID | None = Field(
        description="The registered endpoint; null for the ad-hoc `webhook_url` of a "
        "comparison or a batch (signed with the default secret)."
    )
    url: str = Field(
        description="The target when the delivery was created (an endpoint's current URL is "
        "used when sending)."
    )
    state: WebhookDeliveryState = Field(
        description="`pending` (next attempt at `next_attempt_at`), `sending`, `succeeded` or "
        "`failed` (final; retry or recover it)."
    )
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[WebhookAttemptOut]
    links: WebhookDeliveryLinks

    @classmethod
    def from_view(cls, view: DeliveryView, *, base_url: str) -> WebhookDeliveryOut:
        """Build the resource from the service's view (delivery, event type, attempts).

        Parameters
        ----------
        view
            What ``core.services.webhooks`` returns.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        WebhookDeliveryOut
            The response body.
        """
        delivery = view.delivery
        if delivery.endpoint_id is None:  # ad hoc: only in the tenant-wide log
            url = f"{base_url}/v1/webhook-deliveries/{delivery.id}"
        else:
            url = f"{base_url}/v1/webhooks/{delivery.endpoint_id}/deliveries/{delivery.id}"
        pending = delivery.state == WebhookDeliveryState.PENDING
        return cls(
            id=delivery.id,
            event_id=delivery.event_id,
            webhook_id=webhook_id(delivery.event_id),
            event_type=view.event_type,
            subject_id=view.subject_id,
            endpoint_id=delivery.endpoint_id,
            url=delivery.url,
            state=delivery.state,
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.due_at if pending else None,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            finished_at=delivery.finished_at,
            attempts=[WebhookAttemptOut.from_attempt(a) for a in view.attempts],
            links=WebhookDeliveryLinks.model_validate({"self": url, "retry": f"{url}/retry"}),
        )


class WebhookRecoverOut(OutModel):
    """``POST /v1/webhooks/{id}/recover`` and ``POST /v1/webhook-deliveries/recover``: the
    failed deliveries sent again."""

    recovered: int = Field(description="Deliveries made pending again (one attempt each).")
    delivery_ids: list[uuid.UUID]

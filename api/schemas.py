"""Request and response bodies of the v1 API (pydantic models; they define the OpenAPI schema).

Responses are built from the database rows with the ``from_*`` constructors; links are absolute
URLs on ``settings.api.public_base_url``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema, core_schema

from core.db.models import (
    Batch,
    Comparison,
    ComparisonState,
    Image,
    ImageStatus,
    WebhookAttempt,
    WebhookDeliveryState,
    WebhookDisabledReason,
    WebhookEndpoint,
    WebhookTenantSecret,
)
from core.netguard.classify import MAX_URL_LENGTH
from core.services.batches import BatchSummary, ItemOutcome
from core.services.images import PresignedUpload
from core.services.options import ComparisonOptions
from core.services.webhooks.endpoints import SUBSCRIBABLE_EVENTS
from core.services.webhooks.log import DeliveryView
from core.services.webhooks.outbox import webhook_id

__all__ = [
    "BatchCreate",
    "BatchCreatedOut",
    "BatchItemIn",
    "BatchItemOutcome",
    "BatchOut",
    "ComparisonCreate",
    "ComparisonOut",
    "ErrorInfo",
    "ImageOut",
    "Page",
    "PresignOut",
    "Problem",
    "Readiness",
    "WebhookCreate",
    "WebhookDeliveryOut",
    "WebhookOut",
    "WebhookRecoverOut",
    "WebhookSecretOut",
    "WebhookUpdate",
    "WebhookWithSecretOut",
]

#: An endpoint's description: free text, stored as is (no NUL character: not storable as text).
ENDPOINT_DESCRIPTION = "Your note about the endpoint, at most 500 characters (no U+0000)."

OPTIONS_DESCRIPTION = (
    "Engine options (every field optional; see `ComparisonOptions`). Validated by the service: "
    "422 `invalid_request` for a comparison, an `invalid_options` item error in a batch."
)
METADATA_DESCRIPTION = "Your own JSON object (a reference, a build number), echoed back as is."


def _check_url(value: str | None) -> str | None:
    """Accept an absolute http(s) URL of at most :data:`MAX_URL_LENGTH` characters."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


class _OptionsObject:
    """Request ``options``: any JSON object here, documented as :class:`ComparisonOptions`.

    The service validates it with that model (``core.services.options.parse_options``): a
    bad comparison is refused with 422 ``invalid_request``, a bad batch item gets its own
    ``invalid_options`` error without sinking the batch.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(ComparisonOptions.__pydantic_core_schema__)


#: A request's ``options`` object (documented by the model, validated by the service).
OptionsIn = Annotated[dict[str, Any], _OptionsObject]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI of the problem type: `<base>/problems/<code>`.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str = Field(description="What went wrong this time, in one sentence.")
    code: str = Field(description="Stable machine-readable code (see `GET /problems`).")
    instance: str = Field(description="The request path.")
    request_id: str | None = Field(default=None, description="Id of the request (logs).")


# -- images -----------------------------------------------------------------------------------


class ImageLinks(_Model):
    self_: str = Field(alias="self")


class ImageOut(_Model):
    """An uploaded image: content-addressed by SHA-256, validated from its header."""

    id: uuid.UUID
    status: ImageStatus = Field(description="`pending` until a presigned upload is finalised.")
    sha256: str | None = Field(description="Hex SHA-256 of the bytes (null while pending).")
    size_bytes: int | None = Field(description="File size in bytes.")
    format: str | None = Field(description="Format from the header, e.g. `PNG`, `JPEG`.")
    width: int | None = Field(description="Width in pixels.")
    height: int | None = Field(description="Height in pixels.")
    created_at: datetime
    links: ImageLinks

    @classmethod
    def from_image(cls, image: Image, *, base_url: str) -> ImageOut:
        """Build the resource from a row.

        Parameters
        ----------
        image
            The image row.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        ImageOut
            The response body.
        """
        return cls(
            id=image.id,
            status=image.status,
            sha256=image.sha256,
            size_bytes=image.size_bytes,
            format=image.format,
            width=image.width,
            height=image.height,
            created_at=image.created_at,
            links=ImageLinks.model_validate({"self": f"{base_url}/v1/images/{image.id}"}),
        )


class PresignRequest(_In):
    """Optional body of ``POST /v1/images/presign`` (empty today; reserved)."""


class UploadInstructions(_Model):
    """How to send the bytes: one HTTP request with exactly these method and headers."""

    url: str = Field(description="Where to send the bytes (S3, or the API's own upload URL).")
    method: str = Field(description="HTTP method, `PUT`.")
    headers: dict[str, str] = Field(description="Headers to send with the bytes, exactly.")
    expires_at: datetime = Field(description="The URL stops working after this time.")
    requires_api_key: bool = Field(
        description="True when `url` is the API itself: send `Authorization: Bearer <key>` too."
    )


class PresignOut(_Model):
    """A pending image, where to upload its bytes, and where to finalise it afterwards."""

    image: ImageOut
    upload: UploadInstructions
    finalize_url: str = Field(description="`POST` here once the bytes are uploaded.")

    @classmethod
    def from_presigned(cls, presigned: PresignedUpload, *, base_url: str) -> PresignOut:
        """Build the response from the service's result.

        Parameters
        ----------
        presigned
            The pending image and its upload URL.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        PresignOut
            The response body.
        """
        image_id = presigned.image.id
        return cls(
            image=ImageOut.from_image(presigned.image, base_url=base_url),
            upload=UploadInstructions(
                url=presigned.url,
                method=presigned.method,
                headers=dict(presigned.headers),
                expires_at=presigned.expires_at,
                requires_api_key=presigned.url.startswith(f"{base_url}/"),
            ),
            finalize_url=f"{base_url}/v1/images/{image_id}/finalize",
        )


# -- comparisons ------------------------------------------------------------------------------


class ComparisonCreate(_In):
    """JSON body of ``POST /v1/comparisons``: two ready images of yours, by id."""

    a: uuid.UUID = Field(description="Image A (the reference): an id from `POST /v1/images`.")
    b: uuid.UUID = Field(description="Image B (the candidate).")
    options: OptionsIn | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    metadata: dict[str, Any] | None = Field(default=None, description=METADATA_DESCRIPTION)
    webhook_url: str | None = Field(
        default=None, max_length=MAX_URL_LENGTH, description="Called when the job is final."
    )

    @field_validator("webhook_url")
    @classmethod
    def check_webhook_url(cls, value: str | None) -> str | None:
        """Accept an absolute http(s) URL only."""
        return _check_url(value)


class ErrorInfo(_Model):
    """Why a comparison failed: a stable code and a message."""

    code: str
    message: str


class ComparisonLinks(_Model):
    self_: str = Field(alias="self")
    heatmap: str | None = Field(description="The heatmap PNG once `succeeded`, else null.")


class ComparisonOut(_Model):
    """A comparison job and, once done, its result."""

    id: uuid.UUID
    state: ComparisonState = Field(
        description="`queued`, `running`, then `succeeded`, `failed` or `canceled` (final)."
    )
    a: uuid.UUID = Field(description="Image A's id.")
    b: uuid.UUID = Field(description="Image B's id.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(
        description="Times a worker ran the job (>= 0); a run given back because the database "
        "or storage was unavailable is not counted."
    )
    options: ComparisonOptions = Field(description="The options, defaults filled in.")
    metadata: dict[str, Any] | None
    webhook_url: str | None
    batch_id: uuid.UUID | None
    result: dict[str, Any] | None = Field(
        description="The engine's result contract (scores, verdict, alignment, regions) when "
        "`succeeded`, else null."
    )
    error: ErrorInfo | None = Field(description="When `failed`: why; else null.")
    links: ComparisonLinks

    @classmethod
    def from_comparison(cls, comparison: Comparison, *, base_url: str) -> ComparisonOut:
        """Build the resource from a row.

        Parameters
        ----------
        comparison
            The comparison row.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        ComparisonOut
            The response body.
        """
        url = f"{base_url}/v1/comparisons/{comparison.id}"
        heatmap_ready = (
            comparison.state == ComparisonState.SUCCEEDED and comparison.heatmap_key is not None
        )
        error = None
        if comparison.error_code is not None:
            error = ErrorInfo(code=comparison.error_code, message=comparison.error_message or "")
        return cls(
            id=comparison.id,
            state=comparison.state,
            a=comparison.image_a_id,
            b=comparison.image_b_id,
            created_at=comparison.created_at,
            updated_at=comparison.updated_at,
            started_at=comparison.started_at,
            finished_at=comparison.finished_at,
            attempts=comparison.attempt,
            options=ComparisonOptions.from_stored(comparison.options),
            metadata=comparison.client_metadata,
            webhook_url=comparison.webhook_url,
            batch_id=comparison.batch_id,
            result=comparison.result,
            error=error,
            links=ComparisonLinks.model_validate(
                {"self": url, "heatmap": f"{url}/heatmap" if heatmap_ready else None}
            ),
        )


T = TypeVar("T")


class Page(_Model, Generic[T]):
    """One page of a listing, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[T]
    next_cursor: str | None = Field(description="Null on the last page.")


# -- batches ----------------------------------------------------------------------------------


class BatchItemIn(_In):
    """One pair of a batch."""

    a: uuid.UUID
    b: uuid.UUID
    options: OptionsIn | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    metadata: dict[str, Any] | None = Field(default=None, description=METADATA_DESCRIPTION)


class BatchCreate(_In):
    """JSON body of ``POST /v1/batches``: up to ``limits.max_batch_pairs`` pairs (10,000)."""

    pairs: list[BatchItemIn] = Field(
        min_length=1,
        description="The pairs; a bad pair is reported in `items` and does not sink the batch.",
    )
    metadata: dict[str, Any] | None = Field(default=None, description=METADATA_DESCRIPTION)
    webhook_url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)

    @field_validator("webhook_url")
    @classmethod
    def check_webhook_url(cls, value: str | None) -> str | None:
        """Accept an absolute http(s) URL only."""
        return _check_url(value)


class BatchItemOutcome(_Model):
    """What happened to one pair: its comparison id, or why it was refused."""

    index: int = Field(description="Position of the pair in the request (0-based).")
    comparison_id: uuid.UUID | None
    error: ErrorInfo | None

    @classmethod
    def from_outcome(cls, outcome: ItemOutcome) -> BatchItemOutcome:
        """Build from the service's per-item outcome."""
        error = None
        if outcome.error is not None:
            error = ErrorInfo(
                code=str(outcome.error.get("code", "invalid_request")),
                message=str(outcome.error.get("message", "")),
            )
        return cls(index=outcome.index, comparison_id=outcome.comparison_id, error=error)


class BatchLinks(_Model):
    self_: str = Field(alias="self")
    comparisons: str


class BatchOut(_Model):
    """A batch: counts by state, progress and a summary of verdicts."""

    id: uuid.UUID
    created_at: datetime
    completed_at: datetime | None = Field(description="When the last comparison became final.")
    total: int = Field(description="Comparisons accepted in the batch.")
    counts: dict[str, int] = Field(description="Comparisons by state.")
    progress: float = Field(description="Share of comparisons in a final state, 0..1.")
    verdicts: dict[str, int] = Field(description="Succeeded comparisons by verdict.")
    metadata: dict[str, Any] | None
    webhook_url: str | None
    links: BatchLinks

    @classmethod
    def from_batch(
        cls,
        batch: Batch,
        *,
        base_url: str,
        counts: dict[str, int] | None = None,
        progress: float | None = None,
        verdicts: dict[str, int] | None = None,
    ) -> BatchOut:
        """Build the resource from a row and its counts.

        Parameters
        ----------
        batch
            The batch row.
        base_url
            ``settings.api.public_base_url``.
        counts, progress, verdicts
            From :class:`core.services.batches.BatchSummary`; None for a batch just created
            (every accepted comparison ``queued``).

        Returns
        -------
        BatchOut
            The response body.
        """
        url = f"{base_url}/v1/batches/{batch.id}"
        if counts is None:
            counts = {state.value: 0 for state in ComparisonState}
            counts[ComparisonState.QUEUED.value] = batch.total
        if progress is None:
            progress = 1.0 if batch.total == 0 else 0.0
        return cls(
            id=batch.id,
            created_at=batch.created_at,
            completed_at=batch.completed_at,
            total=batch.total,
            counts=counts,
            progress=progress,
            verdicts=verdicts or {},
            metadata=batch.client_metadata,
            webhook_url=batch.webhook_url,
            links=BatchLinks.model_validate({"self": url, "comparisons": f"{url}/comparisons"}),
        )

    @classmethod
    def from_summary(cls, summary: BatchSummary, *, base_url: str) -> BatchOut:
        """Build the resource from the service's summary."""
        return cls.from_batch(
            summary.batch,
            base_url=base_url,
            counts={str(k): int(v) for k, v in summary.counts.items()},
            progress=summary.progress,
            verdicts={str(k): int(v) for k, v in summary.verdicts.items()},
        )


class BatchCreatedOut(BatchOut):
    """``POST /v1/batches``: the batch and one outcome per requested pair."""

    accepted: int = Field(description="Pairs that became comparisons.")
    rejected: int = Field(description="Pairs refused (see `items[].error`).")
    items: list[BatchItemOutcome]


# -- health -----------------------------------------------------------------------------------


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: every dependency answered."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(
        description="Per dependency (`database`, `broker`, `storage`): `ok` or `error: ...`."
    )


# -- webhooks ---------------------------------------------------------------------------------

EVENTS_DESCRIPTION = (
    "Event types delivered to this endpoint: "
    + ", ".join(f"`{name}`" for name in SUBSCRIBABLE_EVENTS)
    + ". Omitted or null: all of them. `ping` is sent on request only."
)


class WebhookCreate(_In):
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


class WebhookUpdate(_In):
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


class WebhookLinks(_Model):
    self_: str = Field(alias="self")
    deliveries: str


class WebhookOut(_Model):
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


class WebhookSecretOut(_Model):
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


class WebhookAttemptOut(_Model):
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


class WebhookDeliveryLinks(_Model):
    self_: str = Field(alias="self")
    retry: str


class WebhookDeliveryOut(_Model):
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


class WebhookRecoverOut(_Model):
    """``POST /v1/webhooks/{id}/recover`` and ``POST /v1/webhook-deliveries/recover``: the
    failed deliveries sent again."""

    recovered: int = Field(description="Deliveries made pending again (one attempt each).")
    delivery_ids: list[uuid.UUID]

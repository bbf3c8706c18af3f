"""Request and response bodies of the v1 API (pydantic models; they define the OpenAPI schema).

Responses are built from the database rows with the ``from_*`` constructors; links are absolute
URLs on ``settings.api.public_base_url``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.db.models import Batch, Comparison, ComparisonState, Image, ImageStatus
from core.services.batches import BatchSummary, ItemOutcome
from core.services.images import PresignedUpload

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
]

#: Longest webhook URL accepted, in characters (the database column's size).
MAX_URL_LENGTH = 2048

OPTIONS_DESCRIPTION = (
    "Engine options: `mode` (`auto` | `pixel` | `align`), `ignore` ([[x, y, w, h], ...] in A's "
    "pixels), `tolerance` (0..1 of the data range), `fail_under` (SSIM threshold 0..1). "
    "Validated by the service (422 `invalid_options`)."
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
    options: dict[str, Any] | None = Field(default=None, description=OPTIONS_DESCRIPTION)
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
    attempts: int = Field(description="Times a worker picked the job up (>= 0).")
    options: dict[str, Any]
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
            options=comparison.options or {},
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
    options: dict[str, Any] | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    metadata: dict[str, Any] | None = Field(default=None, description=METADATA_DESCRIPTION)


class BatchCreate(_In):
    """JSON body of ``POST /v1/batches``: up to ``limits.max_batch_pairs`` pairs (10,000)."""

    pairs: list[BatchItemIn] = Field(
        description="The pairs; a bad pair is reported in `items` and does not sink the batch."
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

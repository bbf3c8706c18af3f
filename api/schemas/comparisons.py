"""Comparison bodies: the JSON request of ``POST /v1/comparisons`` and the job resource."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from api.schemas.common import (
    METADATA_DESCRIPTION,
    OPTIONS_DESCRIPTION,
    ErrorInfo,
    InModel,
    OptionsIn,
    OutModel,
    check_http_url,
)
from core.db.models import Comparison, ComparisonState
from core.netguard.classify import MAX_URL_LENGTH
from core.services.options import ComparisonOptions

__all__ = [
    "ComparisonCreate",
    "ComparisonOut",
]


class ComparisonCreate(InModel):
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
        return check_http_url(value)


class ComparisonLinks(OutModel):
    self_: str = Field(alias="self")
    heatmap: str | None = Field(description="The heatmap PNG once `succeeded`, else null.")


class ComparisonOut(OutModel):
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

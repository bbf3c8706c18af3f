"""Batch bodies: ``POST /v1/batches`` and the batch resource with its counts."""

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
from core.db.models import Batch, ComparisonState
from core.netguard.classify import MAX_URL_LENGTH
from core.services.batches import BatchSummary, ItemOutcome

__all__ = [
    "BatchCreate",
    "BatchCreatedOut",
    "BatchItemIn",
    "BatchItemOutcome",
    "BatchOut",
]


class BatchItemIn(InModel):
    """One pair of a batch."""

    a: uuid.UUID
    b: uuid.UUID
    options: OptionsIn | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    metadata: dict[str, Any] | None = Field(default=None, description=METADATA_DESCRIPTION)


class BatchCreate(InModel):
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
        return check_http_url(value)


class BatchItemOutcome(OutModel):
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


class BatchLinks(OutModel):
    self_: str = Field(alias="self")
    comparisons: str


class BatchOut(OutModel):
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

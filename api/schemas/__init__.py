"""Request and response bodies of the v1 API (pydantic models; they define the OpenAPI schema).

One module per resource (``images``, ``comparisons``, ``batches``, ``webhooks``, ``health``);
what they share (base models, the problem document, pages, the ``options`` object) is in
``common``. Responses are built from the database rows with the ``from_*`` constructors; links are
absolute URLs on ``settings.api.public_base_url``.
"""

from api.schemas.batches import (
    BatchCreate,
    BatchCreatedOut,
    BatchItemIn,
    BatchItemOutcome,
    BatchOut,
)
from api.schemas.common import ErrorInfo, Page, Problem
from api.schemas.comparisons import ComparisonCreate, ComparisonOut
from api.schemas.health import Health, Readiness
from api.schemas.images import ImageOut, PresignOut
from api.schemas.webhooks import (
    WebhookCreate,
    WebhookDeliveryOut,
    WebhookOut,
    WebhookRecoverOut,
    WebhookSecretOut,
    WebhookUpdate,
    WebhookWithSecretOut,
)

__all__ = [
    "BatchCreate",
    "BatchCreatedOut",
    "BatchItemIn",
    "BatchItemOutcome",
    "BatchOut",
    "ComparisonCreate",
    "ComparisonOut",
    "ErrorInfo",
    "Health",
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

"""The v1 routes, one module per resource, plus operations (health, metrics, problem types).

Route modules do not import each other: what several share (problem responses, the paging
parameters, the delivery-log filters) is here.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime

from api.errors import PROBLEM_MEDIA_TYPE
from api.schemas import Page, Problem, WebhookDeliveryOut
from core.config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Settings
from core.services.webhooks.log import DeliveryPage

__all__ = [
    "Cursor",
    "Limit",
    "Since",
    "SubjectId",
    "delivery_page_out",
    "page_limit",
    "problem_responses",
]

_DESCRIPTIONS = {
    400: "Malformed request (`bad_request`).",
    401: "Missing or invalid API key (`unauthorized`).",
    404: "Not found, or not yours (`not_found`).",
    409: "Conflict (`conflict`, `idempotency_key_in_progress`).",
    413: "Too large (`payload_too_large`, `image_too_large`, `batch_too_large`).",
    415: "Unsupported media type (`unsupported_media_type`).",
    422: "Invalid request (`validation_error`, `invalid_options`, `idempotency_key_reused`, ...).",
    429: "Rate limit exceeded (`rate_limited`, `too_many_failed_logins`); see `Retry-After`.",
    503: "A dependency is unavailable; see `Retry-After`.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers.

    Parameters
    ----------
    statuses
        HTTP status codes the route may answer with a problem (401 and 429 are always added).

    Returns
    -------
    dict
        For FastAPI's ``responses=`` argument.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({401, 429, *statuses}):
        out[status] = {
            "model": Problem,
            "description": _DESCRIPTIONS.get(status, "Error."),
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
    return out


def page_limit(limit: int | None, settings: Settings) -> int:
    """The page size to use: ``limit``, or :data:`DEFAULT_PAGE_SIZE` capped by the settings.

    An explicit ``limit`` above ``limits.page_size_max`` is refused like any other invalid
    query value (422 ``validation_error``).
    """
    maximum = min(MAX_PAGE_SIZE, settings.limits.page_size_max)
    if limit is None:
        return min(DEFAULT_PAGE_SIZE, maximum)
    if limit > maximum:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "limit"),
                    "msg": f"Input should be less than or equal to {maximum}",
                    "input": limit,
                }
            ]
        )
    return limit


#: The ``limit`` query parameter of a listing.
Limit = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_PAGE_SIZE,
        description=f"Items per page, 1..{MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}).",
    ),
]
#: The ``cursor`` query parameter of a listing.
Cursor = Annotated[
    str | None,
    Query(
        max_length=512,
        description="The opaque `next_cursor` of the previous page; any other value is 422 "
        "(`invalid_request`).",
    ),
]
#: A delivery-log filter: the deliveries of events about one comparison or batch.
SubjectId = Annotated[
    uuid.UUID | None,
    Query(description="A comparison or batch id: only the deliveries of events about it."),
]
#: The ``since`` of a recover request.
Since = Annotated[
    AwareDatetime,
    Query(description="Re-send the failed deliveries created at or after this time."),
]


def delivery_page_out(page: DeliveryPage, settings: Settings) -> Page[WebhookDeliveryOut]:
    """A page of the delivery log as the API shows it."""
    base = settings.api.public_base_url
    return Page[WebhookDeliveryOut](
        items=[WebhookDeliveryOut.from_view(v, base_url=base) for v in page.items],
        next_cursor=page.next_cursor,
    )

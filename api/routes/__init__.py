"""The v1 routes, one module per resource, plus operations (health, metrics, problem types)."""

from __future__ import annotations

from typing import Any

from api.errors import PROBLEM_MEDIA_TYPE
from api.schemas import Problem

__all__ = ["problem_responses"]

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

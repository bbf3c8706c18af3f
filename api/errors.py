"""The ONE place where exceptions become HTTP responses: RFC 9457 ``application/problem+json``.

Every error the API returns is a problem document::

    {"type": "<base>/problems/<code>", "title": "...", "status": 404, "detail": "...",
     "code": "not_found", "instance": "/v1/comparisons/...", "request_id": "..."}

plus extension members (``errors`` for validation failures, ``retry_after_s``, the service
error's ``details``). ``code`` is stable and machine-readable; ``detail`` is one human sentence;
a stack trace never appears in a body (unexpected errors are logged, and answered with
``internal_error``).

Services raise :class:`core.services.errors.ServiceError` subclasses (a database, storage or
secret-box error that escaped them is translated by ``core.services.translate``: this module
names no lower layer), FastAPI raises ``RequestValidationError`` and Starlette
``HTTPException``: :func:`problem_for_exception` maps each of them, :func:`install_error_handlers`
registers the mapping on the app, and the request middleware answers anything else with
:func:`internal_error_response`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.imaging.errors import ErrorCode
from core.services.errors import (
    Conflict,
    Forbidden,
    IdempotencyInProgress,
    IdempotencyMismatch,
    ImageRejected,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from core.services.translate import TRANSLATED, as_service_error

__all__ = [
    "CODE_STATUS",
    "PROBLEM_MEDIA_TYPE",
    "ApiProblem",
    "PayloadTooLarge",
    "install_error_handlers",
    "internal_error_response",
    "problem_for_exception",
    "problem_response",
    "response_for_exception",
]

log = structlog.get_logger("api.errors")

#: Media type of every error body (RFC 9457).
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"

#: Seconds a client is told to wait (``Retry-After``) when a dependency is unavailable.
UNAVAILABLE_RETRY_AFTER_S: Final = 5

#: Stable codes the API itself emits, with their HTTP status (the services' codes come from
#: their exception class; see :data:`CODE_STATUS` for the full documented table).
_HTTP_CODES: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}

#: The documented table of codes and statuses (also served at ``GET /problems``).
CODE_STATUS: Final[dict[str, int]] = {
    "bad_request": 400,
    "unauthorized": 401,
    "signin_token_invalid": 401,
    "forbidden": 403,
    "csrf_failed": 403,
    "not_found": 404,
    "heatmap_not_ready": 404,
    "preview_not_available": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "upload_missing": 409,
    "image_already_ready": 409,
    "image_not_ready": 409,
    "idempotency_key_in_progress": 409,
    "webhook_disabled": 409,
    "delivery_in_progress": 409,
    "payload_too_large": 413,
    "image_too_large": 413,
    "batch_too_large": 413,
    "limit_exceeded": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "invalid_request": 422,
    "invalid_options": 422,
    "invalid_idempotency_key": 422,
    "idempotency_key_reused": 422,
    "empty_file": 422,
    "unsupported_format": 422,
    "corrupt_image": 422,
    "image_rejected": 422,
    "webhook_url_forbidden": 422,
    "rate_limited": 429,
    "too_many_failed_logins": 429,
    "internal_error": 500,
    "storage_error": 500,
    "secret_key_missing": 500,
    "secret_format_unknown": 500,
    "service_unavailable": 503,
    "too_many_uploads": 503,
    "storage_unavailable": 503,
    "database_unavailable": 503,
}

_TITLES: Final[dict[str, str]] = {
    "bad_request": "Bad request",
    "unauthorized": "Missing or invalid API key",
    "signin_token_invalid": "Sign-in link used or expired",
    "forbidden": "Forbidden",
    "csrf_failed": "Missing or wrong CSRF token",
    "not_found": "Not found",
    "heatmap_not_ready": "Heatmap not ready",
    "preview_not_available": "Preview not available",
    "method_not_allowed": "Method not allowed",
    "conflict": "Conflict",
    "upload_missing": "Nothing uploaded yet",
    "image_already_ready": "Image already finalised",
    "image_not_ready": "Image not ready",
    "idempotency_key_in_progress": "A request with this Idempotency-Key is in progress",
    "webhook_disabled": "Webhook endpoint disabled",
    "delivery_in_progress": "Delivery in progress",
    "webhook_url_forbidden": "Webhook URL not allowed",
    "payload_too_large": "Request body too large",
    "image_too_large": "Image too large",
    "batch_too_large": "Batch too large",
    "limit_exceeded": "Limit exceeded",
    "unsupported_media_type": "Unsupported media type",
    "validation_error": "Request validation failed",
    "invalid_request": "Invalid request",
    "invalid_options": "Invalid comparison options",
    "invalid_idempotency_key": "Invalid Idempotency-Key header",
    "idempotency_key_reused": "Idempotency-Key reused with a different request",
    "empty_file": "Empty file",
    "unsupported_format": "Unsupported image format",
    "corrupt_image": "Corrupt image",
    "image_rejected": "Image rejected",
    "rate_limited": "Too many requests",
    "too_many_failed_logins": "Too many failed authentications from this address",
    "internal_error": "Internal server error",
    "storage_error": "Storage error",
    "secret_key_missing": "A stored secret cannot be decrypted",
    "secret_format_unknown": "A stored secret has an unknown format",
    "service_unavailable": "Service unavailable",
    "too_many_uploads": "Too many uploads in progress",
    "storage_unavailable": "Storage unavailable",
    "database_unavailable": "Database unavailable",
}

# Members of the problem document that extension members may not overwrite.
_RESERVED: Final = frozenset({"type", "title", "status", "detail", "code", "instance"})


class PayloadTooLarge(StarletteHTTPException):
    """The request body is larger than the route accepts (HTTP 413, ``payload_too_large``).

    Raised while the body is read (see :mod:`api.middleware`); FastAPI re-raises HTTP
    exceptions met while parsing a body, so it reaches the handlers here.

    Parameters
    ----------
    limit_bytes
        The largest body accepted for the route, in bytes.
    """

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            status_code=413, detail=f"the request body exceeds the limit of {limit_bytes} bytes"
        )
        self.limit_bytes = limit_bytes


@dataclass
class ApiProblem:
    """A problem document before rendering.

    Attributes
    ----------
    status
        HTTP status code (400..599).
    code
        Stable machine-readable code.
    detail
        One human sentence about this occurrence.
    headers
        Extra response headers (``WWW-Authenticate``, ``Retry-After``, ``Allow``).
    extras
        Extension members merged into the body.
    """

    status: int
    code: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """Short summary of the problem type (the same for every occurrence of ``code``)."""
        if self.code in _TITLES:
            return _TITLES[self.code]
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"


def _service_status(exc: ServiceError) -> tuple[int, dict[str, str]]:
    """HTTP status and extra headers of a service error (most specific class first)."""
    if isinstance(exc, Unauthorized):
        return 401, {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, Forbidden):
        return 403, {}
    if isinstance(exc, RateLimited):
        return 429, {"Retry-After": str(max(1, int(exc.retry_after_s)))}
    if isinstance(exc, Unavailable):
        return 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
    if isinstance(exc, ImageRejected):
        return (413 if exc.code == ErrorCode.IMAGE_TOO_LARGE.value else 422), {}
    if isinstance(exc, LimitExceeded):
        return 413, {}
    if isinstance(exc, NotFound):
        return 404, {}
    if isinstance(exc, IdempotencyMismatch):
        return 422, {}
    if isinstance(exc, IdempotencyInProgress):
        return 409, {"Retry-After": "1"}
    if isinstance(exc, Conflict):
        return 409, {}
    if isinstance(exc, InvalidRequest):
        return 422, {}
    # A ServiceError of no known kind (e.g. ``storage_error``): the server's fault.
    return 500, {}


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI error dicts without the offending input (never echo request bodies)."""
    out: list[dict[str, Any]] = []
    for error in errors:
        if not isinstance(error, Mapping):
            out.append({"loc": [], "msg": str(error), "type": "value_error"})
            continue
        item: dict[str, Any] = {
            "loc": [part if isinstance(part, int | str) else str(part) for part in error["loc"]]
            if "loc" in error
            else [],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "value_error")),
        }
        out.append(item)
    return out


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    """One sentence naming the first invalid field."""
    if not errors:
        return "the request is invalid"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def problem_for_exception(exc: BaseException) -> ApiProblem | None:
    """Map a known exception to a :class:`ApiProblem`; None for an unexpected exception.

    Parameters
    ----------
    exc
        The exception raised while handling a request.

    Returns
    -------
    ApiProblem or None
        The problem to answer with, or None when ``exc`` is a bug (answer 500, log it).
    """
    translated = as_service_error(exc)  # a database, storage or secret-box error: the services'
    if translated is not None:
        exc = translated
    if isinstance(exc, ServiceError):
        status, headers = _service_status(exc)
        extras = {k: v for k, v in exc.details.items() if k not in _RESERVED}
        return ApiProblem(status, exc.code, exc.message, headers=headers, extras=extras)
    if isinstance(exc, RequestValidationError):
        errors = _validation_errors(exc.errors())
        detail = _validation_detail(errors)
        return ApiProblem(422, "validation_error", detail, extras={"errors": errors})
    if isinstance(exc, PayloadTooLarge):
        return ApiProblem(
            413, "payload_too_large", str(exc.detail), extras={"limit_bytes": exc.limit_bytes}
        )
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        if isinstance(exc.detail, str):
            detail = exc.detail
        else:
            detail = ApiProblem(exc.status_code, code, "").title
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such resource"
        return ApiProblem(exc.status_code, code, detail, headers=dict(exc.headers or {}))
    return None


def _problem_type(request: Request, code: str) -> str:
    """The ``type`` URI of ``code``: ``<public_base_url>/problems/<code>`` (served by the API)."""
    settings = getattr(request.app.state, "settings", None)
    base = settings.api.public_base_url if settings is not None else ""
    return f"{base}/problems/{code}"


def problem_response(request: Request, problem: ApiProblem) -> JSONResponse:
    """Render ``problem`` as an ``application/problem+json`` response for ``request``.

    Parameters
    ----------
    request
        The request being answered (gives ``instance`` and the request id).
    problem
        What went wrong.

    Returns
    -------
    JSONResponse
        Status ``problem.status``, its headers, media type ``application/problem+json``.
    """
    body: dict[str, Any] = {
        "type": _problem_type(request, problem.code),
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id is not None:
        body["request_id"] = request_id
    for key, value in problem.extras.items():
        if key not in _RESERVED:
            body[key] = value
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def response_for_exception(request: Request, exc: BaseException) -> Response | None:
    """The problem response for a known exception, or None for an unexpected one.

    Parameters
    ----------
    request
        The request being answered.
    exc
        The exception raised while handling it.

    Returns
    -------
    Response or None
        None means: a bug; re-raise it (the middleware logs it and answers 500).
    """
    problem = problem_for_exception(exc)
    if problem is None:
        return None
    if problem.status >= 500:
        log.warning(
            "server_side_error", code=problem.code, error=type(exc).__name__, detail=str(exc)
        )
    return problem_response(request, problem)


def internal_error_response(request: Request) -> JSONResponse:
    """The 500 ``internal_error`` answer to an unexpected exception (no details leak).

    Parameters
    ----------
    request
        The request being answered.

    Returns
    -------
    JSONResponse
        A problem document with status 500.
    """
    return problem_response(
        request,
        ApiProblem(500, "internal_error", "an unexpected error occurred; it has been logged"),
    )


async def _handle(request: Request, exc: Exception) -> Response:
    """Exception handler registered for every known exception type."""
    response = response_for_exception(request, exc)
    if response is None:  # only registered for mapped types: cannot happen
        raise exc
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json mapping on ``app`` for every known exception type.

    Parameters
    ----------
    app
        The application.
    """
    for exc_type in (
        ServiceError,
        RequestValidationError,
        StarletteHTTPException,
        *TRANSLATED,
    ):
        app.add_exception_handler(exc_type, _handle)

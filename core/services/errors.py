"""Service errors: each carries a stable ``code``; ``api/errors.py`` maps them to HTTP once."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of the errors a use case raises for its caller to report.

    ``code`` is stable and machine-readable; ``message`` is one human sentence; ``details``
    optional JSON-ready context (e.g. the limit that was exceeded).
    """

    code: str = "service_error"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class Unauthorized(ServiceError):
    """Missing, malformed, unknown or revoked API key (HTTP 401)."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """Authenticated, but this request is refused (HTTP 403; e.g. ``csrf_failed``)."""

    code = "forbidden"


class NotFound(ServiceError):
    """The resource does not exist for this tenant (HTTP 404; also for other tenants' ids)."""

    code = "not_found"


class InvalidRequest(ServiceError):
    """The request is well-formed JSON but makes no sense (HTTP 422), e.g. bad options."""

    code = "invalid_request"


class ImageRejected(ServiceError):
    """An uploaded image failed validation; ``code`` is the engine's code (HTTP 422/413)."""

    code = "image_rejected"


class Conflict(ServiceError):
    """The resource's state forbids the action (HTTP 409), e.g. an upload not finalised yet."""

    code = "conflict"


class LimitExceeded(ServiceError):
    """A size or count limit was exceeded (HTTP 413), e.g. ``batch_too_large``."""

    code = "limit_exceeded"


class RateLimited(ServiceError):
    """Too many requests for this key (HTTP 429); ``retry_after_s`` says when to come back."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class TooManyFailedLogins(RateLimited):
    """Too many failed API-key checks from this client address (HTTP 429, ``Retry-After``)."""

    code = "too_many_failed_logins"


class IdempotencyMismatch(ServiceError):
    """The same Idempotency-Key was sent with a different request (HTTP 422)."""

    code = "idempotency_key_reused"


class IdempotencyInProgress(ServiceError):
    """A request with this Idempotency-Key is still being processed (HTTP 409)."""

    code = "idempotency_key_in_progress"


class Unavailable(ServiceError):
    """A dependency (database, storage, broker) is unavailable: transient (HTTP 503)."""

    code = "service_unavailable"


class TimeLimitExceeded(ServiceError):
    """The worker's soft time limit interrupted a job (raised by the worker, never the API)."""

    code = "time_limit_exceeded"


class ClaimNotReleased(Unavailable):
    """The database was away when a job had to be given back: attempt ``attempt`` still holds
    it. The retry passes ``resume_attempt=attempt`` so it is taken over without a crash."""

    def __init__(self, message: str, *, attempt: int) -> None:
        super().__init__(message)
        self.attempt = attempt

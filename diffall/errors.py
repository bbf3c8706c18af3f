"""The errors of the Python client: every error answer of the API (problem+json: its stable
``code``, the HTTP ``status``, the ``detail``), a transport failure, and a wait that gave up."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["DiffallError", "DiffallTimeoutError", "error_from", "retry_after_s"]


class DiffallError(Exception):
    """An error answer of the API, or a transport failure.

    Attributes
    ----------
    status : int
        HTTP status code (0 for a transport failure or a client-side timeout).
    code : str
        Stable machine-readable code from the problem+json body (e.g. ``not_found``,
        ``corrupt_image``, ``rate_limited``); ``http_<status>`` when the body had none,
        ``transport_error`` / ``timeout`` for client-side failures.
    detail : str
        Human-readable explanation.
    problem : dict
        The whole problem+json body (empty when there was none).
    retry_after_s : float or None
        The ``Retry-After`` header in seconds, when the server sent one (429, 503).
    """

    def __init__(
        self,
        *,
        status: int,
        code: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code} (HTTP {status}): {detail}" if status else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem: dict[str, Any] = dict(problem or {})
        self.retry_after_s = retry_after_s


class DiffallTimeoutError(DiffallError, TimeoutError):
    """:meth:`diffall.client.DiffallClient.wait` or ``wait_batch`` gave up before the
    comparison or the batch finished (``code="wait_timeout"``; one request that takes too long
    is a plain :class:`DiffallError` ``timeout``).

    Attributes
    ----------
    last : dict
        The comparison (state ``queued`` or ``running``) or the batch as last seen; empty if
        the server never answered.
    """

    def __init__(self, detail: str, *, last: dict[str, Any]) -> None:
        super().__init__(status=0, code="wait_timeout", detail=detail)
        self.last = last


def retry_after_s(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from(response: httpx.Response) -> DiffallError:
    """Build the :class:`DiffallError` for an error response (problem+json or anything else)."""
    problem: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict):
            problem = body
    except ValueError:
        pass
    code = problem.get("code")
    detail = problem.get("detail") or problem.get("title") or response.reason_phrase
    if not isinstance(code, str) or not code:
        code = f"http_{response.status_code}"
    return DiffallError(
        status=response.status_code,
        code=code,
        detail=str(detail or ""),
        problem=problem,
        retry_after_s=retry_after_s(response),
    )

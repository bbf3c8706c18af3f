"""Pure ASGI middleware: request context (id, log line, metrics, last-resort 500) and body limits.

``RequestContextMiddleware`` (outermost) gives each request an id (a sane incoming
``X-Request-ID`` is kept, otherwise a new one), echoes it in the response's ``X-Request-ID``,
binds it to structlog's context, records the request in the Prometheus metrics under its route
template, logs a client that disconnected mid-request as one INFO ``client_disconnected``
line (no traceback), writes one ``request`` log line (method, route, path, status, duration;
never headers, so never keys) and answers any exception that escaped every handler with a 500
``internal_error`` problem, the traceback going to the log only.

``BodyLimitMiddleware`` refuses request bodies larger than the route accepts with 413
``payload_too_large``: at once when ``Content-Length`` says so (the body is never read), and
while reading otherwise (chunked uploads are counted and cut off at the limit).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Final

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, internal_error_response, problem_for_exception
from api.errors import problem_response as render_problem
from api.metrics import ApiMetrics

__all__ = [
    "JSON_BODY_MAX_BYTES",
    "MULTIPART_OVERHEAD_BYTES",
    "BodyLimitMiddleware",
    "RequestContextMiddleware",
    "body_limit_for",
]

log = structlog.get_logger("api.request")

#: Status recorded for a request whose client disconnected before the answer (nginx's 499).
CLIENT_CLOSED_STATUS: Final = 499
#: Header carrying the request id, in and out.
REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: Largest JSON (or other non-image) request body, in bytes: 32 MiB, room for a 10,000-pair
#: batch with per-pair options and metadata.
JSON_BODY_MAX_BYTES: Final = 32 * 1024 * 1024
#: Room for multipart boundaries, part headers and small form fields, in bytes.
MULTIPART_OVERHEAD_BYTES: Final = 1024 * 1024

_CONTENT_PATH: Final = re.compile(r"^/v1/images/[^/]+/content/?$")


def body_limit_for(method: str, path: str, content_type: str, max_upload_bytes: int) -> int:
    """Largest request body accepted for a route, in bytes.

    Parameters
    ----------
    method
        HTTP method.
    path
        Request path.
    content_type
        The request's ``Content-Type`` (lower-cased media type is compared).
    max_upload_bytes
        ``settings.limits.max_upload_bytes``: the largest image file.

    Returns
    -------
    int
        ``max_upload_bytes`` for the raw upload ``PUT /v1/images/{id}/content``; that plus
        :data:`MULTIPART_OVERHEAD_BYTES` for ``POST /v1/images``; twice that plus the overhead
        for a multipart ``POST /v1/comparisons`` (files ``a`` and ``b``);
        :data:`JSON_BODY_MAX_BYTES` for every other body.
    """
    path = path.rstrip("/") or "/"
    multipart = content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"
    if method == "PUT" and _CONTENT_PATH.match(path):
        return max_upload_bytes
    if method == "POST" and path == "/v1/images":
        return max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    if method == "POST" and path == "/v1/comparisons" and multipart:
        return 2 * max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    return JSON_BODY_MAX_BYTES


class BodyLimitMiddleware:
    """Refuse request bodies over :func:`body_limit_for` with 413 ``payload_too_large``.

    Parameters
    ----------
    app
        The wrapped ASGI app.
    max_upload_bytes
        A callable returning ``settings.limits.max_upload_bytes`` (read per request).
    """

    def __init__(self, app: ASGIApp, *, max_upload_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = body_limit_for(
            scope["method"],
            scope["path"],
            headers.get("content-type", ""),
            self.max_upload_bytes(),
        )
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False  # the server rejects a malformed Content-Length itself
            if too_large:
                problem = problem_for_exception(PayloadTooLarge(limit))
                assert problem is not None
                response = render_problem(Request(scope), problem)
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/comparisons/{comparison_id}``), or
    ``<unmatched>`` for unknown paths, so metric labels stay few."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if "endpoint" in scope:  # a plain Starlette route (the docs): fixed paths, no parameters
        return str(scope["path"])
    return "<unmatched>"


class RequestContextMiddleware:
    """Request id, one log line and metrics per request, and the last-resort 500 answer.

    Parameters
    ----------
    app
        The wrapped ASGI app.
    metrics
        Where request counts and latencies are recorded.
    """

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        if incoming is not None and _REQUEST_ID_RE.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except ClientDisconnect:
                # Routine: the client went away mid-request. One line, no traceback; nobody
                # is left to answer (499 in the metrics, as nginx counts it).
                status = CLIENT_CLOSED_STATUS
                log.info("client_disconnected", method=scope["method"], path=scope["path"])
            except Exception:
                log.exception("unhandled_exception", method=scope["method"], path=scope["path"])
                if response_started:
                    raise
                await internal_error_response(Request(scope))(scope, receive, send_with_id)
            finally:
                duration_s = time.perf_counter() - started
                route = _route_template(scope)
                self.metrics.observe_request(
                    method=scope["method"], route=route, status=status, duration_s=duration_s
                )
                log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(duration_s * 1000, 2),
                    tenant_id=state.get("tenant_id"),
                )

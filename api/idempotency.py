"""``Idempotency-Key`` on every POST: a route class wrapping the handlers of the v1 routers.

For a POST carrying ``Idempotency-Key: <key>`` (1 to 255 visible ASCII characters):

1. the API key is authenticated (and rate-limited) first, so keys are scoped to the tenant;
2. the request is hashed: SHA-256 of the method, the path (with its query string) and the raw
   body bytes (:func:`request_hash`);
3. :func:`core.services.idempotency.begin` claims the key. The same key and hash answered
   before: the stored response is replayed (same status, body and headers, plus
   ``Idempotent-Replayed: true``). The same key with another hash: 422
   ``idempotency_key_reused``. The first request still running: 409
   ``idempotency_key_in_progress``;
4. otherwise the route runs, and its response is stored with ``finish`` when its status is
   below 500 and not 429 (problem responses such as a rejected image are replayed too); after
   a 5xx, a 429 or an unexpected exception the claim is released with ``abandon`` so the
   client can retry with the same key.

Multipart bodies are hashed as sent, boundary included: a retry must resend the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Final

import structlog
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import close_request_session, request_session, resolve_tenant
from api.errors import response_for_exception
from core.services import idempotency
from core.services.errors import InvalidRequest

__all__ = ["IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "IdempotentRoute", "request_hash"]

log = structlog.get_logger("api.idempotency")

#: The request header carrying the client's key.
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
#: Response header set on a replayed response.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
#: Longest key accepted, in characters (the database column holds 255).
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255

# Response headers never stored for replay: recomputed, or specific to one request.
_NOT_STORED: Final = frozenset(
    {"content-length", "date", "server", "set-cookie", "x-request-id", REPLAYED_HEADER.lower()}
)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def request_hash(method: str, path: str, body: bytes) -> str:
    """Fingerprint of a request for ``Idempotency-Key`` comparison.

    Parameters
    ----------
    method
        HTTP method, e.g. ``POST`` (upper-cased here).
    path
        Request path including the query string when there is one (``/v1/x?a=1``).
    body
        The raw request body.

    Returns
    -------
    str
        Lower-case hex SHA-256 (64 characters) of ``METHOD\\nPATH\\n`` followed by the body.
    """
    digest = hashlib.sha256()
    digest.update(f"{method.upper()}\n{path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def _validate_key(key: str) -> str:
    """Return ``key`` if it is 1..255 visible ASCII characters; ``InvalidRequest`` otherwise."""
    if (
        not key
        or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH
        or not all(32 < ord(ch) < 127 for ch in key)
    ):
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
            "characters",
            code="invalid_idempotency_key",
        )
    return key


def _path_with_query(request: Request) -> str:
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def _replay(stored: idempotency.StoredResponse) -> Response:
    """Rebuild a stored response (JSON body, same status and headers)."""
    headers = {k: v for k, v in stored.headers.items() if k.lower() not in _NOT_STORED}
    media_type = headers.pop("content-type", None) or "application/json"
    if stored.body is None:
        response: Response = Response(
            status_code=stored.status_code, headers=headers, media_type=media_type
        )
    else:
        response = JSONResponse(
            stored.body, status_code=stored.status_code, headers=headers, media_type=media_type
        )
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _storable(response: Response) -> idempotency.StoredResponse | None:
    """The response as stored for replay, or None when it must not be stored."""
    if response.status_code >= 500 or response.status_code == 429:
        return None
    raw = getattr(response, "body", None)
    if not isinstance(raw, bytes | bytearray | memoryview):
        return None  # a streamed response: not replayable
    body: Any = None
    if raw:
        try:
            body = json.loads(bytes(raw))
        except ValueError:
            return None
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_STORED}
    return idempotency.StoredResponse(status_code=response.status_code, body=body, headers=headers)


def _finish(session: Session, tenant_id: uuid.UUID, key: str, stored: Any) -> None:
    try:
        idempotency.finish(session, tenant_id=tenant_id, key=key, response=stored)
    except Exception:
        session.rollback()
        log.exception("idempotency_finish_failed")
        _abandon(session, tenant_id, key)


def _abandon(session: Session, tenant_id: uuid.UUID, key: str) -> None:
    try:
        session.rollback()
        idempotency.abandon(session, tenant_id=tenant_id, key=key)
    except Exception:
        session.rollback()
        log.exception("idempotency_abandon_failed")


async def _handle_with_key(request: Request, key: str, handler: Handler) -> Response:
    _validate_key(key)
    tenant = await run_in_threadpool(resolve_tenant, request)
    tenant_id = tenant.id
    body = await request.body()
    digest = request_hash(request.method, _path_with_query(request), body)
    session = request_session(request)

    def _begin() -> idempotency.StoredResponse | None:
        try:
            return idempotency.begin(session, tenant_id=tenant_id, key=key, request_hash=digest)
        except BaseException:
            session.rollback()
            raise

    stored = await run_in_threadpool(_begin)
    if stored is not None:
        log.info("idempotent_replay", status=stored.status_code)
        return _replay(stored)
    try:
        response = await handler(request)
    except Exception as exc:
        mapped = response_for_exception(request, exc)
        if mapped is None:
            await run_in_threadpool(_abandon, session, tenant_id, key)
            raise
        response = mapped
    to_store = _storable(response)
    if to_store is None:
        await run_in_threadpool(_abandon, session, tenant_id, key)
    else:
        await run_in_threadpool(_finish, session, tenant_id, key, to_store)
    return response


class IdempotentRoute(APIRoute):
    """An ``APIRoute`` whose POST handler honours ``Idempotency-Key`` (see the module doc)."""

    def get_route_handler(self) -> Handler:
        """Wrap FastAPI's handler with the idempotency bookkeeping (POSTs with a key only)."""
        handler = super().get_route_handler()

        async def idempotent_handler(request: Request) -> Response:
            key = request.headers.get(IDEMPOTENCY_HEADER)
            if request.method != "POST" or key is None:
                return await handler(request)
            try:
                return await _handle_with_key(request, key, handler)
            finally:
                await run_in_threadpool(close_request_session, request)

        return idempotent_handler

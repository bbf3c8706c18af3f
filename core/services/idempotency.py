"""Idempotency-Key handling for POSTs: replay the first response, refuse reuse with another body.

Keys are scoped to the tenant and kept at least 24 h.

Usage by the API (one request)::

    stored = idempotency.begin(session, tenant_id=t, key=k, request_hash=h)
    if stored is not None:
        return replay(stored)
    try:
        response = handle()
    except ServerError:
        idempotency.abandon(session, tenant_id=t, key=k)
        raise
    idempotency.finish(session, tenant_id=t, key=k, response=StoredResponse(...))

A client error (4xx) is a response like any other: ``finish`` it so a replay gets the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.models import IdempotencyKey, IdempotencyState, utcnow
from core.services._common import map_db_errors
from core.services.errors import IdempotencyInProgress, IdempotencyMismatch, InvalidRequest

__all__ = [
    "IN_PROGRESS_TIMEOUT_S",
    "KEY_TTL_S",
    "MAX_KEY_LENGTH",
    "StoredResponse",
    "abandon",
    "begin",
    "finish",
    "purge_expired",
]

#: How long a key is kept, in seconds.
KEY_TTL_S = 24 * 3600
#: A claim still ``in_progress`` after this many seconds is taken for abandoned (its request's
#: process died) and may be claimed again.
IN_PROGRESS_TIMEOUT_S = 300
#: Longest key accepted, in characters (the column's length).
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    """A response to replay: HTTP status, JSON body and the headers worth replaying."""

    status_code: int
    body: Any
    headers: dict[str, str]


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )


def begin(
    session: Session, *, tenant_id: uuid.UUID, key: str, request_hash: str
) -> StoredResponse | None:
    """Claim ``key`` for this request. Returns the stored response to replay when the same key
    and request were already answered; None when the caller should process the request (then
    call ``finish``). Raises ``IdempotencyMismatch`` (another request under this key) or
    ``IdempotencyInProgress`` (the first one is still running). Commits the claim.

    An expired key (older than :data:`KEY_TTL_S`) or an ``in_progress`` claim older than
    :data:`IN_PROGRESS_TIMEOUT_S` is replaced by the new claim. ``InvalidRequest`` (code
    ``invalid_idempotency_key``) for an empty, over-long or non-printable key.
    """
    _check_key(key)
    now = utcnow()
    with map_db_errors("idempotency"):
        for _ in range(2):
            row = session.scalars(
                sa.select(IdempotencyKey)
                .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
                .with_for_update()
            ).one_or_none()
            if row is not None:
                stale = row.expires_at <= now or (
                    row.state is IdempotencyState.IN_PROGRESS
                    and row.created_at <= now - timedelta(seconds=IN_PROGRESS_TIMEOUT_S)
                )
                if not stale:
                    session.commit()
                    if row.request_hash != request_hash:
                        raise IdempotencyMismatch(
                            "this Idempotency-Key was used with a different request"
                        )
                    if row.state is IdempotencyState.IN_PROGRESS:
                        raise IdempotencyInProgress(
                            "a request with this Idempotency-Key is still being processed"
                        )
                    return StoredResponse(
                        status_code=int(row.status_code or 200),
                        body=row.response_body,
                        headers=dict(row.response_headers or {}),
                    )
                row.request_hash = request_hash
                row.state = IdempotencyState.IN_PROGRESS
                row.status_code = None
                row.response_body = None
                row.response_headers = None
                row.created_at = now
                row.expires_at = now + timedelta(seconds=KEY_TTL_S)
                session.commit()
                return None
            session.add(
                IdempotencyKey(
                    tenant_id=tenant_id,
                    key=key,
                    request_hash=request_hash,
                    state=IdempotencyState.IN_PROGRESS,
                    created_at=now,
                    expires_at=now + timedelta(seconds=KEY_TTL_S),
                )
            )
            try:
                session.commit()
                return None
            except sa.exc.IntegrityError:  # a concurrent request claimed it first: look again
                session.rollback()
        raise IdempotencyInProgress("a request with this Idempotency-Key is still being processed")


def finish(session: Session, *, tenant_id: uuid.UUID, key: str, response: StoredResponse) -> None:
    """Store the response of a claimed key. Commits."""
    with map_db_errors("idempotency"):
        session.execute(
            sa.update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
            .values(
                state=IdempotencyState.DONE,
                status_code=int(response.status_code),
                response_body=response.body,
                response_headers=dict(response.headers),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()


def abandon(session: Session, *, tenant_id: uuid.UUID, key: str) -> None:
    """Release a claim whose request failed with a server error, so a retry can run. Commits."""
    with map_db_errors("idempotency"):
        session.rollback()  # whatever the failed request left half-done
        session.execute(
            sa.delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id,
                IdempotencyKey.key == key,
                IdempotencyKey.state == IdempotencyState.IN_PROGRESS,
            )
        )
        session.commit()


def purge_expired(session: Session) -> int:
    """Delete every expired key (the sweeper calls this). Commits; returns how many."""
    with map_db_errors("idempotency"):
        result = session.execute(
            sa.delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow())
        )
        session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]

"""Browser sessions of the web viewer: one-time sign-in tokens and cookie sessions.

A session always belongs to one API key and acts as that key's tenant; revoking the key ends
its sessions. Secrets are random, shown once and stored only as their SHA-256:

- a **sign-in token** (``dfs_...``) is what ``diffall serve`` prints in the viewer's address on
  the embedded default: it lives :data:`SIGNIN_TTL` and works once;
- a **session token** (``dfc_...``) is the cookie's value: it lives :data:`SESSION_TTL`.

The CSRF token of a session is derived from its session token
(:func:`csrf_token_for`), so it needs no column and cannot be computed without the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.models import ApiKey, BrowserSession, SigninToken, Tenant, utcnow
from core.services import keys
from core.services._common import map_db_errors
from core.services.errors import Unauthorized

__all__ = [
    "SESSION_TTL",
    "SIGNIN_TTL",
    "OpenedSession",
    "authenticate_session",
    "create_signin_token",
    "csrf_token_for",
    "end_session",
    "open_session_with_key",
    "open_session_with_signin_token",
]

#: How long a printed sign-in link works (once).
SIGNIN_TTL: Final = timedelta(minutes=15)
#: How long a browser session lasts from sign-in.
SESSION_TTL: Final = timedelta(hours=12)
#: Prefix of sign-in tokens and of session tokens (recognisable if leaked).
SIGNIN_PREFIX: Final = "dfs_"
SESSION_PREFIX: Final = "dfc_"
#: Random bytes in either token (43 URL-safe characters after the prefix).
TOKEN_RANDOM_BYTES: Final = 32
#: Longest token accepted, in characters.
MAX_TOKEN_LENGTH: Final = 128


@dataclass(frozen=True)
class OpenedSession:
    """A new session: the cookie's value, its CSRF token and its tenant."""

    token: str
    csrf_token: str
    tenant: Tenant
    expires_in_s: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _well_formed(token: object, prefix: str) -> bool:
    return (
        isinstance(token, str)
        and token.startswith(prefix)
        and 20 < len(token) <= MAX_TOKEN_LENGTH
        and all(ch.isalnum() or ch in "_-" for ch in token)
    )


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a session: 64 hex characters derived from its session token."""
    return hmac.new(session_token.encode(), b"diffall-csrf-v1", hashlib.sha256).hexdigest()


def create_signin_token(session: Session, *, api_key: str) -> str:
    """Create a one-time sign-in token acting for ``api_key``'s tenant; commits.

    Parameters
    ----------
    session
        Database session.
    api_key
        A valid API key (the embedded default's local key).

    Returns
    -------
    str
        ``dfs_`` and 43 URL-safe characters; works once, for :data:`SIGNIN_TTL`.
    """
    with map_db_errors("create sign-in token"):
        key_id = session.scalars(
            sa.select(ApiKey.id).where(
                ApiKey.key_hash == keys.hash_key(api_key), ApiKey.revoked_at.is_(None)
            )
        ).one_or_none()
        if key_id is None:
            raise Unauthorized("unknown or revoked API key")
        token = SIGNIN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
        session.add(
            SigninToken(
                token_hash=_hash(token), api_key_id=key_id, expires_at=utcnow() + SIGNIN_TTL
            )
        )
        session.commit()
    return token


def _open(session: Session, key_id: uuid.UUID, tenant: Tenant) -> OpenedSession:
    token = SESSION_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    session.add(
        BrowserSession(
            token_hash=_hash(token), api_key_id=key_id, expires_at=utcnow() + SESSION_TTL
        )
    )
    session.commit()
    return OpenedSession(token, csrf_token_for(token), tenant, int(SESSION_TTL.total_seconds()))


def open_session_with_key(session: Session, api_key: str) -> OpenedSession:
    """Sign in with an API key (pasted into the viewer); commits.

    Raises
    ------
    Unauthorized
        Unknown, malformed or revoked key.
    """
    tenant = keys.authenticate(session, api_key)
    with map_db_errors("open session"):
        key_id = session.scalars(
            sa.select(ApiKey.id).where(ApiKey.key_hash == keys.hash_key(api_key))
        ).one()
        return _open(session, key_id, tenant)


def open_session_with_signin_token(session: Session, token: str) -> OpenedSession:
    """Exchange a one-time sign-in token for a session; the token is spent; commits.

    Raises
    ------
    Unauthorized
        Unknown, expired or already used token, or its key was revoked since.
    """
    if not _well_formed(token, SIGNIN_PREFIX):
        raise Unauthorized("malformed sign-in token", code="signin_token_invalid")
    with map_db_errors("open session"):
        now = utcnow()
        # Spend it first, in one conditional UPDATE: two tabs racing get one session.
        spent = session.execute(
            sa.update(SigninToken)
            .where(
                SigninToken.token_hash == _hash(token),
                SigninToken.used_at.is_(None),
                SigninToken.expires_at > now,
            )
            .values(used_at=now)
        )
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise Unauthorized(
                "this sign-in link was already used or has expired: restart `diffall serve` "
                "for a new one, or sign in with the API key",
                code="signin_token_invalid",
            )
        row = session.execute(
            sa.select(Tenant, ApiKey.id)
            .join(ApiKey, ApiKey.tenant_id == Tenant.id)
            .join(SigninToken, SigninToken.api_key_id == ApiKey.id)
            .where(SigninToken.token_hash == _hash(token), ApiKey.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            session.commit()  # the token stays spent
            raise Unauthorized("the key of this sign-in link was revoked")
        tenant, key_id = row
        return _open(session, key_id, tenant)


def authenticate_session(session: Session, token: str) -> tuple[Tenant, str]:
    """The tenant of a live session cookie, and its key's hash (the rate-limit bucket).

    Read-only. Raises ``Unauthorized`` for an unknown, expired or ended session, or when its
    API key was revoked.
    """
    if not _well_formed(token, SESSION_PREFIX):
        raise Unauthorized("malformed session cookie: sign in again")
    with map_db_errors("authenticate"):
        row = session.execute(
            sa.select(Tenant, ApiKey.key_hash)
            .join(ApiKey, ApiKey.tenant_id == Tenant.id)
            .join(BrowserSession, BrowserSession.api_key_id == ApiKey.id)
            .where(
                BrowserSession.token_hash == _hash(token),
                BrowserSession.ended_at.is_(None),
                BrowserSession.expires_at > utcnow(),
                ApiKey.revoked_at.is_(None),
            )
        ).one_or_none()
    if row is None:
        raise Unauthorized("the session has ended or expired: sign in again")
    tenant, key_hash = row
    return tenant, key_hash


def end_session(session: Session, token: str) -> bool:
    """End a session (sign-out); True when a live one was ended; commits."""
    if not _well_formed(token, SESSION_PREFIX):
        return False
    with map_db_errors("end session"):
        ended = session.execute(
            sa.update(BrowserSession)
            .where(BrowserSession.token_hash == _hash(token), BrowserSession.ended_at.is_(None))
            .values(ended_at=utcnow())
        )
        session.commit()
    return bool(ended.rowcount)  # type: ignore[attr-defined]

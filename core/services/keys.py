"""Tenants and API keys: keys are random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.models import ApiKey, Tenant, utcnow
from core.services._common import map_db_errors
from core.services.errors import InvalidRequest, Unauthorized

__all__ = ["KEY_PREFIX", "authenticate", "create_key", "hash_key"]

#: Every key starts with this, so a leaked key is recognisable (e.g. by secret scanners).
KEY_PREFIX = "dfa_"
#: Random bytes in a key (encoded as 43 URL-safe base64 characters after the prefix).
KEY_RANDOM_BYTES = 32
#: Characters of the key kept in clear (``api_keys.prefix``) to tell keys apart.
SHOWN_PREFIX_LENGTH = 12
#: ``last_used_at`` is refreshed at most this often per key (seconds), to keep requests cheap.
LAST_USED_RESOLUTION_S = 60
#: Longest tenant name, in characters (the column's length).
MAX_TENANT_NAME = 200

_TOKEN_RE = re.compile(r"dfa_[A-Za-z0-9_-]{20,100}")


def hash_key(token: str) -> str:
    """Lower-case hex SHA-256 of an API key (what ``api_keys.key_hash`` stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalars(sa.select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is not None:
        return tenant
    try:
        with session.begin_nested():
            tenant = Tenant(name=name)
            session.add(tenant)
        return tenant
    except sa.exc.IntegrityError:  # created concurrently
        return session.scalars(sa.select(Tenant).where(Tenant.name == name)).one()


def create_key(session: Session, *, tenant_name: str) -> str:
    """Create an API key for ``tenant_name`` (creating the tenant if new); return the key.

    The plaintext key is returned once and never stored. Commits.

    Parameters
    ----------
    session
        Database session.
    tenant_name
        1 to 200 characters, not blank (surrounding whitespace is stripped).

    Returns
    -------
    str
        ``dfa_`` followed by 43 URL-safe characters (256 random bits).
    """
    name = tenant_name.strip() if isinstance(tenant_name, str) else ""
    if not name or len(name) > MAX_TENANT_NAME:
        raise InvalidRequest(f"a tenant name is 1 to {MAX_TENANT_NAME} characters")
    token = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    with map_db_errors("create key"):
        tenant = _get_or_create_tenant(session, name)
        session.add(
            ApiKey(
                tenant_id=tenant.id,
                prefix=token[:SHOWN_PREFIX_LENGTH],
                key_hash=hash_key(token),
            )
        )
        session.commit()
    return token


def authenticate(session: Session, token: str) -> Tenant:
    """Return the tenant owning ``token``; raise ``Unauthorized`` if unknown or revoked.

    Refreshes the key's ``last_used_at`` (at most once a minute; that refresh commits).
    """
    if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
        raise Unauthorized("missing or malformed API key")
    with map_db_errors("authenticate"):
        row = session.execute(
            sa.select(Tenant, ApiKey.id, ApiKey.last_used_at)
            .join(ApiKey, ApiKey.tenant_id == Tenant.id)
            .where(ApiKey.key_hash == hash_key(token), ApiKey.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            raise Unauthorized("unknown or revoked API key")
        tenant, key_id, last_used = row
        now = utcnow()
        if last_used is None or now - last_used >= timedelta(seconds=LAST_USED_RESOLUTION_S):
            session.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
            session.commit()
    return tenant

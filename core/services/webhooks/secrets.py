"""Webhook signing secrets: each endpoint's, and the tenant's default one.

Every endpoint has its own signing secret, ``whsec_`` + base64 of 32 random bytes
(:func:`new_secret`), returned when the endpoint is created or its secret rotated; for
:data:`SECRET_OVERLAP_S` (24 h) after a rotation the previous secret signs too
(:func:`signing_secrets`), so a delivery carries two ``v1,`` signatures. A per-comparison or
per-batch ``webhook_url`` is an ad-hoc target signed with the tenant's default secret
(:func:`get_default_secret`, created on first need by :func:`ensure_default_secret`;
:func:`rotate_default_secret`). Secrets are stored in clear, because signing needs them (see
:mod:`core.db.models`); a row whose secret the configured keys cannot decrypt still loads with
:data:`ENDPOINT_SECRETS_DEFERRED` / :data:`DEFAULT_SECRETS_DEFERRED`.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, defer

from core.db.models import WebhookEndpoint, WebhookTenantSecret, utcnow
from core.db.secretbox import SecretDecryptionError
from core.services._common import map_db_errors

__all__ = [
    "DEFAULT_SECRETS_DEFERRED",
    "ENDPOINT_SECRETS_DEFERRED",
    "SECRET_OVERLAP_S",
    "ensure_default_secret",
    "get_default_secret",
    "new_secret",
    "readable_secret",
    "rotate_default_secret",
    "signing_secrets",
]

log = structlog.get_logger(__name__)

# Load options leaving the secrets out of a row until they are read: rows are decrypted only to
# sign or to show a secret, so an endpoint whose secret the configured keys cannot open can still
# be listed, updated, disabled, rotated and deleted.
ENDPOINT_SECRETS_DEFERRED: Final = (
    defer(WebhookEndpoint.secret),
    defer(WebhookEndpoint.previous_secret),
)
DEFAULT_SECRETS_DEFERRED: Final = (
    defer(WebhookTenantSecret.secret),
    defer(WebhookTenantSecret.previous_secret),
)

#: Prefix of every signing secret (Standard Webhooks).
SECRET_PREFIX: Final = "whsec_"
#: Random bytes in a signing secret.
SECRET_BYTES: Final = 32
#: Seconds the previous secret keeps signing after a rotation (24 h).
SECRET_OVERLAP_S: Final = 24 * 3600


def new_secret() -> str:
    """A new signing secret: ``whsec_`` + standard base64 of 32 random bytes (50 characters)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signing_secrets(
    secret: str, previous: str | None, previous_expires_at: datetime | None, *, now: datetime
) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one while its
    overlap lasts.

    Parameters
    ----------
    secret
        The current secret.
    previous, previous_expires_at
        The secret replaced by the last rotation and the end of its overlap (or None).
    now
        The signing time (aware UTC).

    Returns
    -------
    list of str
        One or two ``whsec_`` secrets, current first.
    """
    found = [secret]
    if previous and previous_expires_at is not None and previous_expires_at > now:
        found.append(previous)
    return found


def readable_secret(row: WebhookEndpoint | WebhookTenantSecret, name: str) -> str | None:
    """``row.<name>`` (``secret`` or ``previous_secret``), or None when the configured keys
    cannot decrypt it (logged with the stable code; such a secret cannot sign anyway)."""
    try:
        value: str | None = getattr(row, name)
    except SecretDecryptionError as exc:
        log.warning("webhook.secret_unreadable", code=exc.code, column=name)
        return None
    return value


def ensure_default_secret(session: Session, tenant_id: uuid.UUID) -> WebhookTenantSecret:
    """The tenant's default secret, created now if it has none (not committed here).

    Safe when two transactions create it at once: the loser reads the winner's row.

    Parameters
    ----------
    session
        An open session (the row is added to its transaction).
    tenant_id
        The tenant.

    Returns
    -------
    WebhookTenantSecret
        The row (its ``secret`` signs ad-hoc ``webhook_url`` deliveries).
    """
    query = sa.select(WebhookTenantSecret).where(WebhookTenantSecret.tenant_id == tenant_id)
    row = session.scalars(query).one_or_none()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = WebhookTenantSecret(tenant_id=tenant_id, secret=new_secret(), created_at=utcnow())
            session.add(row)
        return row
    except sa.exc.IntegrityError:  # created concurrently
        return session.scalars(query.execution_options(populate_existing=True)).one()


def get_default_secret(session: Session, *, tenant_id: uuid.UUID) -> WebhookTenantSecret:
    """The tenant's default secret (created on first call). Commits.

    It signs deliveries to the ``webhook_url`` given with a comparison or a batch. Any API key
    of the tenant may read it again (it may have been created by a delivery, unseen).

    Returns
    -------
    WebhookTenantSecret
        The row; ``secret`` is the ``whsec_`` value.
    """
    with map_db_errors("get webhook secret"):
        row = ensure_default_secret(session, tenant_id)
        session.commit()
    return row


def rotate_default_secret(
    session: Session, *, tenant_id: uuid.UUID, now: datetime | None = None
) -> WebhookTenantSecret:
    """Replace the tenant's default secret; the old one keeps signing for 24 h. Commits.

    Returns
    -------
    WebhookTenantSecret
        The row with the new ``secret`` (``previous_secret_expires_at`` ends the overlap).
    """
    now = now or utcnow()
    with map_db_errors("rotate webhook secret"):
        locked = (
            sa.select(WebhookTenantSecret)
            .where(WebhookTenantSecret.tenant_id == tenant_id)
            .options(*DEFAULT_SECRETS_DEFERRED)  # an unreadable secret is replaced all the same
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = session.scalars(locked).one_or_none()
        if row is None:
            ensure_default_secret(session, tenant_id)
            row = session.scalars(locked).one()
        row.previous_secret = readable_secret(row, "secret")
        row.previous_secret_expires_at = now + timedelta(seconds=SECRET_OVERLAP_S)
        row.secret = new_secret()
        row.rotated_at = now
        session.commit()
    log.info("webhook.default_secret_rotated", tenant_id=str(tenant_id))
    return row

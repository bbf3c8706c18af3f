"""Maintenance: rewrite the stored webhook signing secrets under the current key.

Secrets are encrypted at rest by their column type (:mod:`core.db.secretbox`): whatever is
written goes out under the first key of ``DIFFALL_WEBHOOKS__SECRET_KEYS``. Values already stored
stay as they were written: clear text from before a key was configured, or ciphertext under a
key that has since been moved down the list. :func:`encrypt_stored_secrets` (``diffall db
encrypt-secrets``) rewrites exactly those values, so that afterwards every secret is encrypted
under the first key and the older keys can be removed from the list. Running it again changes
nothing.

Rows are processed in primary-key order, a batch per transaction, each batch locked
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions hold the write lock), so a secret
rotated by the API meanwhile is never overwritten with its old value. Only the secret columns are
written (``updated_at`` is kept: nothing changed for the tenant).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from core.db.models import WebhookEndpoint, WebhookTenantSecret
from core.db.secretbox import SecretBox, SecretDecryptionError, secret_box_for
from core.services._common import map_db_errors
from core.services.errors import ServiceError

__all__ = ["BATCH_SIZE", "KEYS_NOT_CONFIGURED", "SecretRewriteReport", "encrypt_stored_secrets"]

#: Rows read, and rewritten, per transaction.
BATCH_SIZE: Final = 500
#: Error code when there is no key to encrypt with.
KEYS_NOT_CONFIGURED: Final = "secret_keys_not_configured"


@dataclass(frozen=True)
class SecretRewriteReport:
    """What :func:`encrypt_stored_secrets` did.

    Attributes
    ----------
    endpoints
        Webhook endpoints with at least one secret rewritten.
    tenant_secrets
        Tenant default secrets with at least one secret rewritten.
    examined
        Rows read (both tables).
    """

    endpoints: int
    tenant_secrets: int
    examined: int

    @property
    def changed(self) -> int:
        """Rows rewritten (both tables)."""
        return self.endpoints + self.tenant_secrets


def _rewrite_table(
    sessions: sessionmaker[Session],
    model: type[WebhookEndpoint] | type[WebhookTenantSecret],
    key: InstrumentedAttribute[uuid.UUID],
    *,
    batch_size: int,
) -> tuple[int, int]:
    """Rewrite the stale secrets of one table; return (rows changed, rows examined)."""
    secret = model.__table__.c.secret
    previous = model.__table__.c.previous_secret
    changed = examined = 0
    last: uuid.UUID | None = None
    while True:
        with map_db_errors("re-encrypt webhook secrets"), sessions.begin() as session:
            box = secret_box_for(session.get_bind().dialect)
            query = (
                sa.select(
                    key,
                    # The stored form, not the decrypted value the column type would return.
                    sa.type_coerce(secret, sa.String()),
                    sa.type_coerce(previous, sa.String()),
                )
                .order_by(key)
                .limit(batch_size)
                .with_for_update()
            )
            if last is not None:
                query = query.where(key > last)
            rows = session.execute(query).all()
            for ident, stored, stored_previous in rows:
                values = _rewritten(box, {"secret": stored, "previous_secret": stored_previous})
                if values:
                    if model is WebhookEndpoint:
                        values["updated_at"] = WebhookEndpoint.updated_at  # keep it as it is
                    session.execute(sa.update(model).where(key == ident).values(**values))
                    changed += 1
        examined += len(rows)
        if len(rows) < batch_size:
            return changed, examined
        last = rows[-1][0]


def _rewritten(box: SecretBox, stored: dict[str, str | None]) -> dict[str, Any]:
    """The clear secrets of the values not in their current stored form (the column type
    encrypts them when they are written)."""
    values: dict[str, Any] = {}
    for name, value in stored.items():
        if value is not None and not box.is_current(value):
            values[name] = box.open(value)
    return values


def encrypt_stored_secrets(
    sessions: sessionmaker[Session], *, batch_size: int = BATCH_SIZE
) -> SecretRewriteReport:
    """Rewrite every stored webhook signing secret under the first configured key.

    Clear values are encrypted, values under another key of the ring are re-encrypted; values
    already under the first key are left untouched (idempotent). Commits once per batch, so an
    interrupted run keeps its progress and can simply be run again.

    Parameters
    ----------
    sessions
        Session factory whose engine carries the key ring (``webhooks.secret_keys``).
    batch_size
        Rows per transaction.

    Returns
    -------
    SecretRewriteReport
        How many rows were rewritten, per table.

    Raises
    ------
    ServiceError
        ``secret_keys_not_configured`` when the ring is empty (nothing to encrypt with);
        ``secret_key_missing`` when a stored secret is encrypted under a key no longer in the
        ring (add it back, after the new one, and run again); ``service_unavailable`` when the
        database is unavailable.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    with sessions() as session:
        box = secret_box_for(session.get_bind().dialect)
    if not box.encrypts:
        raise ServiceError(
            "no key to encrypt with: set DIFFALL_WEBHOOKS__SECRET_KEYS (the first key encrypts)",
            code=KEYS_NOT_CONFIGURED,
        )
    try:
        endpoints, seen_endpoints = _rewrite_table(
            sessions, WebhookEndpoint, WebhookEndpoint.id, batch_size=batch_size
        )
        tenant_secrets, seen_tenants = _rewrite_table(
            sessions, WebhookTenantSecret, WebhookTenantSecret.tenant_id, batch_size=batch_size
        )
    except SecretDecryptionError as exc:
        raise ServiceError(exc.message, code=exc.code) from exc
    return SecretRewriteReport(
        endpoints=endpoints,
        tenant_secrets=tenant_secrets,
        examined=seen_endpoints + seen_tenants,
    )

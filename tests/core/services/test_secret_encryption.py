"""Webhook signing secrets encrypted at rest, end to end on SQLite and PostgreSQL.

- ``encrypt_stored_secrets`` (``diffall db encrypt-secrets``): encrypts clear rows, moves rows to
  the first key after a rotation, is idempotent, refuses without keys or without the old key.
- Deliveries signed with encrypted secrets (an endpoint's, after a rotation, and a tenant's default
  secret for an ad-hoc ``webhook_url``) verify with ``standardwebhooks`` and ``svix`` on a real
  loopback receiver; a secret no key decrypts is never used to sign.

Stored values are read with plain SQL; tokens are opened with ``cryptography``'s ``Fernet``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
    WebhookTenantSecret,
    utcnow,
)
from core.db.secretbox import PREFIX
from core.db.session import make_engine, make_session_factory
from core.services import runs, webhooks
from core.services.errors import ServiceError
from core.services.secret_encryption import encrypt_stored_secrets
from core.services.webhooks.dispatch import dispatch_due
from core.services.webhooks.policy import DeliveryPolicy
from core.storage import LocalObjectStore
from tests.support.comparisons import add_comparison
from tests.support.databases import migrate
from tests.support.receivers import (
    InlineQueue,
    Receiver,
    pump,
    signatures,
    verify,
)
from tests.support.tenants import make_tenant
from tests.support.webhooks import LOOPBACK

SessionFactory = sessionmaker[Session]

OLD_KEY = "h2J1bhWAmUmCzp6J4J-GWjN8BM1wIS2gJUIUaJ-y9Kk="
NEW_KEY = "X6tN7bHq3bYcP0k3nW0mJp7m5x0f0YQz4cN3rQ9b2dE="
FAST = DeliveryPolicy(
    schedule_s=(0.0, 0.05, 0.05),
    jitter=0.0,
    timeout_s=2.0,
    lease_s=5.0,
    base_url="https://diffall.example.com",
    allowed_networks=LOOPBACK,
)


@pytest.fixture
def migrated(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def ring(migrated: str) -> Iterator[Callable[[Sequence[str]], SessionFactory]]:
    """Session factories on the migrated database whose engine has the given key ring."""
    made: list[Engine] = []

    def make(keys: Sequence[str]) -> SessionFactory:
        engine = make_engine(migrated, secret_keys=keys)
        made.append(engine)
        return make_session_factory(engine)

    yield make
    for engine in made:
        engine.dispose()


def _stored(sessions: SessionFactory) -> list[str]:
    """Every stored secret value of both tables (non-NULL), read with plain SQL."""
    with sessions() as session:
        values: list[str | None] = []
        for table in ("webhook_endpoints", "webhook_tenant_secrets"):
            for row in session.execute(sa.text(f"SELECT secret, previous_secret FROM {table}")):
                values.extend(row)
    return sorted(value for value in values if value is not None)


def _clear(sessions: SessionFactory) -> list[str]:
    """Every secret as the service sees it (decrypted by the column type)."""
    with sessions() as session:
        values: list[str | None] = []
        for model in (WebhookEndpoint, WebhookTenantSecret):
            for row in session.execute(sa.select(model.secret, model.previous_secret)):
                values.extend(row)
    return sorted(value for value in values if value is not None)


def _under(key: str, stored: str) -> bool:
    """Whether ``stored`` is a ``fernet:v1:`` token under ``key``."""
    if not stored.startswith(PREFIX):
        return False
    try:
        Fernet(key).decrypt(stored[len(PREFIX) :].encode())
    except InvalidToken:
        return False
    return True


def _populate(sessions: SessionFactory, tenants: int = 3) -> list[Tenant]:
    """Tenants each with a rotated endpoint (secret + previous secret) and a default secret."""
    made = []
    for _ in range(tenants):
        tenant = make_tenant(sessions)
        with sessions() as session:
            endpoint = webhooks.create_endpoint(
                session, tenant_id=tenant.id, url="http://127.0.0.1:9/x", allowed_networks=LOOPBACK
            )
            webhooks.rotate_endpoint_secret(session, tenant_id=tenant.id, endpoint_id=endpoint.id)
            webhooks.get_default_secret(session, tenant_id=tenant.id)
        made.append(tenant)
    return made


def _updated_at(session: Session) -> dict[uuid.UUID, object]:
    rows = session.execute(sa.select(WebhookEndpoint.id, WebhookEndpoint.updated_at))
    return {ident: updated for ident, updated in rows}


# -- diffall db encrypt-secrets -----------------------------------------------------------------


def test_encrypts_clear_rows_once(ring: Callable[[Sequence[str]], SessionFactory]) -> None:
    clear = ring(())
    _populate(clear)
    before = _stored(clear)
    assert len(before) == 9 and all(v.startswith("whsec_") for v in before)  # 3 x (2 + 1)
    with clear() as session:
        updated = _updated_at(session)
    keyed = ring([NEW_KEY])
    assert _clear(keyed) == before  # clear rows are read as they are
    report = encrypt_stored_secrets(keyed, batch_size=2)  # several batches
    assert (report.endpoints, report.tenant_secrets, report.changed) == (3, 3, 6)
    assert report.examined == 6
    after = _stored(keyed)
    assert all(_under(NEW_KEY, value) for value in after)
    assert not any(secret in value for value in after for secret in before)
    assert _clear(keyed) == before  # the same secrets
    with keyed() as session:  # nothing changed for the tenant
        assert _updated_at(session) == updated
    again = encrypt_stored_secrets(keyed)
    assert (again.changed, again.examined) == (0, 6)
    assert _stored(keyed) == after  # untouched: not even re-encrypted


def test_rotation_moves_rows_to_the_new_key(
    ring: Callable[[Sequence[str]], SessionFactory],
) -> None:
    old = ring([OLD_KEY])
    _populate(old, tenants=2)
    secrets = _clear(old)
    assert all(_under(OLD_KEY, value) for value in _stored(old))
    rotated = ring([NEW_KEY, OLD_KEY])
    assert _clear(rotated) == secrets  # the old key, second, still decrypts
    # A row written after the rotation is already under the new key: not counted.
    new_tenant = _populate(rotated, tenants=1)[0]
    secrets = _clear(rotated)
    report = encrypt_stored_secrets(rotated)
    assert (report.endpoints, report.tenant_secrets) == (2, 2)
    assert all(_under(NEW_KEY, value) for value in _stored(rotated))
    # The old key can go now.
    new_only = ring([NEW_KEY])
    assert _clear(new_only) == secrets
    assert encrypt_stored_secrets(new_only).changed == 0
    with new_only() as session:
        assert webhooks.get_default_secret(session, tenant_id=new_tenant.id).secret in secrets


def test_a_missing_old_key_stops_with_a_stable_code(
    ring: Callable[[Sequence[str]], SessionFactory],
) -> None:
    old = ring([OLD_KEY])
    _populate(old, tenants=1)
    before = _stored(old)
    with pytest.raises(ServiceError) as info:
        encrypt_stored_secrets(ring([NEW_KEY]))
    assert info.value.code == "secret_key_missing"
    assert "DIFFALL_WEBHOOKS__SECRET_KEYS" in info.value.message
    assert _stored(old) == before  # nothing rewritten
    with pytest.raises(ServiceError) as info:
        encrypt_stored_secrets(ring(()))
    assert info.value.code == "secret_keys_not_configured"


# -- deliveries signed with encrypted secrets ----------------------------------------------------


def _delivery_ids(sessions: SessionFactory) -> list[uuid.UUID]:
    with sessions() as session:
        return list(session.scalars(sa.select(WebhookDelivery.id)))


def _final(sessions: SessionFactory) -> bool:
    with sessions() as session:
        states = set(session.scalars(sa.select(WebhookDelivery.state)))
    return states <= {WebhookDeliveryState.SUCCEEDED, WebhookDeliveryState.FAILED}


def test_endpoint_deliveries_verify_with_encrypted_secrets(
    ring: Callable[[Sequence[str]], SessionFactory], receiver: Receiver
) -> None:
    sessions = ring([NEW_KEY, OLD_KEY])
    tenant = make_tenant(sessions)
    with sessions() as session:
        endpoint = webhooks.create_endpoint(
            session, tenant_id=tenant.id, url=receiver.url("/hook"), allowed_networks=LOOPBACK
        )
        old_secret = endpoint.secret
        new_secret = webhooks.rotate_endpoint_secret(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id
        ).secret
        webhooks.create_ping(session, tenant_id=tenant.id, endpoint_id=endpoint.id)
    stored = _stored(sessions)
    assert len(stored) == 2 and all(_under(NEW_KEY, value) for value in stored)
    assert old_secret.startswith("whsec_") and new_secret.startswith("whsec_")
    pump(sessions, FAST, lambda: _final(sessions))
    (request,) = receiver.received("/hook")
    assert len(signatures(request)) == 2
    payload = verify(new_secret, request)  # standardwebhooks and svix agree
    assert payload["type"] == "ping"
    assert verify(old_secret, request) == payload


def test_ad_hoc_deliveries_verify_with_the_encrypted_default_secret(
    ring: Callable[[Sequence[str]], SessionFactory],
    local_store: LocalObjectStore,
    receiver: Receiver,
) -> None:
    sessions = ring([NEW_KEY])
    tenant = make_tenant(sessions)
    cid = add_comparison(sessions, local_store, tenant, webhook_url=receiver.url("/adhoc"))
    runs.run_comparison(sessions, local_store, comparison_id=cid, max_crashes=3)
    pump(sessions, FAST, lambda: bool(receiver.received("/adhoc")))
    (stored,) = _stored(sessions)  # the tenant's default secret, created for the delivery
    assert _under(NEW_KEY, stored)
    with sessions() as session:
        secret = webhooks.get_default_secret(session, tenant_id=tenant.id).secret
    payload = verify(secret, receiver.received("/adhoc")[0])
    assert payload["data"]["id"] == str(cid)


def test_a_secret_no_key_decrypts_is_never_used_to_sign(
    ring: Callable[[Sequence[str]], SessionFactory], receiver: Receiver
) -> None:
    written = ring([OLD_KEY])
    tenant = make_tenant(written)
    with written() as session:
        endpoint = webhooks.create_endpoint(
            session, tenant_id=tenant.id, url=receiver.url("/hook"), allowed_networks=LOOPBACK
        )
        secret = endpoint.secret
        webhooks.create_ping(session, tenant_id=tenant.id, endpoint_id=endpoint.id)
    # The old key was dropped from the list too early.
    wrong = ring([NEW_KEY])
    queue = InlineQueue()
    with wrong() as session:
        assert dispatch_due(session, queue, policy=FAST).sent == 1
    (result,) = queue.drain(wrong, FAST)
    # A failed attempt with the stable code, retried on the schedule: nothing was sent.
    assert result is not None and result.error_code == "secret_key_missing"
    assert result.state == WebhookDeliveryState.PENDING and result.status_code is None
    assert receiver.received("/hook") == []
    (ident,) = _delivery_ids(wrong)
    with wrong() as session:
        row = session.get_one(WebhookDelivery, ident)
        assert row.attempt_count == 1 and row.last_error == "secret_key_missing"
        attempts = session.scalars(sa.select(WebhookAttempt)).all()
        assert [a.error_code for a in attempts] == ["secret_key_missing"]
    # The endpoint stays manageable without its key: listed, disabled and enabled again.
    with wrong() as session:
        listed = webhooks.list_endpoints(session, tenant_id=tenant.id).items
        assert [e.id for e in listed] == [endpoint.id]
        webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, enabled=False
        )
        webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, enabled=True
        )
    # With the key back (second), the scheduled retry is signed with the endpoint's secret.
    fixed = ring([NEW_KEY, OLD_KEY])
    later = utcnow() + timedelta(seconds=1)
    with fixed() as session:
        webhooks.retry_delivery(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, delivery_id=ident
        )
        assert dispatch_due(session, queue, policy=FAST, now=later).sent == 1
    queue.drain(fixed, FAST)
    (request,) = receiver.received("/hook")
    assert verify(secret, request)["type"] == "ping"


def test_an_unreadable_secret_is_replaced_by_a_rotation(
    ring: Callable[[Sequence[str]], SessionFactory],
) -> None:
    written = ring([OLD_KEY])
    tenant = make_tenant(written)
    with written() as session:
        endpoint = webhooks.create_endpoint(
            session, tenant_id=tenant.id, url="http://127.0.0.1:9/in", allowed_networks=LOOPBACK
        )
        webhooks.ensure_default_secret(session, tenant.id)
        session.commit()
    wrong = ring([NEW_KEY])
    with wrong() as session:
        rotated = webhooks.rotate_endpoint_secret(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id
        )
        assert rotated.previous_secret is None  # the unreadable one cannot sign: dropped
        new = rotated.secret
        default = webhooks.rotate_default_secret(session, tenant_id=tenant.id)
        assert default.previous_secret is None and default.secret.startswith("whsec_")
    with wrong() as session:  # readable under the keys now configured
        again = webhooks.get_endpoint(session, tenant_id=tenant.id, endpoint_id=endpoint.id)
        assert again.secret == new
        webhooks.delete_endpoint(session, tenant_id=tenant.id, endpoint_id=endpoint.id)

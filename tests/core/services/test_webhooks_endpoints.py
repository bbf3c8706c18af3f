"""Webhook endpoints and secrets, service level: registration, listing, rotation, the
tenant's default secret, signature headers.

Real databases (SQLite and PostgreSQL through ``sessions``).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from core.db.models import (
    Tenant,
    WebhookDisabledReason,
    utcnow,
)
from core.services import webhooks
from core.services.errors import InvalidRequest, NotFound
from core.services.webhooks.delivery import sign
from core.services.webhooks.guard import ForbiddenDestination
from tests.support.webhooks import (
    LOOPBACK,
    add_endpoint,
)

SessionFactory = sessionmaker[Session]


def test_create_endpoint_makes_a_standard_secret(sessions: SessionFactory, tenant: Tenant) -> None:
    endpoint = add_endpoint(sessions, tenant, description="ci")
    assert endpoint.secret.startswith("whsec_")
    assert len(base64.b64decode(endpoint.secret.removeprefix("whsec_"), validate=True)) == 32
    assert endpoint.events == list(webhooks.SUBSCRIBABLE_EVENTS)
    assert endpoint.enabled and endpoint.description == "ci"
    # Every endpoint gets its own secret, usable by the standardwebhooks library.
    other = add_endpoint(sessions, tenant)
    assert other.secret != endpoint.secret
    Webhook(other.secret)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": []}, "at least one"),
        ({"events": ["comparison.deleted"]}, "unknown event"),
        ({"events": ["ping"]}, "unknown event"),
        ({"events": "comparison.failed"}, "must be a list"),
        ({"description": "x" * 501}, "at most 500"),
    ],
)
def test_create_endpoint_refuses_bad_fields(
    sessions: SessionFactory, tenant: Tenant, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        add_endpoint(sessions, tenant, **kwargs)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/",
        "http://2130706433/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "ftp://example.com/",
    ],
)
def test_forbidden_urls_are_refused_at_registration(
    sessions: SessionFactory, tenant: Tenant, url: str
) -> None:
    # The SSRF rules of core.netguard apply when an endpoint is registered (and
    # when its URL changes); without an allow-list loopback is refused like the rest.
    with sessions() as session, pytest.raises(ForbiddenDestination) as caught:
        webhooks.create_endpoint(session, tenant_id=tenant.id, url=url)
    assert caught.value.code == "webhook_url_forbidden"
    endpoint = add_endpoint(sessions, tenant)
    with sessions() as session, pytest.raises(ForbiddenDestination):
        webhooks.update_endpoint(session, tenant_id=tenant.id, endpoint_id=endpoint.id, url=url)


def test_endpoints_are_listed_updated_deleted_per_tenant(
    sessions: SessionFactory, tenant: Tenant, other_tenant: Tenant
) -> None:
    made = [add_endpoint(sessions, tenant, url=f"http://127.0.0.1:9/{i}") for i in range(3)]
    theirs = add_endpoint(sessions, other_tenant)
    with sessions() as session:
        first = webhooks.list_endpoints(session, tenant_id=tenant.id, limit=2)
        assert first.next_cursor is not None
        second = webhooks.list_endpoints(
            session, tenant_id=tenant.id, limit=2, cursor=first.next_cursor
        )
        assert second.next_cursor is None
        listed = [e.id for e in first.items + second.items]
        assert sorted(listed) == sorted(e.id for e in made)
        with pytest.raises(NotFound):
            webhooks.get_endpoint(session, tenant_id=tenant.id, endpoint_id=theirs.id)
        with pytest.raises(InvalidRequest, match="cursor"):
            webhooks.list_endpoints(session, tenant_id=tenant.id, cursor="!!")
        updated = webhooks.update_endpoint(
            session,
            tenant_id=tenant.id,
            endpoint_id=made[0].id,
            events=["batch.completed"],
            description=None,
            allowed_networks=LOOPBACK,
            url="http://127.0.0.1:9/moved",
        )
        assert updated.events == ["batch.completed"] and updated.url.endswith("/moved")
        disabled = webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=made[0].id, enabled=False
        )
        assert not disabled.enabled and disabled.disabled_reason is WebhookDisabledReason.MANUAL
        enabled = webhooks.update_endpoint(
            session, tenant_id=tenant.id, endpoint_id=made[0].id, enabled=True
        )
        assert enabled.enabled and enabled.disabled_reason is None
        webhooks.delete_endpoint(session, tenant_id=tenant.id, endpoint_id=made[1].id)
        with pytest.raises(NotFound):
            webhooks.get_endpoint(session, tenant_id=tenant.id, endpoint_id=made[1].id)
        with pytest.raises(NotFound):
            webhooks.delete_endpoint(session, tenant_id=tenant.id, endpoint_id=theirs.id)


def test_rotation_keeps_the_previous_secret_for_24_hours(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    endpoint = add_endpoint(sessions, tenant)
    now = utcnow()
    with sessions() as session:
        rotated = webhooks.rotate_endpoint_secret(
            session, tenant_id=tenant.id, endpoint_id=endpoint.id, now=now
        )
    assert rotated.secret != endpoint.secret and rotated.previous_secret == endpoint.secret
    assert rotated.previous_secret_expires_at == now + timedelta(hours=24)
    during = webhooks.signing_secrets(
        rotated.secret,
        rotated.previous_secret,
        rotated.previous_secret_expires_at,
        now=now + timedelta(hours=23),
    )
    after = webhooks.signing_secrets(
        rotated.secret,
        rotated.previous_secret,
        rotated.previous_secret_expires_at,
        now=now + timedelta(hours=24, seconds=1),
    )
    assert during == [rotated.secret, endpoint.secret]
    assert after == [rotated.secret]


def test_default_secret_is_created_once_and_rotates(
    sessions: SessionFactory, tenant: Tenant, other_tenant: Tenant
) -> None:
    with sessions() as session:
        first = webhooks.get_default_secret(session, tenant_id=tenant.id).secret
    with sessions() as session:
        assert webhooks.get_default_secret(session, tenant_id=tenant.id).secret == first
        assert webhooks.get_default_secret(session, tenant_id=other_tenant.id).secret != first
    with sessions() as session:
        rotated = webhooks.rotate_default_secret(session, tenant_id=tenant.id)
    assert rotated.secret != first and rotated.previous_secret == first
    assert rotated.previous_secret_expires_at is not None


def test_signature_header_carries_one_v1_signature_per_secret() -> None:
    # Independent check: HMAC-SHA256 over "id.timestamp.body" with the decoded secret, as the
    # Standard Webhooks specification defines it, and verification by the library.
    import hashlib
    import hmac

    new, old = webhooks.new_secret(), webhooks.new_secret()
    now = datetime.now(UTC).replace(microsecond=0)
    body = '{"type":"ping","data":{}}'
    header = sign("msg_1", now, body, [new, old])
    parts = header.split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    key = base64.b64decode(new.removeprefix("whsec_"))
    expected = hmac.new(key, f"msg_1.{int(now.timestamp())}.{body}".encode(), hashlib.sha256)
    assert parts[0] == "v1," + base64.b64encode(expected.digest()).decode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": header,
    }
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == {"type": "ping", "data": {}}

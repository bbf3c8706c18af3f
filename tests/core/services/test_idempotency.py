"""Idempotency-Key: replay, mismatch, in progress, abandon, tenant scope, expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import IdempotencyKey, Tenant, utcnow
from core.services import idempotency
from core.services.errors import IdempotencyInProgress, IdempotencyMismatch, InvalidRequest
from core.services.idempotency import StoredResponse

SessionFactory = sessionmaker[Session]
RESPONSE = StoredResponse(
    status_code=202, body={"id": "c1", "state": "queued"}, headers={"Location": "/v1/c/c1"}
)


def test_first_claim_then_replay(sessions: SessionFactory, tenant: Tenant) -> None:
    with sessions() as session:
        assert idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h1") is None
        with pytest.raises(IdempotencyInProgress):  # a concurrent duplicate
            idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h1")
        idempotency.finish(session, tenant_id=tenant.id, key="k", response=RESPONSE)
    with sessions() as session:
        replay = idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h1")
        with pytest.raises(IdempotencyMismatch):
            idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h2")
        row = session.get_one(IdempotencyKey, (tenant.id, "k"))
    assert replay == RESPONSE
    # Kept for at least 24 hours.
    assert row.expires_at - row.created_at >= timedelta(hours=24)


def test_keys_are_scoped_to_the_tenant(
    sessions: SessionFactory, tenant: Tenant, other_tenant: Tenant
) -> None:
    with sessions() as session:
        assert idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="a") is None
        assert (
            idempotency.begin(session, tenant_id=other_tenant.id, key="k", request_hash="b") is None
        )


def test_abandon_lets_a_retry_run(sessions: SessionFactory, tenant: Tenant) -> None:
    with sessions() as session:
        idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h")
        idempotency.abandon(session, tenant_id=tenant.id, key="k")
        assert idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h2") is None
        idempotency.finish(session, tenant_id=tenant.id, key="k", response=RESPONSE)
        idempotency.abandon(session, tenant_id=tenant.id, key="k")  # a finished key stays
        assert (
            idempotency.begin(session, tenant_id=tenant.id, key="k", request_hash="h2") == RESPONSE
        )


def test_expired_and_abandoned_claims_are_replaced(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    with sessions() as session:
        idempotency.begin(session, tenant_id=tenant.id, key="done", request_hash="h")
        idempotency.finish(session, tenant_id=tenant.id, key="done", response=RESPONSE)
        idempotency.begin(session, tenant_id=tenant.id, key="stuck", request_hash="h")
        now = utcnow()
        session.execute(
            sa.update(IdempotencyKey)
            .where(IdempotencyKey.key == "done")
            .values(expires_at=now - timedelta(seconds=1))
        )
        session.execute(
            sa.update(IdempotencyKey)
            .where(IdempotencyKey.key == "stuck")
            .values(created_at=now - timedelta(seconds=idempotency.IN_PROGRESS_TIMEOUT_S + 1))
        )
        session.commit()
        assert idempotency.begin(session, tenant_id=tenant.id, key="done", request_hash="x") is None
        assert (
            idempotency.begin(session, tenant_id=tenant.id, key="stuck", request_hash="y") is None
        )
        assert idempotency.purge_expired(session) == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_bad_keys_are_refused(sessions: SessionFactory, tenant: Tenant, key: str) -> None:
    with sessions() as session, pytest.raises(InvalidRequest):
        idempotency.begin(session, tenant_id=tenant.id, key=key, request_hash="h")

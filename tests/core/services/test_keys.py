"""API keys: random, shown once, stored only as a hash; tenants resolved from keys."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import ApiKey, Tenant, utcnow
from core.services import keys
from core.services.errors import InvalidRequest, Unauthorized

SessionFactory = sessionmaker[Session]


def test_key_is_random_prefixed_and_stored_only_as_its_hash(sessions: SessionFactory) -> None:
    with sessions() as session:
        first = keys.create_key(session, tenant_name="acme")
        second = keys.create_key(session, tenant_name="acme")
    assert first != second
    assert first.startswith(keys.KEY_PREFIX) and len(first) == len(keys.KEY_PREFIX) + 43
    with sessions() as session:
        rows = session.scalars(sa.select(ApiKey)).all()
        tenants = session.scalars(sa.select(Tenant)).all()
    assert len(tenants) == 1  # the tenant is reused
    assert sorted(r.key_hash for r in rows) == sorted(
        hashlib.sha256(k.encode()).hexdigest() for k in (first, second)
    )
    for row in rows:
        # Only a short prefix is kept in clear; never the whole key.
        assert len(row.prefix) == keys.SHOWN_PREFIX_LENGTH
        assert row.prefix in (first[:12], second[:12])


def test_authenticate_returns_the_owner_and_records_use(sessions: SessionFactory) -> None:
    with sessions() as session:
        token_a = keys.create_key(session, tenant_name="acme")
        token_b = keys.create_key(session, tenant_name="globex")
    with sessions() as session:
        assert keys.authenticate(session, token_a).name == "acme"
        assert keys.authenticate(session, token_b).name == "globex"
    with sessions() as session:
        used = session.scalars(sa.select(ApiKey.last_used_at)).all()
    assert all(value is not None for value in used)


@pytest.mark.parametrize(
    "token",
    ["", "Bearer x", "dfa_short", "dfa_" + "A" * 43 + "!", "xyz_" + "A" * 43, "dfa_" + "B" * 43],
)
def test_unknown_or_malformed_keys_are_refused(sessions: SessionFactory, token: str) -> None:
    with sessions() as session:
        keys.create_key(session, tenant_name="acme")
        with pytest.raises(Unauthorized):
            keys.authenticate(session, token)


def test_revoked_key_is_refused(sessions: SessionFactory) -> None:
    with sessions() as session:
        token = keys.create_key(session, tenant_name="acme")
        session.execute(sa.update(ApiKey).values(revoked_at=utcnow()))
        session.commit()
        with pytest.raises(Unauthorized):
            keys.authenticate(session, token)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_bad_tenant_names_are_refused(sessions: SessionFactory, name: str) -> None:
    with sessions() as session, pytest.raises(InvalidRequest):
        keys.create_key(session, tenant_name=name)

"""Webhook signing secrets encrypted at rest (core.db.secretbox) on SQLite and PostgreSQL.

What is checked against the database is read back with plain SQL, bypassing the column type;
tokens are opened with ``cryptography``'s own ``Fernet``, independently of the key ring.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings
from core.db.models import SECRET_LENGTH, Tenant, WebhookEndpoint, WebhookTenantSecret
from core.db.secretbox import (
    FORMAT_UNKNOWN,
    KEY_MISSING,
    PREFIX,
    SecretBox,
    SecretDecryptionError,
    secret_box_for,
)
from core.db.session import alembic_config, make_engine, make_session_factory, upgrade_database
from tests.support.databases import migrate

SessionFactory = sessionmaker[Session]

#: Fixed keys (``Fernet.generate_key()``), so a failure is reproducible.
OLD_KEY = "h2J1bhWAmUmCzp6J4J-GWjN8BM1wIS2gJUIUaJ-y9Kk="
NEW_KEY = "X6tN7bHq3bYcP0k3nW0mJp7m5x0f0YQz4cN3rQ9b2dE="
OTHER_KEY = "u8c9YVQvW3jz2m1s0r4Qe5Tn6Kp7Ld8Mf9Gh0Ji1Hk4="
#: A secret shaped like the service's (``whsec_`` + base64 of 32 bytes: 50 characters).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwZ3kT1u5yV0c="
PREVIOUS = "whsec_Ab" + "Cd" * 21


def _token(stored: str) -> bytes:
    assert stored.startswith(PREFIX), stored
    return stored[len(PREFIX) :].encode()


# -- the key ring alone ------------------------------------------------------------------------


def test_keys_are_real_fernet_keys() -> None:
    for key in (OLD_KEY, NEW_KEY, OTHER_KEY):
        Fernet(key)
    assert len({OLD_KEY, NEW_KEY, OTHER_KEY}) == 3


def test_seal_and_open_round_trip() -> None:
    box = SecretBox([NEW_KEY])
    stored = box.seal(SECRET)
    assert stored.startswith(PREFIX) and SECRET not in stored
    assert len(stored) == len(PREFIX) + 164 <= SECRET_LENGTH  # the size the column is made for
    assert Fernet(NEW_KEY).decrypt(_token(stored)).decode() == SECRET  # a plain Fernet token
    assert box.open(stored) == SECRET
    assert box.seal(SECRET) != stored  # a fresh IV every time
    assert box.is_current(stored)


def test_first_key_encrypts_every_key_decrypts() -> None:
    old = SecretBox([OLD_KEY]).seal(SECRET)
    ring = SecretBox([NEW_KEY, OLD_KEY])
    assert ring.open(old) == SECRET
    assert not ring.is_current(old)  # what encrypt-secrets rewrites
    new = ring.seal(SECRET)
    Fernet(NEW_KEY).decrypt(_token(new))
    assert ring.is_current(new)


def test_clear_values_pass_through_and_are_not_current_once_keys_exist() -> None:
    assert SecretBox([NEW_KEY]).open(SECRET) == SECRET
    assert not SecretBox([NEW_KEY]).is_current(SECRET)
    empty = SecretBox()
    assert not empty.encrypts and empty.key_count == 0
    assert empty.seal(SECRET) == SECRET and empty.open(SECRET) == SECRET
    assert empty.is_current(SECRET)


@pytest.mark.parametrize("keys", [[OTHER_KEY], [OTHER_KEY, NEW_KEY], []])
def test_a_missing_key_is_a_stable_error(keys: list[str]) -> None:
    stored = SecretBox([OLD_KEY]).seal(SECRET)
    with pytest.raises(SecretDecryptionError) as info:
        SecretBox(keys).open(stored)
    assert info.value.code == KEY_MISSING == "secret_key_missing"
    assert "DIFFALL_WEBHOOKS__SECRET_KEYS" in info.value.message
    for key in (OLD_KEY, *keys):
        assert key not in str(info.value)


def test_tampered_or_unknown_values_are_refused() -> None:
    box = SecretBox([NEW_KEY])
    stored = box.seal(SECRET)
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(SecretDecryptionError) as info:
        box.open(tampered)
    assert info.value.code == KEY_MISSING
    with pytest.raises(SecretDecryptionError) as info:
        box.open("fernet:v9:" + stored[len(PREFIX) :])
    assert info.value.code == FORMAT_UNKNOWN == "secret_format_unknown"
    with pytest.raises(ValueError, match="already looks encrypted"):
        box.seal(stored)  # never encrypted twice


def test_bad_keys_are_refused_without_echo() -> None:
    with pytest.raises(ValueError, match="secret key 2 is not a Fernet key") as info:
        SecretBox([NEW_KEY, "not-a-key-at-all"])
    assert "not-a-key-at-all" not in str(info.value)
    assert NEW_KEY not in repr(SecretBox([NEW_KEY]))


# -- through the column type, on both databases -------------------------------------------------


@pytest.fixture
def migrated(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def engines() -> Iterator[Callable[..., Engine]]:
    """Make engines with a given key ring (disposed after the test)."""
    made: list[Engine] = []

    def make(url: str, keys: Sequence[str] | None) -> Engine:
        engine = make_engine(url, secret_keys=keys)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def _add_endpoint(sessions: SessionFactory, *, previous: str | None = PREVIOUS) -> uuid.UUID:
    with sessions.begin() as session:
        tenant = Tenant(name=f"t-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        endpoint = WebhookEndpoint(
            tenant_id=tenant.id, url="https://hooks.example.com/x", secret=SECRET
        )
        endpoint.previous_secret = previous
        session.add(endpoint)
        session.add(WebhookTenantSecret(tenant_id=tenant.id, secret=SECRET))
        session.flush()
        return endpoint.id


def _raw(engine: Engine, endpoint_id: uuid.UUID) -> tuple[str, str | None]:
    """The stored values of an endpoint's secrets, read with plain SQL."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = :id"),
            {"id": endpoint_id.hex if engine.dialect.name == "sqlite" else endpoint_id},
        ).one()
    return row[0], row[1]


def _read(sessions: SessionFactory, endpoint_id: uuid.UUID) -> tuple[str, str | None]:
    with sessions() as session:
        endpoint = session.get_one(WebhookEndpoint, endpoint_id)
        return endpoint.secret, endpoint.previous_secret


def test_column_round_trip_stores_only_ciphertext(
    migrated: str, engines: Callable[..., Engine]
) -> None:
    engine = engines(migrated, [NEW_KEY])
    sessions = make_session_factory(engine)
    ident = _add_endpoint(sessions)
    assert _read(sessions, ident) == (SECRET, PREVIOUS)
    stored, stored_previous = _raw(engine, ident)
    assert stored_previous is not None
    for value, clear in ((stored, SECRET), (stored_previous, PREVIOUS)):
        assert value.startswith(PREFIX) and clear not in value
        assert Fernet(NEW_KEY).decrypt(_token(value)).decode() == clear
    with engine.connect() as connection:
        tenant_rows = connection.execute(sa.text("SELECT secret FROM webhook_tenant_secrets"))
        (tenant_secret,) = tenant_rows.scalars().all()
    assert tenant_secret.startswith(PREFIX) and SECRET not in tenant_secret
    # NULL stays NULL.
    other = _add_endpoint(sessions, previous=None)
    assert _raw(engine, other)[1] is None and _read(sessions, other)[1] is None


def test_clear_rows_written_before_a_key_was_set_stay_readable(
    migrated: str, engines: Callable[..., Engine]
) -> None:
    clear_engine = engines(migrated, ())
    ident = _add_endpoint(make_session_factory(clear_engine))
    assert _raw(clear_engine, ident) == (SECRET, PREVIOUS)  # no key: stored in clear
    keyed = make_session_factory(engines(migrated, [NEW_KEY]))
    assert _read(keyed, ident) == (SECRET, PREVIOUS)
    # A change written now is encrypted; the untouched column stays as it was.
    with keyed.begin() as session:
        session.get_one(WebhookEndpoint, ident).secret = SECRET.replace("M", "N")
    stored, stored_previous = _raw(keyed.kw["bind"], ident)
    assert stored.startswith(PREFIX) and stored_previous == PREVIOUS
    assert _read(keyed, ident) == (SECRET.replace("M", "N"), PREVIOUS)


def test_rotation_old_key_second_still_decrypts(
    migrated: str, engines: Callable[..., Engine]
) -> None:
    ident = _add_endpoint(make_session_factory(engines(migrated, [OLD_KEY])))
    rotated = engines(migrated, [NEW_KEY, OLD_KEY])
    assert _read(make_session_factory(rotated), ident) == (SECRET, PREVIOUS)
    # Without the old key nothing is signed with garbage: the read fails with a stable code.
    with pytest.raises(SecretDecryptionError) as info:
        _read(make_session_factory(engines(migrated, [NEW_KEY])), ident)
    assert info.value.code == "secret_key_missing"
    with pytest.raises(SecretDecryptionError):
        _read(make_session_factory(engines(migrated, ())), ident)


def test_engines_default_to_the_settings_keys(
    migrated: str, engines: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("DIFFALL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file
    monkeypatch.setenv("DIFFALL_WEBHOOKS__SECRET_KEYS", f" {NEW_KEY} , {OLD_KEY}")
    get_settings.cache_clear()
    try:
        engine = engines(migrated, None)
        assert secret_box_for(engine.dialect).key_count == 2
        ident = _add_endpoint(make_session_factory(engine))
        Fernet(NEW_KEY).decrypt(_token(_raw(engine, ident)[0]))
    finally:
        get_settings.cache_clear()


# -- the migration -------------------------------------------------------------------------------


def _insert_clear_rows_at_0002(url: str) -> uuid.UUID:
    """A database at revision 0002 with a tenant, an endpoint and a tenant secret (clear)."""
    command.upgrade(alembic_config(url), "0002")
    engine = make_engine(url, secret_keys=())
    try:
        ident = _add_endpoint(make_session_factory(engine))
    finally:
        engine.dispose()
    return ident


def test_upgrade_keeps_clear_secrets_readable(
    empty_database_url: str, engines: Callable[..., Engine]
) -> None:
    ident = _insert_clear_rows_at_0002(empty_database_url)
    upgrade_database(empty_database_url)
    keyed = make_session_factory(engines(empty_database_url, [NEW_KEY]))
    assert _read(keyed, ident) == (SECRET, PREVIOUS)
    with keyed() as session:
        assert session.scalars(sa.select(WebhookTenantSecret.secret)).all() == [SECRET]
    # The widened column takes a long secret's ciphertext.
    long_secret = "whsec_" + "x" * 250
    with keyed.begin() as session:
        session.get_one(WebhookEndpoint, ident).secret = long_secret
    assert len(_raw(keyed.kw["bind"], ident)[0]) <= SECRET_LENGTH
    assert _read(keyed, ident)[0] == long_secret


def test_downgrade_refuses_while_secrets_are_encrypted(
    empty_database_url: str, engines: Callable[..., Engine]
) -> None:
    upgrade_database(empty_database_url)
    ident = _add_endpoint(make_session_factory(engines(empty_database_url, [NEW_KEY])))
    with pytest.raises(RuntimeError, match="encrypted secret"):
        command.downgrade(alembic_config(empty_database_url), "0002")
    # Once the secrets are clear again (here: rewritten with no key), the downgrade runs.
    clear = make_session_factory(engines(empty_database_url, ()))
    with clear.begin() as session:
        session.execute(sa.update(WebhookEndpoint).values(secret=SECRET, previous_secret=PREVIOUS))
        session.execute(sa.update(WebhookTenantSecret).values(secret=SECRET))
    command.downgrade(alembic_config(empty_database_url), "0002")
    upgrade_database(empty_database_url)
    assert _read(clear, ident) == (SECRET, PREVIOUS)

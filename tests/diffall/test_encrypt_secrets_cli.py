"""``diffall db encrypt-secrets`` on SQLite and PostgreSQL: thin over the service, configured from
the environment (DIFFALL_DATABASE_URL, DIFFALL_WEBHOOKS__SECRET_KEYS), idempotent, one line on
stderr and exit 2 when it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from core.config import get_settings
from core.db.models import Tenant, WebhookEndpoint, WebhookTenantSecret
from core.db.secretbox import PREFIX
from core.db.session import make_engine, make_session_factory
from diffall.cli import app
from tests.support.databases import migrate

runner = CliRunner()

OLD_KEY = "h2J1bhWAmUmCzp6J4J-GWjN8BM1wIS2gJUIUaJ-y9Kk="
NEW_KEY = "X6tN7bHq3bYcP0k3nW0mJp7m5x0f0YQz4cN3rQ9b2dE="
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwZ3kT1u5yV0c="


@pytest.fixture(autouse=True)
def clean_env(clean_diffall_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The clean environment of tests/conftest.py, with the data under ``tmp_path``."""
    monkeypatch.setenv("DIFFALL_DATA_DIR", str(tmp_path / "data"))


def _seed_clear(url: str) -> None:
    """A tenant with an endpoint and a default secret, stored in clear (no key yet)."""
    engine = make_engine(url, secret_keys=())
    try:
        with make_session_factory(engine).begin() as session:
            tenant = Tenant(name="acme")
            session.add(tenant)
            session.flush()
            session.add(
                WebhookEndpoint(tenant_id=tenant.id, url="https://x.example", secret=SECRET)
            )
            session.add(WebhookTenantSecret(tenant_id=tenant.id, secret=SECRET))
    finally:
        engine.dispose()


def _stored(url: str) -> list[str]:
    engine = make_engine(url, secret_keys=())
    try:
        with engine.connect() as connection:
            return [
                connection.execute(sa.text(f"SELECT secret FROM {table}")).scalar_one()
                for table in ("webhook_endpoints", "webhook_tenant_secrets")
            ]
    finally:
        engine.dispose()


def _run(monkeypatch: pytest.MonkeyPatch, url: str, keys: str) -> tuple[int, str, str]:
    monkeypatch.setenv("DIFFALL_DATABASE_URL", url)
    monkeypatch.setenv("DIFFALL_WEBHOOKS__SECRET_KEYS", keys)
    get_settings.cache_clear()
    result = runner.invoke(app, ["db", "encrypt-secrets"])
    return result.exit_code, result.stdout, result.stderr


def test_encrypts_then_rotates_then_changes_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(database_url)
    _seed_clear(database_url)
    code, out, err = _run(monkeypatch, database_url, OLD_KEY)
    assert code == 0, err
    assert out.startswith("2 row(s) changed (webhook_endpoints: 1, webhook_tenant_secrets: 1)")
    assert all(
        Fernet(OLD_KEY).decrypt(v.removeprefix(PREFIX).encode()).decode() == SECRET
        for v in _stored(database_url)
    )
    code, out, err = _run(monkeypatch, database_url, f"{NEW_KEY},{OLD_KEY}")
    assert code == 0 and out.startswith("2 row(s) changed"), err
    assert all(
        Fernet(NEW_KEY).decrypt(v.removeprefix(PREFIX).encode()).decode() == SECRET
        for v in _stored(database_url)
    )
    code, out, err = _run(monkeypatch, database_url, NEW_KEY)
    assert code == 0 and out.startswith("0 row(s) changed"), err
    for key in (OLD_KEY, NEW_KEY, SECRET):
        assert key not in out + err


def test_refuses_without_keys_or_without_the_old_key(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(database_url)
    _seed_clear(database_url)
    code, out, err = _run(monkeypatch, database_url, "")
    assert code == 2 and out == ""
    assert "secret_keys_not_configured" in err and "DIFFALL_WEBHOOKS__SECRET_KEYS" in err
    assert _run(monkeypatch, database_url, OLD_KEY)[0] == 0
    code, out, err = _run(monkeypatch, database_url, NEW_KEY)
    assert code == 2 and out == ""
    assert "secret_key_missing" in err


def test_refuses_an_outdated_schema(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = _run(monkeypatch, empty_database_url, NEW_KEY)
    assert code == 2 and out == ""
    assert "diffall db upgrade" in err

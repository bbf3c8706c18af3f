"""The API encrypts webhook signing secrets with the key ring of ITS settings, and answers a
problem document (not a bare 500) when a stored secret cannot be decrypted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from core.config import WebhookSettings
from core.db.secretbox import PREFIX
from core.netguard.classify import parse_allowed_networks
from core.services import keys
from tests.support.api import assert_problem, make_settings
from tests.support.brokers import REDIS_HOST, REDIS_PORT
from tests.support.databases import migrate


@pytest.fixture
def start_app(tmp_path: Path, redis_db: redis.Redis) -> Iterator[object]:
    """``start_app(database_url, key)``: a running app whose settings hold one Fernet key."""
    clients: list[TestClient] = []
    number = redis_db.connection_pool.connection_kwargs["db"]

    def start(database_url: str, key: bytes) -> TestClient:
        settings = make_settings(
            data_dir=tmp_path / f"data{len(clients)}",
            database_url=database_url,
            broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}",
        ).model_copy(
            update={
                "webhooks": WebhookSettings(secret_keys=(SecretStr(key.decode()),)),
                "webhook_allowed_networks": parse_allowed_networks("127.0.0.1/32"),
            }
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in reversed(clients):
            client.__exit__(None, None, None)


def test_secrets_are_sealed_with_the_apps_keys_and_a_missing_key_is_a_problem(
    start_app: object, database_url: str
) -> None:
    migrate(database_url)
    first, other = Fernet.generate_key(), Fernet.generate_key()
    client = start_app(database_url, first)  # type: ignore[operator]
    with client.app.state.sessions() as session:
        token = keys.create_key(session, tenant_name="acme")
    auth = {"Authorization": f"Bearer {token}"}
    created = client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/in", "events": ["comparison.succeeded"]},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            stored = connection.execute(sa.text("SELECT secret FROM webhook_endpoints")).scalar()
    finally:
        engine.dispose()
    # The process environment has no key: only the app's settings can have sealed it.
    assert isinstance(stored, str) and stored.startswith(PREFIX)
    assert secret not in stored
    assert Fernet(first).decrypt(stored[len(PREFIX) :].encode()).decode() == secret
    assert client.get("/v1/webhooks", headers=auth).status_code == 200
    default = client.get("/v1/webhooks/default-secret", headers=auth)
    assert default.status_code == 200
    # Another app on the same database with a different key cannot open them: the endpoints
    # stay manageable (secrets are only decrypted to sign or to show them) ...
    stranger = start_app(database_url, other)  # type: ignore[operator]
    listed = stranger.get("/v1/webhooks", headers=auth)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1
    # ... and showing a secret is a clear problem, not a bare 500.
    answer = stranger.get("/v1/webhooks/default-secret", headers=auth)
    body = assert_problem(answer, 500, "secret_key_missing")
    assert "DIFFALL_WEBHOOKS__SECRET_KEYS" in body["detail"]
    assert default.json()["secret"] not in answer.text and first.decode() not in answer.text

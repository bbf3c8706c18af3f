"""The HTTP app for the API tests: an app with its lifespan entered and helpers to call it,
the settings of one test app, and the check of an RFC 9457 problem response. The fixtures that
build apps (``make_api``, ``api``, ``sqlite_api``) are in tests/api/conftest.py."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from core.config import LimitsSettings, Settings, StorageSettings, WorkerSettings
from core.services import keys
from tests.s3server import TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY

with warnings.catch_warnings():
    # Starlette asks for httpx2 (not installed); httpx works the same for these tests.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["Api", "ApiFactory", "TestClient", "assert_problem", "make_settings", "s3_storage"]


def assert_problem(response: Any, status: int, code: str | set[str]) -> dict[str, Any]:
    """Check an RFC 9457 problem response and return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    codes = {code} if isinstance(code, str) else code
    assert body["code"] in codes, body
    assert body["status"] == status
    assert body["type"].endswith(f"/problems/{body['code']}")
    for member in ("title", "detail", "instance"):
        assert isinstance(body[member], str) and body[member], body
    assert "Traceback" not in response.text
    return body


@dataclass
class Api:
    """A running app (lifespan entered) and helpers to call it."""

    app: FastAPI
    client: TestClient
    settings: Settings
    broker: redis.Redis
    _keys: dict[str, str] = field(default_factory=dict)

    @property
    def sessions(self) -> sessionmaker[Session]:
        factory: sessionmaker[Session] = self.app.state.sessions
        return factory

    def key(self, tenant: str = "acme") -> str:
        """An API key of ``tenant`` (created once per tenant)."""
        if tenant not in self._keys:
            with self.sessions() as session:
                self._keys[tenant] = keys.create_key(session, tenant_name=tenant)
        return self._keys[tenant]

    def auth(self, tenant: str = "acme", **extra: str) -> dict[str, str]:
        """Headers with ``tenant``'s API key (plus ``extra`` headers)."""
        return {"Authorization": f"Bearer {self.key(tenant)}", **extra}

    def upload(self, data: bytes, tenant: str = "acme") -> dict[str, Any]:
        """Upload ``data`` with ``POST /v1/images``; return the image resource."""
        response = self.client.post(
            "/v1/images",
            files={"file": ("image.png", data, "image/png")},
            headers=self.auth(tenant),
        )
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    def compare(self, a: str, b: str, tenant: str = "acme", **extra: Any) -> dict[str, Any]:
        """Submit a JSON comparison of image ids ``a`` and ``b``; return the resource."""
        response = self.client.post(
            "/v1/comparisons", json={"a": a, "b": b, **extra}, headers=self.auth(tenant)
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body


ApiFactory = Callable[..., Api]


def make_settings(
    *,
    data_dir: Path,
    database_url: str,
    broker_url: str,
    storage: StorageSettings | None = None,
    worker: WorkerSettings | None = None,
    **limits: Any,
) -> Settings:
    """Settings for one test app (explicit values; the environment cannot change them)."""
    return Settings(
        env="test",
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        storage=storage or StorageSettings(backend="local"),
        limits=LimitsSettings(**limits),
        worker=worker or WorkerSettings(),
    )


def s3_storage(endpoint: str, bucket: str) -> StorageSettings:
    """Storage settings for ``bucket`` on the S3 server at ``endpoint``."""
    return StorageSettings(
        backend="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_region=TEST_REGION,
        s3_access_key_id=SecretStr(TEST_ACCESS_KEY_ID),
        s3_secret_access_key=SecretStr(TEST_SECRET_ACCESS_KEY),
    )

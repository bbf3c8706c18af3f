"""Fixtures for the storage tests: a moto S3 server per session, fresh stores per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.storage import LocalObjectStore, S3ObjectStore
from tests.s3server import (
    TEST_ACCESS_KEY_ID,
    TEST_REGION,
    TEST_SECRET_ACCESS_KEY,
    S3Server,
    start_s3_server,
)
from tests.support.storage import S3StoreFactory


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server on a free loopback port for the whole session."""
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def make_s3_store(s3_server: S3Server) -> S3StoreFactory:
    """Return a factory of S3 stores: test credentials, short timeouts, no retries by default.

    ``endpoint_url`` defaults to the session's moto server and ``bucket`` to a new unique name
    (moto's state is shared by the whole process). Buckets are not created unless asked.
    """

    def factory(
        *,
        endpoint_url: str | None = None,
        bucket: str | None = None,
        region: str = TEST_REGION,
        presign_endpoint_url: str | None = None,
        create_bucket: bool = False,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_attempts: int = 1,
    ) -> S3ObjectStore:
        return S3ObjectStore(
            endpoint_url=endpoint_url or s3_server.endpoint_url,
            bucket=bucket or f"test-{uuid.uuid4().hex[:16]}",
            region=region,
            access_key_id=TEST_ACCESS_KEY_ID,
            secret_access_key=TEST_SECRET_ACCESS_KEY,
            presign_endpoint_url=presign_endpoint_url,
            create_bucket=create_bucket,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_attempts=max_attempts,
        )

    return factory


@pytest.fixture
def s3_store(make_s3_store: S3StoreFactory) -> S3ObjectStore:
    """An S3 store on a new, empty bucket of the session's moto server."""
    store = make_s3_store()
    store.ensure_bucket()
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """A local store rooted in a fresh temporary directory (not created yet)."""
    return LocalObjectStore(tmp_path / "objects")

"""Fixtures of the API tests: the app on real backends, API keys, the broker (the helpers they
use, ``Api``, ``assert_problem``, ``make_settings``, are in tests/support/api.py).

Backends are real: PostgreSQL and SQLite (the root ``database_url`` fixture, migrated here),
the local store or moto's S3 server, and a Celery producer on Redis (an empty database number
claimed for the session and flushed at its end). No worker runs: tests read the Redis lists to
see that a message was queued.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from api.main import create_app
from api.ratelimit import AUTH_FAILURE_PREFIX, REDIS_PREFIX
from core.config import StorageSettings, WorkerSettings
from core.storage import S3ObjectStore
from tests.s3server import TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY
from tests.support.api import Api, ApiFactory, TestClient, make_settings
from tests.support.brokers import REDIS_HOST, REDIS_PORT, claimed_redis_db
from tests.support.databases import migrate

# -- the broker --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_db() -> Iterator[redis.Redis]:
    """An empty Redis database (1..15) of this test process (``claimed_redis_db``)."""
    try:
        with claimed_redis_db() as number:
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
            try:
                yield client
            finally:
                client.close()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}", pytrace=False)


# -- the app -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_bucket_factory(s3_endpoint: str) -> Callable[[], str]:
    """Create a new, empty bucket on the session's moto server and return its name."""

    def make() -> str:
        name = f"api-{uuid.uuid4().hex[:16]}"
        S3ObjectStore(
            endpoint_url=s3_endpoint,
            bucket=name,
            region=TEST_REGION,
            access_key_id=TEST_ACCESS_KEY_ID,
            secret_access_key=TEST_SECRET_ACCESS_KEY,
        ).ensure_bucket()
        return name

    return make


@pytest.fixture
def make_api(tmp_path: Path, redis_db: redis.Redis) -> Iterator[ApiFactory]:
    """Build and start apps: ``make_api(database_url, storage=..., worker=..., **limits)``.

    The database is migrated first; every app is shut down at the end of the test.
    """
    started: list[TestClient] = []
    number = redis_db.connection_pool.connection_kwargs["db"]
    broker_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"

    def factory(
        database_url: str,
        *,
        storage: StorageSettings | None = None,
        worker: WorkerSettings | None = None,
        **limits: Any,
    ) -> Api:
        migrate(database_url)
        # Failed-authentication buckets are per client address ("testclient" for every test):
        # each test starts with full ones, as a fresh deployment would.
        for stale in redis_db.scan_iter(match=REDIS_PREFIX + AUTH_FAILURE_PREFIX + "*"):
            redis_db.delete(stale)
        data_dir = tmp_path / f"data{len(started)}"
        settings = make_settings(
            data_dir=data_dir,
            database_url=database_url,
            broker_url=broker_url,
            storage=storage,
            worker=worker,
            **limits,
        )
        app = create_app(settings)
        client = TestClient(app)
        client.__enter__()
        started.append(client)
        return Api(app=app, client=client, settings=settings, broker=redis_db)

    try:
        yield factory
    finally:
        for client in reversed(started):
            client.__exit__(None, None, None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file (for tests where the database engine does not matter)."""
    return f"sqlite:///{tmp_path / 'api.db'}"


@pytest.fixture
def api(make_api: ApiFactory, database_url: str) -> Api:
    """The app on local storage, on SQLite and on PostgreSQL (parametrised)."""
    return make_api(database_url)


@pytest.fixture
def sqlite_api(make_api: ApiFactory, sqlite_url: str) -> Api:
    """The app on SQLite and local storage."""
    return make_api(sqlite_url)

"""Fixtures of the service tests: real databases (``database_url``: SQLite and PostgreSQL), real
stores (a local directory and moto's S3 server), a real Celery app on a Redis database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Tenant
from core.db.session import make_engine, make_session_factory
from core.services.jobqueue import CeleryJobQueue, make_celery_app
from core.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.s3server import TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY, free_port
from tests.support.brokers import REDIS_HOST, REDIS_PORT, claimed_redis_db, redis_url
from tests.support.databases import clone_pg_database, drop_pg_database_later
from tests.support.settings import settings_for
from tests.support.tenants import make_tenant

SessionFactory = sessionmaker[Session]


@pytest.fixture
def sessions(session_factory: SessionFactory) -> SessionFactory:
    """Session factory on a migrated database (SQLite or PostgreSQL)."""
    return session_factory


@pytest.fixture
def pg_sessions() -> Iterator[SessionFactory]:
    """Session factory on a PostgreSQL database of this test at head (for measurements that are
    about PostgreSQL only)."""
    url = clone_pg_database()
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()
        drop_pg_database_later(url)


def _s3_store(endpoint: str, *, create: bool) -> S3ObjectStore:
    store = S3ObjectStore(
        endpoint_url=endpoint,
        bucket=f"svc-{uuid.uuid4().hex[:16]}",
        region=TEST_REGION,
        access_key_id=TEST_ACCESS_KEY_ID,
        secret_access_key=TEST_SECRET_ACCESS_KEY,
        connect_timeout_s=2.0,
        read_timeout_s=10.0,
        max_attempts=1,
    )
    if create:
        store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A real object store: a local directory, or a fresh bucket on moto's S3 server."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return _s3_store(request.getfixturevalue("s3_endpoint"), create=True)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """A local store (for tests where the backend does not matter)."""
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def dead_s3_store() -> S3ObjectStore:
    """An S3 store whose endpoint refuses connections (storage outage)."""
    return _s3_store(f"http://127.0.0.1:{free_port()}", create=False)


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis database of this test alone, flushed afterwards."""
    with claimed_redis_db() as number:
        yield number


@pytest.fixture
def redis_client(redis_db: int) -> Iterator[redis.Redis]:
    """A client of :func:`redis_db`."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
    yield client
    client.close()


@pytest.fixture
def queue(redis_db: int, tmp_path: Path) -> Iterator[CeleryJobQueue]:
    """A real ``CeleryJobQueue`` on the test's Redis database."""
    app = make_celery_app(settings_for(tmp_path, broker_url=redis_url(redis_db)))
    yield CeleryJobQueue(app)
    app.close()


@pytest.fixture
def dead_queue(tmp_path: Path) -> Iterator[CeleryJobQueue]:
    """A ``CeleryJobQueue`` whose Redis refuses connections (broker outage)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    app = make_celery_app(settings_for(tmp_path, broker_url=url))
    yield CeleryJobQueue(app)
    app.close()


@pytest.fixture
def tenant(sessions: SessionFactory) -> Tenant:
    """A tenant with one API key."""
    return make_tenant(sessions, "acme")


@pytest.fixture
def other_tenant(sessions: SessionFactory) -> Tenant:
    """A second tenant (isolation checks)."""
    return make_tenant(sessions, "globex")

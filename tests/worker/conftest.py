"""Real worker processes for the worker tests.

``celery -A worker.celery_app worker --pool prefork -c 1 -Q interactive,batch,maintenance`` runs
as a subprocess configured only through ``DIFFALL_*`` variables, against a fresh PostgreSQL
database (a clone of the migrated template), a Redis database of its own and a bucket on moto's
S3 server; or, for the embedded default, against SQLite, a local directory and the filesystem
broker. Subprocesses are always killed (their whole process group) when a fixture ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.config import Settings
from core.db.session import make_engine, make_session_factory
from core.services.factories import store_from_settings
from core.services.jobqueue import CeleryJobQueue, make_celery_app
from tests.s3server import TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY
from tests.support.brokers import REDIS_HOST, REDIS_PORT, claimed_redis_db, redis_url
from tests.support.databases import clone_pg_database, drop_pg_database, migrate
from tests.support.workers import WorkerEnv, WorkerProcess


def _common_variables(data_dir: Path) -> dict[str, str]:
    return {
        "DIFFALL_ENV": "test",
        "DIFFALL_DATA_DIR": str(data_dir),
        "DIFFALL_WORKER__SOFT_TIME_LIMIT_S": "60",
        "DIFFALL_WORKER__HARD_TIME_LIMIT_S": "90",
        # A lost message is re-sent by the next sweep after 1 s (the tests send the sweeps).
        "DIFFALL_WORKER__STALE_QUEUED_AFTER_S": "1",
    }


def _settings(variables: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the worker will build from ``variables``."""
    for key in [k for k in os.environ if k.startswith("DIFFALL_")]:
        monkeypatch.delenv(key)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def pg_worker_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module at the head revision (cloned from the
    session's migrated template); dropped afterwards."""
    url = clone_pg_database("diffall_worker")
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="module")
def redis_worker_env(
    pg_worker_database: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerEnv]:
    """PostgreSQL + Redis + moto S3, as production runs it."""
    data_dir = tmp_path_factory.mktemp("worker-redis")
    monkeypatch = pytest.MonkeyPatch()
    with claimed_redis_db() as db:
        variables = {
            **_common_variables(data_dir),
            "DIFFALL_DATABASE_URL": pg_worker_database,
            "DIFFALL_BROKER_URL": redis_url(db),
            "DIFFALL_STORAGE__BACKEND": "s3",
            "DIFFALL_STORAGE__S3_ENDPOINT_URL": s3_endpoint,
            "DIFFALL_STORAGE__S3_BUCKET": f"worker-{uuid.uuid4().hex[:12]}",
            "DIFFALL_STORAGE__S3_REGION": TEST_REGION,
            "DIFFALL_STORAGE__S3_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "DIFFALL_STORAGE__S3_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
        }
        try:
            settings = _settings(variables, monkeypatch)
        finally:
            monkeypatch.undo()
        store = store_from_settings(settings)
        store.ensure_bucket()  # type: ignore[attr-defined]
        engine = make_engine(settings.database_url_resolved)
        app = make_celery_app(settings)
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        try:
            yield WorkerEnv(
                variables=variables,
                settings=settings,
                sessions=make_session_factory(engine),
                store=store,
                queue=CeleryJobQueue(app),
                redis=client,
                log_dir=data_dir,
            )
        finally:
            client.close()
            app.close()
            engine.dispose()


@pytest.fixture(scope="module")
def redis_worker(redis_worker_env: WorkerEnv) -> Iterator[WorkerProcess]:
    """One worker for the module (its pool child is replaced when a test kills it)."""
    worker = WorkerProcess(redis_worker_env.variables, redis_worker_env.log_dir / "worker.log")
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def embedded_env(tmp_path: Path) -> Iterator[WorkerEnv]:
    """The embedded default: SQLite, a local directory and the filesystem broker."""
    monkeypatch = pytest.MonkeyPatch()
    variables = _common_variables(tmp_path / "data")
    try:
        settings = _settings(variables, monkeypatch)
    finally:
        monkeypatch.undo()
    migrate(settings.database_url_resolved)
    engine = make_engine(settings.database_url_resolved)
    app = make_celery_app(settings)
    try:
        yield WorkerEnv(
            variables=variables,
            settings=settings,
            sessions=make_session_factory(engine),
            store=store_from_settings(settings),
            queue=CeleryJobQueue(app),
            log_dir=tmp_path,
        )
    finally:
        app.close()
        engine.dispose()

"""Shared fixtures.

Database: a throwaway PostgreSQL database per test session and a SQLite file per test.

PostgreSQL must be up on 127.0.0.1:5432 (trust auth, database ``test``; override the admin URL
with ``DIFFALL_TEST_PG_ADMIN_URL``). If it is down the tests FAIL (CI starts the service; see
docs). Every test gets an empty ``public`` schema.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.db.session import dispose_engine, make_engine, make_session_factory
from tests.support.databases import migrate

PG_ADMIN_URL = os.environ.get(
    "DIFFALL_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, created for this session and dropped at its end."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"diffall_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.orig}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            pytrace=False,
        )
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engine()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _reset_pg_schema(url: str) -> None:
    """Drop everything in the ``public`` schema of ``url`` (tables, alembic_version)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables): a SQLite file in tmp_path, or the session's PostgreSQL
    database with its schema emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'diffall.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    _reset_pg_schema(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url`` migrated to head."""
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory on the migrated database."""
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a real S3-compatible server (moto's server mode) on a free loopback port."""
    from tests.s3server import start_s3_server

    server = start_s3_server()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture
def clean_diffall_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ``DIFFALL_`` variable from the outside, no ``.env`` file (the working directory is
    ``tmp_path``), a fresh settings cache; engines made from the settings are disposed after."""
    from core.config import get_settings

    for name in list(os.environ):
        if name.upper().startswith("DIFFALL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    dispose_engine()
    get_settings.cache_clear()

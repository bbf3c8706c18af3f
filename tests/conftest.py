"""Shared fixtures.

Databases (tests/support/databases.py): each backend is migrated once per test process, and a
test gets a copy: ``database_url`` is a database at the head revision with no rows (a SQLite
file copied from the migrated one, or a PostgreSQL clone of the migrated template, emptied
between tests); ``engine`` and ``session_factory`` are on it; ``empty_database_url`` is an
empty one, for the tests of the migrations themselves.
PostgreSQL must be up on 127.0.0.1:5432 (trust auth, database ``test``; override the admin URL
with ``DIFFALL_TEST_PG_ADMIN_URL``). If it is down the tests FAIL (CI starts the service).

Shared helpers live in tests/support/; its fixtures (the webhook ``receiver``) are registered here
for every test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db.session import dispose_engine, make_engine, make_session_factory
from tests.support import databases
from tests.support.databases import (
    create_pg_database,
    drop_pg_database,
    drop_pg_database_later,
    fresh_pg_database,
    migrated_sqlite_url,
)

pytest_plugins = ["tests.support.receivers", "tests.support.netfakes"]

BACKENDS = ("sqlite", "postgresql")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this process's template and clone databases (tests/support/databases.py)."""
    databases.cleanup()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, created for this session and dropped at its
    end (for tests that empty and fill one database themselves)."""
    url = create_pg_database("diffall_test")
    try:
        yield url
    finally:
        dispose_engine()
        drop_pg_database(url)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test at the head revision with no rows: a copy of the migrated
    SQLite file in tmp_path, or this process's PostgreSQL clone of the migrated template,
    emptied (see tests/support/databases.py)."""
    if request.param == "sqlite":
        yield migrated_sqlite_url(tmp_path / "db" / "diffall.db")
        return
    yield fresh_pg_database()


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables) of this test: a SQLite file path in tmp_path (not created
    yet), or a new PostgreSQL database (dropped after). The migrations run on it for real."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'diffall.db'}"
        return
    url = create_pg_database("diffall_empty")
    try:
        yield url
    finally:
        drop_pg_database_later(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url`` (at head already: a copy of the real migration)."""
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

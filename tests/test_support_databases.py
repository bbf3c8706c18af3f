"""tests/support/databases.py: a copied or cloned migration is the real migration's schema, at
head; ``migrate`` leaves a database at head alone and migrates any other for real."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.db.models import Base, Tenant
from core.db.session import alembic_config, make_engine, make_session_factory
from tests.support import databases
from tests.support.databases import drop_pg_database, migrate, reset_pg_schema


def _head(url: str) -> str:
    return str(ScriptDirectory.from_config(alembic_config(url)).get_current_head())


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            return [context.get_current_revision(), *compare_metadata(context, Base.metadata)]
    finally:
        engine.dispose()


def test_the_database_of_a_test_is_the_real_migration_at_head(database_url: str) -> None:
    # database_url is a copy (SQLite) or a clone (PostgreSQL) of the migrated template.
    assert _differences(database_url) == [_head(database_url)]


def test_copied_migrations_match_the_models_on_both_backends(
    empty_database_url: str, tmp_path: Path
) -> None:
    migrate(empty_database_url)  # an empty database is filled from the template
    if empty_database_url.startswith("sqlite"):
        assert databases._sqlite_template is not None  # the copy path was taken
        second = f"sqlite:///{tmp_path / 'second' / 'copy.db'}"
        migrate(second)
        assert _differences(second) == [_head(second)]
    else:
        assert databases._pg_template is not None  # the clone path was taken
        reset_pg_schema(empty_database_url)  # empty again: cloned again under the same name
        migrate(empty_database_url)
    assert _differences(empty_database_url) == [_head(empty_database_url)]


def test_a_clone_is_a_database_of_its_own() -> None:
    first, second = databases.clone_pg_database(), databases.clone_pg_database()
    try:
        engine = make_engine(first)
        try:
            with make_session_factory(engine).begin() as session:
                session.add(Tenant(name="only-in-the-first"))
        finally:
            engine.dispose()
        counts = []
        for url in (first, second):
            engine = make_engine(url)
            try:
                with engine.connect() as connection:
                    counts.append(
                        connection.exec_driver_sql("SELECT count(*) FROM tenants").scalar()
                    )
            finally:
                engine.dispose()
        assert counts == [1, 0]
    finally:
        drop_pg_database(first)
        drop_pg_database(second)


def test_a_database_that_is_not_empty_is_migrated_for_real(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'used.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE unrelated (id INTEGER)")
    engine.dispose()
    migrate(url)
    assert _differences(url)[0] == _head(url)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
    engine.dispose()
    assert "unrelated" in tables and "comparisons" in tables

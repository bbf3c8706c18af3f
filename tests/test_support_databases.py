"""tests/support/databases.py: a copied migration is the real migration's schema, at head."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.db.models import Base
from core.db.session import alembic_config, make_engine
from tests.conftest import _reset_pg_schema
from tests.support import databases
from tests.support.databases import migrate


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


def test_copied_migrations_match_the_models_on_both_backends(database_url: str, tmp_path) -> None:
    if database_url.startswith("sqlite"):
        second = f"sqlite:///{tmp_path / 'second' / 'copy.db'}"
        migrate(database_url)
        assert databases._sqlite_template is not None  # the copy path is taken next
        migrate(second)
    else:
        migrate(database_url)
        _reset_pg_schema(database_url)
        assert databases._pg_script is not None
        migrate(database_url)
        second = database_url
    assert _differences(second) == [_head(second)]


def test_a_database_that_is_not_empty_is_migrated_for_real(tmp_path) -> None:
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

"""Alembic environment for DiffALL.

Imports only the models and column types (``core.db``) and the settings (``core.config``). The
database comes from, in order: ``config.attributes["connection"]`` (an open connection, for tests),
``config.attributes["database_url"]`` (set by ``core.db.session.alembic_config``),
``alembic -x url=...``, ``sqlalchemy.url`` in alembic.ini, then the settings
(``DIFFALL_DATABASE_URL`` or the embedded SQLite file).

SQLite: migrations use batch mode (``render_as_batch``: SQLite alters a table by copying it), and
foreign keys are switched off while they run (table copies would otherwise cascade or fail) and
checked with ``PRAGMA foreign_key_check`` before the transaction commits.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext

from core.config import get_settings
from core.db.models import Base, UTCDateTime
from core.db.secretbox import EncryptedSecret
from core.db.session import make_engine, normalise_url

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

#: PostgreSQL advisory lock key serialising concurrent migrations (any constant bigint).
_PG_LOCK_KEY = 0x0D1FFA11


def _database_url() -> str:
    """The URL to migrate (see the module docstring for the order)."""
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return str(url)
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return get_settings().database_url_resolved


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy types in generated revisions."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, EncryptedSecret):
        return f"sa.String(length={obj.impl_instance.length})"
    return False


def _configure(**kwargs: Any) -> None:
    """``context.configure`` with the options every mode shares."""
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (``alembic upgrade head --sql``) without connecting."""
    url = normalise_url(_database_url())
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _set_sqlite_foreign_keys(connection: sa.Connection, *, on: bool) -> None:
    """Switch SQLite foreign keys on or off; only possible outside a transaction, so this goes
    through the driver connection (autocommit, see core.db.session) and does nothing inside one.
    """
    if connection.in_transaction():
        return
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")


def _run_on(connection: sa.Connection) -> None:
    """Run the migrations on an open connection, in one transaction."""
    is_sqlite = connection.dialect.name == "sqlite"
    if is_sqlite:
        _set_sqlite_foreign_keys(connection, on=False)
    try:
        # SQLite runs DDL in transactions well (core.db.session opens them with BEGIN
        # IMMEDIATE): one transaction for the whole upgrade, as on PostgreSQL.
        _configure(connection=connection, render_as_batch=is_sqlite, transactional_ddl=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Concurrent upgrades (several containers starting) run one after the other;
                # the next one then finds the database at head. SQLite gets the same from
                # BEGIN IMMEDIATE.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
                )
            context.run_migrations()
            if is_sqlite:
                problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise RuntimeError(f"foreign key violations after migrating: {problems}")
    finally:
        if is_sqlite:
            _set_sqlite_foreign_keys(connection, on=True)


def run_migrations_online() -> None:
    """Connect and run the migrations."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

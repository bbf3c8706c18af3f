"""Migrate test databases once per test session, then copy the result.

Running Alembic's upgrade for every test costs 0.1-0.3 s each (imports, logging set-up, DDL one
statement at a time). :func:`migrate` gives the same schema in milliseconds: the first empty
database of each backend is migrated for real with :func:`core.db.session.upgrade_database`; every
later empty one is filled from that result:

- SQLite: the migrated file is copied byte for byte;
- PostgreSQL: ``pg_dump`` of the migrated database (schema and the ``alembic_version`` row, as
  ``INSERT`` statements) is replayed in one round trip.

A database that is not empty is always migrated for real, so :func:`migrate` can stand wherever a
test fixture called ``upgrade_database`` on a fresh database. The migrations themselves keep their
own tests (tests/core/db/test_migrations.py), which call Alembic directly.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.db.session import upgrade_database

__all__ = ["migrate"]

_lock = threading.Lock()
_sqlite_template: Path | None = None
_pg_script: str | None = None


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _migrate_sqlite(url: str, path: Path) -> None:
    global _sqlite_template
    if path.exists() and path.stat().st_size > 0:
        upgrade_database(url)
        return
    with _lock:
        if _sqlite_template is None:
            folder = Path(tempfile.mkdtemp(prefix="diffall-sqlite-template-"))
            template = folder / "template.db"
            upgrade_database(f"sqlite:///{template}")
            if any(folder.glob("template.db-*")):  # a WAL left behind: not a copyable file
                upgrade_database(url)
                return
            _sqlite_template = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template, path)


def _pg_is_empty(engine: sa.Engine) -> bool:
    with engine.connect() as connection:
        count = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).scalar_one()
    return int(count) == 0


def _pg_dump(url: str) -> str:
    parsed = make_url(url)
    command = [
        "pg_dump",
        "--no-owner",
        "--no-privileges",
        "--inserts",
        "--schema=public",
        "--host",
        parsed.host or "127.0.0.1",
        "--port",
        str(parsed.port or 5432),
        "--username",
        parsed.username or "postgres",
        parsed.database or "",
    ]
    dump = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    # pg_dump recreates the schema it dumps; the test database keeps its own (empty) one, and
    # the dump empties search_path for its own session: keep it pointing at public.
    lines = [
        line
        for line in dump.splitlines()
        if not line.startswith(("CREATE SCHEMA public", "COMMENT ON SCHEMA public"))
        and "set_config('search_path'" not in line
        and not line.startswith("\\")  # psql meta-commands (\restrict ...) of newer pg_dumps
    ]
    return "\n".join(lines)


def _migrate_pg(url: str) -> None:
    global _pg_script
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        if not _pg_is_empty(engine):
            upgrade_database(url)
            return
        with _lock:
            if _pg_script is None:
                upgrade_database(url)
                _pg_script = _pg_dump(url)
                return
        with engine.begin() as connection:
            connection.exec_driver_sql(_pg_script)
    finally:
        engine.dispose()


def migrate(url: str) -> None:
    """Bring the database behind ``url`` to the head revision, as ``upgrade_database`` would.

    Parameters
    ----------
    url
        A SQLite file URL or a PostgreSQL URL of a test database.
    """
    path = _sqlite_path(url)
    if path is not None:
        _migrate_sqlite(url, path)
    elif make_url(url).get_backend_name() == "postgresql":
        _migrate_pg(url)
    else:
        upgrade_database(url)

"""Test databases: migrated once per test session, then copied or cloned.

Running Alembic's upgrade for every test costs 0.1-0.3 s each (imports, logging set-up, DDL one
statement at a time). Here each backend is migrated for real once per test process (with
:func:`core.db.session.upgrade_database`), and tests get copies of the result:

- SQLite: the migrated file is copied byte for byte for every test (:func:`migrated_sqlite_url`);
- PostgreSQL: the migrated *template database* is cloned with ``CREATE DATABASE ... TEMPLATE``
  (:func:`clone_pg_database`: module databases of the worker and end-to-end tests, measurements).
  The per-test database (:func:`fresh_pg_database`) is one clone per test process whose rows are
  deleted before each test (milliseconds); when a test left it changed (another schema:
  different relations, triggers, functions or revision) or locked, a new clone replaces it. A
  clone per test would cost as much as it saves: every ``DROP DATABASE`` forces a checkpoint of
  the whole (shared) server.

:func:`migrate` brings any database to head: a database already at head (a clone) is left as it
is, an empty one is filled from the template, anything else is migrated for real, so it can stand
wherever a test fixture called ``upgrade_database``. The migrations themselves keep their own
tests on empty databases (tests/core/db/test_migrations.py, the ``empty_database_url`` fixture),
which call Alembic directly.

PostgreSQL must be up on 127.0.0.1:5432 (trust auth, database ``test``; another admin URL with
``DIFFALL_TEST_PG_ADMIN_URL``). If it is down the tests FAIL (never skip).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.db.session import upgrade_database

__all__ = [
    "PG_ADMIN_URL",
    "cleanup",
    "clone_pg_database",
    "create_pg_database",
    "drop_pg_database",
    "drop_pg_database_later",
    "fresh_pg_database",
    "migrate",
    "migrated_sqlite_url",
    "pg_url",
    "reset_pg_schema",
]

#: The admin connection: databases are created and dropped through it.
PG_ADMIN_URL = os.environ.get(
    "DIFFALL_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_lock = threading.Lock()
_sqlite_template: Path | None = None
_sqlite_head: str | None = None
_pg_template: str | None = None  # name of this process's migrated template database
_pg_head: str | None = None


# -- PostgreSQL databases ---------------------------------------------------------------------


def pg_url(name: str) -> str:
    """The URL of database ``name`` on the admin URL's server."""
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _admin_execute(sql: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(sql)
    except sa.exc.OperationalError as exc:
        if "could not connect" in str(exc.orig) or "Connection refused" in str(exc.orig):
            pytest.fail(
                f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.orig}); start it with "
                "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
                pytrace=False,
            )
        raise
    finally:
        admin.dispose()


def create_pg_database(prefix: str = "diffall_test", *, template: str | None = None) -> str:
    """Create a new database (empty, or a copy of ``template``) and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    _admin_execute(f'CREATE DATABASE "{name}"{clause}')
    return pg_url(name)


def drop_pg_database(url: str) -> None:
    """Drop the database of ``url`` now (its open connections are ended)."""
    name = make_url(url).database
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Dropper:
    """Drops databases on a background thread; :meth:`join` waits for all of them."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def drop(self, url: str) -> None:
        with _lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="db-dropper", daemon=True)
                self._thread.start()
        self._queue.put(url)

    def _run(self) -> None:
        while (url := self._queue.get()) is not None:
            with contextlib.suppress(BaseException):  # a leftover database fails no test
                drop_pg_database(url)
            self._queue.task_done()
        self._queue.task_done()

    def join(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()


_dropper = _Dropper()


def drop_pg_database_later(url: str) -> None:
    """Drop the database of ``url`` on the background thread (before the process ends)."""
    _dropper.drop(url)


def _pg_template_name() -> str:
    """This process's migrated template database (created and migrated on first use)."""
    global _pg_template, _pg_head
    with _lock:
        if _pg_template is None:
            url = create_pg_database("diffall_template")
            upgrade_database(url)
            _pg_head = _pg_version(url)
            name = make_url(url).database
            assert name is not None
            _pg_template = name
            atexit.register(cleanup)
        return _pg_template


def cleanup() -> None:
    """Drop what this process made: the per-test clone, pending drops, the template.

    Called at the end of the test session (``pytest_sessionfinish`` in tests/conftest.py; an
    xdist worker may end without running ``atexit`` handlers), and at exit as a fallback.
    """
    global _pg_work, _pg_template, _pg_fingerprint, _sqlite_template
    with _lock:
        work, template = _pg_work, _pg_template
        _pg_work = _pg_template = _pg_fingerprint = None
        if _sqlite_template is not None:
            shutil.rmtree(_sqlite_template.parent, ignore_errors=True)
            _sqlite_template = None
    if work is not None:
        drop_pg_database_later(work)
    _dropper.join()
    if template is not None:
        with contextlib.suppress(BaseException):  # at the end, nothing left to report to
            drop_pg_database(pg_url(template))


def clone_pg_database(prefix: str = "diffall_test") -> str:
    """A new PostgreSQL database at the head revision, cloned from the migrated template.

    The caller drops it (:func:`drop_pg_database` or :func:`drop_pg_database_later`).
    """
    return create_pg_database(prefix, template=_pg_template_name())


_pg_work: str | None = None  # this process's per-test database (a clone), when made
_pg_fingerprint: tuple[object, ...] | None = None  # the template's schema, as _fingerprint


def _fingerprint(connection: sa.Connection) -> tuple[object, ...]:
    """What a test could change of a schema: relations, functions, triggers, the revision."""
    relations = connection.exec_driver_sql(
        "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1, 2"
    ).all()
    functions = connection.exec_driver_sql(
        "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
    ).scalar_one()
    triggers = connection.exec_driver_sql(
        "SELECT count(*) FROM pg_catalog.pg_trigger WHERE NOT tgisinternal"
    ).scalar_one()
    version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return (tuple(map(tuple, relations)), functions, triggers, tuple(map(tuple, version)))


def _template_fingerprint() -> tuple[object, ...]:
    global _pg_fingerprint
    template = _pg_template_name()
    if _pg_fingerprint is None:
        engine = sa.create_engine(pg_url(template), poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                _pg_fingerprint = _fingerprint(connection)
        finally:
            engine.dispose()
    return _pg_fingerprint


def _emptied(url: str) -> bool:
    """Delete every row of ``url`` (one transaction) if its schema is still the template's.

    False (nothing done) when the schema differs, or a lock or error got in the way.
    """
    expected = _template_fingerprint()
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            connection.exec_driver_sql("SET LOCAL statement_timeout = '20s'")
            if _fingerprint(connection) != expected:
                return False
            tables = [
                name
                for name, kind in expected[0]  # type: ignore[misc]
                if kind in ("r", "p") and name != "alembic_version"
            ]
            # DELETE with the foreign-key triggers off (any order) takes milliseconds where
            # TRUNCATE, making new files for every table and index, takes tenths of a second.
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            for name in tables:
                connection.exec_driver_sql(f'DELETE FROM "{name}"')
            for name, kind in expected[0]:  # type: ignore[misc]
                if kind == "S":
                    connection.exec_driver_sql(f'ALTER SEQUENCE "{name}" RESTART')
        return True
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def fresh_pg_database() -> str:
    """A PostgreSQL database at the head revision with no rows, for one test.

    The same database (this process's clone of the template) comes back emptied for the next
    test; a changed or locked one is replaced by a new clone (the old one dropped in the
    background). Dropped when the process ends.
    """
    global _pg_work
    with _lock:
        work = _pg_work
    if work is not None and _emptied(work):
        return work
    if work is not None:
        drop_pg_database_later(work)
    url = clone_pg_database("diffall_clone")
    with _lock:
        _pg_work = url
    return url


def reset_pg_schema(url: str) -> None:
    """Drop everything in the ``public`` schema of ``url`` (tables, alembic_version)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


def _pg_version(url: str) -> str | None:
    """The ``alembic_version`` of ``url``; "" for an empty database; None otherwise."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            tables = connection.exec_driver_sql(
                "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            ).scalars()
            if not set(tables):
                return ""
            if connection.exec_driver_sql("SELECT to_regclass('public.alembic_version')").scalar():
                rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
                return str(rows[0][0]) if len(rows) == 1 else None
            return None
    finally:
        engine.dispose()


def _pg_fill_from_template(url: str) -> None:
    """Make the empty database of ``url`` a clone of the template (drop, then clone by name)."""
    name = make_url(url).database
    template = _pg_template_name()
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


# -- SQLite files -----------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _sqlite_version(path: Path) -> str | None:
    """The ``alembic_version`` of the file; "" when it is missing or empty; None otherwise."""
    if not path.exists() or path.stat().st_size == 0:
        return ""
    connection = sqlite3.connect(path)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if not tables:
            return ""
        if "alembic_version" not in tables:
            return None
        rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None
    finally:
        connection.close()


def _sqlite_template_path() -> Path | None:
    """The migrated template file (made on first use); None if it cannot be copied."""
    global _sqlite_template, _sqlite_head
    with _lock:
        if _sqlite_template is None:
            folder = Path(tempfile.mkdtemp(prefix="diffall-sqlite-template-"))
            template = folder / "template.db"
            upgrade_database(f"sqlite:///{template}")
            if any(folder.glob("template.db-*")):  # a WAL left behind: not a copyable file
                return None
            _sqlite_head = _sqlite_version(template)
            _sqlite_template = template
        return _sqlite_template


def migrated_sqlite_url(path: Path) -> str:
    """Copy the migrated template to ``path`` (parents created) and return its URL."""
    url = f"sqlite:///{path}"
    template = _sqlite_template_path()
    if template is None:
        upgrade_database(url)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
    return url


# -- bring to head ----------------------------------------------------------------------------


def migrate(url: str) -> None:
    """Bring the database behind ``url`` to the head revision, as ``upgrade_database`` would.

    A database already at head is left alone; an empty one becomes a copy of the migrated
    template; any other is migrated for real.

    Parameters
    ----------
    url
        A SQLite file URL or a PostgreSQL URL of a test database.
    """
    path = _sqlite_path(url)
    if path is not None:
        version = _sqlite_version(path)
        if version == "" and _sqlite_template_path() is not None:
            migrated_sqlite_url(path)
        elif version is None or version != _sqlite_head:
            upgrade_database(url)
    elif make_url(url).get_backend_name() == "postgresql":
        version = _pg_version(url)
        _pg_template_name()  # the head revision is known from here on
        if version == "":
            _pg_fill_from_template(url)
        elif version is None or version != _pg_head:
            upgrade_database(url)
    else:
        upgrade_database(url)

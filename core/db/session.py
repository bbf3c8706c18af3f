"""Engines, session factories and schema upgrades.

Schema changes come only from Alembic (:func:`upgrade_database`), never from
``metadata.create_all``.

SQLite (the embedded default) is configured for several processes sharing one file (API, worker,
sweeper): WAL journal, a busy timeout, foreign keys enforced, and every transaction opened with
``BEGIN IMMEDIATE``. The last point makes SQLite transactions fully serialised: a transaction
that reads and then writes can never fail half-way with "database is locked" (it waits for the
write lock up front, for at most the busy timeout), and the row-locking patterns written for
PostgreSQL (``SELECT ... FOR UPDATE``, which SQLite ignores) stay correct. Keep transactions
short: on SQLite even a read-only one holds the write lock until it ends.

Each engine carries the key ring that encrypts webhook signing secrets at rest
(:mod:`core.db.secretbox`): the one given to :func:`make_engine`, or by default the settings'
``webhooks.secret_keys``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings
from core.db.secretbox import SecretBox, attach_secret_box

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "ALEMBIC_INI",
    "MIGRATIONS_DIR",
    "SQLITE_BUSY_TIMEOUT_MS",
    "alembic_config",
    "dispose_engine",
    "get_engine",
    "get_sessionmaker",
    "make_engine",
    "make_session_factory",
    "normalise_url",
    "upgrade_database",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: The Alembic environment and revisions (``migrations/`` next to the ``core`` package).
MIGRATIONS_DIR = _REPO_ROOT / "migrations"
#: The Alembic configuration used by the ``alembic`` command line.
ALEMBIC_INI = _REPO_ROOT / "alembic.ini"

#: How long a SQLite connection waits for a lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: PostgreSQL pool: connections kept open per process, and extra ones allowed under load.
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 10
#: PostgreSQL pool: seconds after which a pooled connection is replaced.
PG_POOL_RECYCLE_S = 1800

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def normalise_url(url: str | URL) -> URL:
    """Parse a database URL and pick our drivers.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (psycopg 3 is the
    driver installed; SQLAlchemy's default would be psycopg2). Other URLs are unchanged.

    Parameters
    ----------
    url
        A SQLAlchemy database URL.

    Returns
    -------
    URL
        The parsed URL.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory and ``file:`` URIs."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return Path(database)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Configure a new SQLite connection (runs once per DBAPI connection)."""
    # Let SQLAlchemy's "begin" hook issue BEGIN itself instead of pysqlite's implicit one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable with WAL except on power loss
    finally:
        cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    """Open every SQLite transaction with the write lock (see the module docstring)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    secret_keys: Sequence[str | bytes | SecretStr] | None = None,
) -> Engine:
    """Create an engine configured for the database behind ``url``.

    SQLite: WAL journal, ``busy_timeout`` (:data:`SQLITE_BUSY_TIMEOUT_MS`), ``foreign_keys=ON``,
    ``BEGIN IMMEDIATE`` transactions, ``check_same_thread=False``; the parent directory of a
    database file is created. PostgreSQL (psycopg 3): ``pool_pre_ping``, a pool of
    :data:`PG_POOL_SIZE` + :data:`PG_MAX_OVERFLOW` connections recycled after
    :data:`PG_POOL_RECYCLE_S` seconds.

    Parameters
    ----------
    url
        SQLAlchemy database URL (``postgresql://`` is served by psycopg 3).
    echo
        Log every SQL statement (debugging).
    secret_keys
        The key ring encrypting secrets at rest through this engine (:mod:`core.db.secretbox`):
        Fernet keys, the encrypting one first; ``()`` stores clear text. None (the default) uses
        the settings' ``webhooks.secret_keys`` of the process, read when a secret is first
        written or read. Pass ``settings.webhooks.secret_keys`` when the engine is built from a
        settings object other than :func:`core.config.get_settings`'s.

    Returns
    -------
    Engine
        A new engine; the caller disposes it.

    Raises
    ------
    ValueError
        When a key of ``secret_keys`` is not a Fernet key.
    """
    box = None if secret_keys is None else SecretBox(secret_keys)
    engine = _create_engine(url, echo=echo)
    if box is not None:
        attach_secret_box(engine, box)
    return engine


def _private_file(path: Path) -> None:
    """Create the SQLite file's folder (0700 when new) and the file itself with mode 0600 when
    missing, before SQLite opens it (its journal and WAL files take the file's mode)."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    os.chmod(path, 0o600)  # whatever the umask


def _create_engine(url: str | URL, *, echo: bool) -> Engine:
    """The engine of :func:`make_engine`, before its key ring is attached."""
    parsed = normalise_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database_file = _sqlite_file(parsed)
        if database_file is not None:
            _private_file(database_file)
        engine = sa.create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        return sa.create_engine(
            parsed,
            echo=echo,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_recycle=PG_POOL_RECYCLE_S,
            connect_args={"application_name": "diffall", "connect_timeout": 10},
        )
    return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Create the session factory for ``engine``.

    Sessions keep loaded attributes after commit (``expire_on_commit=False``), so objects can be
    returned from a service after its transaction ended.

    Parameters
    ----------
    engine
        The engine sessions connect through.

    Returns
    -------
    sessionmaker
        Call it (or ``.begin()``) to open a session.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def _configured_url() -> str:
    """The database URL from the settings."""
    return get_settings().database_url_resolved


def get_engine(url: str | None = None) -> Engine:
    """Return this process's engine for ``url`` (default: the configured database), cached.

    Parameters
    ----------
    url
        Database URL; None means ``get_settings().database_url_resolved``.

    Returns
    -------
    Engine
        The same engine for the same URL until :func:`dispose_engine`.
    """
    key = url if url is not None else _configured_url()
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Return this process's session factory for ``url`` (default: the configured database).

    Parameters
    ----------
    url
        Database URL; None means ``get_settings().database_url_resolved``.

    Returns
    -------
    sessionmaker
        Bound to :func:`get_engine` for the same URL; cached alongside it.
    """
    key = url if url is not None else _configured_url()
    engine = get_engine(key)
    with _lock:
        factory = _sessionmakers.get(key)
        if factory is None or factory.kw.get("bind") is not engine:
            factory = _sessionmakers[key] = make_session_factory(engine)
        return factory


def dispose_engine(*, close: bool = True) -> None:
    """Forget every cached engine and session factory of this process.

    Parameters
    ----------
    close
        True (shutdown, tests): close the pooled connections. In a child process right after
        ``fork`` (Celery's ``worker_process_init``) pass False: the pooled connections belong to
        the parent and must be dropped without being closed.
    """
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
        _sessionmakers.clear()
    for engine in engines:
        engine.dispose(close=close)


def alembic_config(url: str) -> Config:
    """Alembic configuration for ``url`` that works from any working directory.

    The scripts' location is set in code (:data:`MIGRATIONS_DIR`), the URL is passed as the
    ``database_url`` attribute (no ini interpolation of ``%`` in passwords), and ``env.py`` does
    not reconfigure logging.

    Parameters
    ----------
    url
        Database URL to migrate.

    Returns
    -------
    alembic.config.Config
        Use with ``alembic.command`` (``upgrade``, ``downgrade``, ``check``, ...).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(url: str, *, revision: str = "head") -> None:
    """Run Alembic's upgrade (to ``head`` by default) on the database behind ``url``.

    Idempotent: an up-to-date database is left as it is. A SQLite file and its directory are
    created when missing. Called by ``diffall db upgrade`` and by the embedded default; never
    run implicitly on every boot of the API or the workers.

    Parameters
    ----------
    url
        Database URL.
    revision
        Target revision (default ``head``).
    """
    from alembic import command

    command.upgrade(alembic_config(url), revision)

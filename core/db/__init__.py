"""Database layer: SQLAlchemy 2 models (:mod:`core.db.models`) and engines and sessions
(:mod:`core.db.session`). The schema comes only from the Alembic migrations in ``migrations/``.
"""

from core.db.models import Base
from core.db.session import (
    dispose_engine,
    get_engine,
    get_sessionmaker,
    make_engine,
    make_session_factory,
    upgrade_database,
)

__all__ = [
    "Base",
    "dispose_engine",
    "get_engine",
    "get_sessionmaker",
    "make_engine",
    "make_session_factory",
    "upgrade_database",
]

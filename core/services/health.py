"""Readiness checks of the dependencies (database, broker, storage)."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.services.jobqueue import JobQueue
from core.storage import ObjectStore

__all__ = ["readiness"]

#: Longest error text reported per dependency, in characters.
_MAX_ERROR = 200


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"error: {text[:_MAX_ERROR]}"


def readiness(session: Session, store: ObjectStore, queue: JobQueue) -> dict[str, str]:
    """Check each dependency; returns {"database": "ok" | "error: ...", "broker": ...,
    "storage": ...}.

    Never raises for a failing dependency. Each check is one cheap round trip: ``SELECT 1``
    (its transaction is ended after it), ``ObjectStore.check()`` and ``JobQueue.ping()``.
    The caller is ready when every value is ``"ok"``.
    """
    status: dict[str, str] = {}
    try:
        session.execute(sa.text("SELECT 1")).scalar_one()
        session.commit()  # ends the transaction without expiring the caller's objects
        status["database"] = "ok"
    except Exception as exc:
        status["database"] = _error(exc)
        with contextlib.suppress(Exception):  # the connection may already be gone
            session.rollback()
    try:
        queue.ping()
        status["broker"] = "ok"
    except Exception as exc:
        status["broker"] = _error(exc)
    try:
        store.check()
        status["storage"] = "ok"
    except Exception as exc:
        status["storage"] = _error(exc)
    return status

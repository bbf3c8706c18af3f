"""The worker's heartbeat: a thread that keeps a running job's lease while the job runs.

A job's lease (``comparisons.lease_expires_at``) is short (``worker.lease_s``, 10 s by
default) and renewed every ``worker.heartbeat_interval_s`` by a thread of the process running
the job. When that process dies, nobody renews it and the sweeper takes the job back within
seconds, instead of waiting for a lease as long as the hard time limit.
"""

from __future__ import annotations

import threading
from types import TracebackType

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from core.services import lifecycle
from core.services.lifecycle import Claim

__all__ = ["Heartbeat"]

log = structlog.get_logger(__name__)


class Heartbeat:
    """Renew ``held``'s lease to ``lease_s`` seconds every ``interval_s`` seconds while the
    ``with`` block runs (a daemon thread; each renewal is one short fenced transaction).

    The thread stops when the block ends or when the attempt no longer holds (superseded,
    canceled). A renewal that fails because the database is away is logged and tried again
    at the next beat.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        held: Claim,
        *,
        lease_s: float,
        interval_s: float,
    ) -> None:
        if not 0 < interval_s < lease_s:
            raise ValueError(f"interval_s ({interval_s}) must be in (0, lease_s = {lease_s})")
        self._sessions = sessions
        self._held = held
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{held.comparison_id}", daemon=True
        )
        self.renewals = 0
        """Renewals written so far."""

    def _run(self) -> None:
        bound = log.bind(comparison_id=str(self._held.comparison_id), attempt=self._held.attempt)
        while not self._stop.wait(self._interval_s):
            try:
                with self._sessions.begin() as session:
                    held = lifecycle.renew(session, self._held, lease_s=self._lease_s)
            except sa.exc.SQLAlchemyError as exc:
                bound.warning("comparison.heartbeat_failed", error=type(exc).__name__)
                continue
            if not held:
                bound.info("comparison.heartbeat_stopped")
                return
            self.renewals += 1

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self._lease_s)

"""Recovery in seconds and no false crashes (issue 11): the heartbeat keeps a running job's short
lease, the sweeper takes a job back only once its lease stayed expired, and a final write whose
PostgreSQL session is killed (``pg_terminate_backend``) is retried and never counted as a crash.

Real databases (SQLite and PostgreSQL); the database faults are real killed sessions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import ComparisonQueue, ComparisonState, Tenant, utcnow
from core.services import lifecycle, runs
from core.services.errors import ClaimNotReleased
from core.services.heartbeat import Heartbeat
from core.services.lifecycle import Claim
from core.services.runs import RunPolicy
from core.storage import LocalObjectStore
from tests.support.comparisons import add_comparison, comparison_row
from tests.support.databases import PG_ADMIN_URL
from tests.support.tenants import make_tenant

SessionFactory = sessionmaker[Session]


def _queued(sessions: SessionFactory, store: LocalObjectStore, tenant: Tenant) -> uuid.UUID:
    return add_comparison(sessions, store, tenant, state=ComparisonState.QUEUED)


def _claim(sessions: SessionFactory, cid: uuid.UUID, lease_s: float) -> Claim:
    with sessions.begin() as session:
        held, _ = lifecycle.claim(session, cid, max_crashes=3, lease_s=lease_s, redelivered=None)
    assert held is not None
    return held


def _recover(sessions: SessionFactory, confirm_s: float) -> lifecycle.Recovered:
    with sessions.begin() as session:
        return lifecycle.recover_crashed(
            session, stale_running_after_s=600, max_crashes=3, limit=100, confirm_s=confirm_s
        )


def test_a_heartbeat_keeps_the_lease_and_a_silent_worker_loses_the_job(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    cid = _queued(sessions, local_store, tenant)
    held = _claim(sessions, cid, lease_s=0.6)
    with Heartbeat(sessions, held, lease_s=0.6, interval_s=0.1) as beat:
        time.sleep(1.5)  # 2.5 leases: without the heartbeat the lease would be gone
        assert _recover(sessions, confirm_s=0.3) == lifecycle.Recovered()
        row = comparison_row(sessions, cid)
        assert row.lease_expires_at is not None and row.lease_expires_at > utcnow()
    assert beat.renewals >= 5
    # The worker stops renewing (it died): the first pass after the lease only marks it ...
    time.sleep(0.7)
    assert _recover(sessions, confirm_s=0.3) == lifecycle.Recovered()
    marked = comparison_row(sessions, cid)
    assert marked.state is ComparisonState.RUNNING and marked.lease_lost_at is not None
    assert marked.crash_count == 0
    # ... a live worker's renewal (after a database outage, say) clears the mark: no crash ...
    with sessions.begin() as session:
        assert lifecycle.renew(session, held, lease_s=0.2)
    assert comparison_row(sessions, cid).lease_lost_at is None
    time.sleep(0.3)
    assert _recover(sessions, confirm_s=0.3).to_send == {}
    # ... and one still expired after the confirmation period is a crash: queued again.
    time.sleep(0.35)
    recovered = _recover(sessions, confirm_s=0.3)
    assert recovered.to_send == {ComparisonQueue.INTERACTIVE: [cid]}
    row = comparison_row(sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.QUEUED, 1, 1)
    assert row.lease_lost_at is None and row.lease_expires_at is None
    # The old worker's heartbeat now finds its attempt gone and stops.
    with sessions.begin() as session:
        assert not lifecycle.renew(session, held, lease_s=0.6)


class _SessionKiller:
    """Terminates the PostgreSQL backend of the connection about to run an ``UPDATE`` of
    ``comparisons`` that moves a job out of ``running`` (the final write, the give-back), with
    ``pg_terminate_backend`` from another connection, up to ``times`` times."""

    #: The states a worker's final write or give-back writes.
    STATES = frozenset({"succeeded", "failed", "queued"})

    def __init__(self, times: int) -> None:
        self.times = times
        self.kills = 0
        self.admin = sa.create_engine(
            PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )

    def __call__(
        self, conn: sa.Connection, cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> None:
        if self.kills >= self.times:
            return
        if not statement.lstrip().upper().startswith("UPDATE COMPARISONS"):
            return
        values = parameters.values() if isinstance(parameters, dict) else parameters or ()
        if not self.STATES.intersection(str(value) for value in values):
            return
        pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with self.admin.connect() as admin:
            # Wait (up to 5 s) until the backend is gone: the statement meets a dead session.
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        self.kills += 1


@pytest.fixture
def killer(pg_sessions: SessionFactory) -> Iterator[_SessionKiller]:
    engine = pg_sessions.kw["bind"]
    killer = _SessionKiller(times=0)
    sa.event.listen(engine, "before_cursor_execute", killer)
    try:
        yield killer
    finally:
        sa.event.remove(engine, "before_cursor_execute", killer)
        killer.admin.dispose()


def test_a_final_write_on_a_killed_session_is_retried_and_not_a_crash(
    pg_sessions: SessionFactory, local_store: LocalObjectStore, killer: _SessionKiller
) -> None:
    tenant = make_tenant(pg_sessions)
    cid = _queued(pg_sessions, local_store, tenant)
    killer.times = 2  # the final write's session dies twice; the third try writes
    runs.run_comparison(
        pg_sessions,
        local_store,
        comparison_id=cid,
        max_crashes=3,
        policy=RunPolicy(lease_s=30, final_write_retry_s=20),
    )
    assert killer.kills == 2
    row = comparison_row(pg_sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.SUCCEEDED, 1, 0)
    assert row.result is not None


def test_a_job_the_database_kept_is_resumed_without_a_crash(
    pg_sessions: SessionFactory, local_store: LocalObjectStore, killer: _SessionKiller
) -> None:
    tenant = make_tenant(pg_sessions)
    cid = _queued(pg_sessions, local_store, tenant)
    killer.times = 10**6  # the database stays away for every write of the job's row
    with pytest.raises(ClaimNotReleased) as raised:
        runs.run_comparison(
            pg_sessions,
            local_store,
            comparison_id=cid,
            max_crashes=3,
            redelivered=False,
            policy=RunPolicy(lease_s=30, final_write_retry_s=0.5),
        )
    assert raised.value.attempt == 1 and killer.kills >= 2  # the final write and the give-back
    row = comparison_row(pg_sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.RUNNING, 1, 0)
    killer.times = 0  # the database is back
    # A plain redelivery would be a duplicate of a job whose lease holds: nothing runs ...
    runs.run_comparison(
        pg_sessions, local_store, comparison_id=cid, max_crashes=3, redelivered=False
    )
    assert comparison_row(pg_sessions, cid).state is ComparisonState.RUNNING
    # ... the task's retry resumes its own attempt: no crash, no extra attempt.
    runs.run_comparison(
        pg_sessions,
        local_store,
        comparison_id=cid,
        max_crashes=3,
        redelivered=False,
        resume_attempt=raised.value.attempt,
    )
    row = comparison_row(pg_sessions, cid)
    assert (row.state, row.attempt, row.crash_count) == (ComparisonState.SUCCEEDED, 1, 0)

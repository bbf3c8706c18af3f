"""Readiness: each dependency checked, failures reported, never raised."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.session import make_engine, make_session_factory
from core.services.health import readiness
from core.services.jobqueue import CeleryJobQueue
from core.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.s3server import free_port

SessionFactory = sessionmaker[Session]


def test_all_ready(sessions: SessionFactory, store: ObjectStore, queue: CeleryJobQueue) -> None:
    with sessions() as session:
        assert readiness(session, store, queue) == {
            "database": "ok",
            "broker": "ok",
            "storage": "ok",
        }


def test_each_outage_is_reported(
    tmp_path: Path, dead_s3_store: S3ObjectStore, dead_queue: CeleryJobQueue
) -> None:
    engine = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    )
    try:
        with make_session_factory(engine)() as session:
            status = readiness(session, dead_s3_store, dead_queue)
    finally:
        engine.dispose()
    assert set(status) == {"database", "broker", "storage"}
    assert all(value.startswith("error: ") for value in status.values()), status


def test_a_working_store_next_to_a_dead_broker(
    sessions: SessionFactory, tmp_path: Path, dead_queue: CeleryJobQueue
) -> None:
    with sessions() as session:
        status = readiness(session, LocalObjectStore(tmp_path / "s"), dead_queue)
        assert session.execute(sa.text("SELECT 1")).scalar_one() == 1  # session still usable
    assert status["database"] == "ok" and status["storage"] == "ok"
    assert status["broker"].startswith("error: ")

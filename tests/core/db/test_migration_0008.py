"""Migration 0008 (the ``big`` queue) on SQLite and PostgreSQL: before it ``big`` is refused,
after it ``big`` is stored and an unknown queue is still refused, existing rows survive, and the
downgrade moves big rows back to their former queue."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from alembic import command

from core.db.models import utcnow
from core.db.session import alembic_config, make_engine
from tests.support.migrations import insert_tenant_and_image


def _tenant_and_image(engine: sa.Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as connection:
        return insert_tenant_and_image(connection, created_at=utcnow(), width=5000, height=5000)


def _insert(engine: sa.Engine, tenant: uuid.UUID, image: uuid.UUID, queue: str) -> uuid.UUID:
    # Plain SQL: the models' enum would refuse an unknown value before the database does.
    comparison = uuid.uuid4()
    ident = (lambda u: u.hex) if engine.dialect.name == "sqlite" else (lambda u: u)
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO comparisons (id, tenant_id, image_a_id, image_b_id, options, queue, "
                "state, attempt, crash_count, created_at, updated_at) VALUES (:id, :t, :i, :i, "
                "'{}', :q, 'queued', 0, 0, :now, :now)"
            ),
            {
                "id": ident(comparison),
                "t": ident(tenant),
                "i": ident(image),
                "q": queue,
                "now": now,
            },
        )
    return comparison


def _queues(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(sa.text("SELECT queue FROM comparisons")).scalars())


def test_0008_allows_the_big_queue_and_downgrades(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0007")
    engine = make_engine(empty_database_url)
    try:
        tenant, image = _tenant_and_image(engine)
        _insert(engine, tenant, image, "interactive")
        with pytest.raises(sa.exc.IntegrityError):
            _insert(engine, tenant, image, "big")

        command.upgrade(config, "0008")
        _insert(engine, tenant, image, "big")
        with pytest.raises(sa.exc.IntegrityError):
            _insert(engine, tenant, image, "huge")
        assert _queues(engine) == ["big", "interactive"]

        command.downgrade(config, "0007")
        assert _queues(engine) == ["interactive", "interactive"]
        with pytest.raises(sa.exc.IntegrityError):
            _insert(engine, tenant, image, "big")
    finally:
        engine.dispose()

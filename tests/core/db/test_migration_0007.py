"""Migration 0007 (``ix_comparisons_batch_created``) on SQLite and PostgreSQL: it upgrades a
database holding data, the listing of an old batch uses it (PostgreSQL's planner), and it
downgrades cleanly."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from alembic import command

from core.db.models import Base, utcnow
from core.db.session import alembic_config, make_engine
from tests.support.migrations import insert_tenant_and_image

INDEX = "ix_comparisons_batch_created"
BATCHES, PER_BATCH = 4, 500


def _indexes(engine: sa.Engine) -> dict[str, list[str | None]]:
    return {i["name"]: i["column_names"] for i in sa.inspect(engine).get_indexes("comparisons")}


def _fill(engine: sa.Engine) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """A tenant, one image, and BATCHES batches of PER_BATCH comparisons (the first oldest)."""
    # The models' tables: 0007 changes no column, so they insert into a 0006 schema as well.
    batches, comparisons = (Base.metadata.tables[name] for name in ("batches", "comparisons"))
    batch_ids = [uuid.uuid4() for _ in range(BATCHES)]
    start = utcnow() - timedelta(days=1)
    with engine.begin() as connection:
        tenant, image = insert_tenant_and_image(connection, created_at=start)
        for n, batch in enumerate(batch_ids):
            created = start + timedelta(hours=n)
            connection.execute(
                sa.insert(batches),
                [{"id": batch, "tenant_id": tenant, "total": PER_BATCH, "created_at": created}],
            )
            connection.execute(
                sa.insert(comparisons),
                [
                    {
                        "id": uuid.uuid4(),
                        "tenant_id": tenant,
                        "batch_id": batch,
                        "image_a_id": image,
                        "image_b_id": image,
                        "options": {},
                        "queue": "batch",
                        "state": "queued",
                        "attempt": 0,
                        "crash_count": 0,
                        "created_at": created + timedelta(seconds=i),
                        "updated_at": created + timedelta(seconds=i),
                    }
                    for i in range(PER_BATCH)
                ],
            )
    return tenant, image, batch_ids


def test_0007_upgrades_with_data_serves_the_listing_and_downgrades(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0006")
    engine = make_engine(empty_database_url)
    try:
        assert INDEX not in _indexes(engine)
        tenant, _image, batch_ids = _fill(engine)

        command.upgrade(config, "0007")
        assert _indexes(engine)[INDEX] == ["batch_id", "created_at", "id"]
        listing = sa.text(
            "SELECT id FROM comparisons WHERE tenant_id = :t AND batch_id = :b "
            "ORDER BY created_at DESC, id DESC LIMIT 51"
        )
        with engine.connect() as connection:
            params = {"t": tenant, "b": batch_ids[0]}
            if engine.dialect.name == "sqlite":
                params = {"t": tenant.hex, "b": batch_ids[0].hex}  # CHAR(32) ids
            assert len(connection.execute(listing, params).all()) == 51
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("ANALYZE comparisons")
                plan = "\n".join(
                    row[0] for row in connection.execute(sa.text(f"EXPLAIN {listing}"), params)
                )
                # The oldest batch: the tenant-wide index would skip 1,500 newer rows first.
                assert INDEX in plan, plan
            else:
                plan = "\n".join(
                    str(row[-1])
                    for row in connection.execute(sa.text(f"EXPLAIN QUERY PLAN {listing}"), params)
                )
                assert INDEX in plan, plan

        command.downgrade(config, "0006")
        assert INDEX not in _indexes(engine)
        with engine.connect() as connection:
            total = connection.execute(sa.text("SELECT count(*) FROM comparisons")).scalar_one()
        assert total == BATCHES * PER_BATCH
    finally:
        engine.dispose()

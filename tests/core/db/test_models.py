"""Models on a migrated database (SQLite and PostgreSQL): round trips and constraints."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings
from core.db import session as db_session
from core.db.models import (
    ApiKey,
    Base,
    Batch,
    Comparison,
    ComparisonQueue,
    ComparisonState,
    IdempotencyKey,
    IdempotencyState,
    Image,
    ImageStatus,
    Tenant,
)

SessionFactory = sessionmaker[Session]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _tenant(session: Session, name: str = "acme") -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def _image(session: Session, tenant: Tenant, content: str = "a") -> Image:
    digest = _sha(content)
    image = Image(
        tenant_id=tenant.id,
        status=ImageStatus.READY,
        sha256=digest,
        storage_key=f"images/{digest}",
        size_bytes=1234,
        format="PNG",
        width=640,
        height=480,
    )
    session.add(image)
    session.flush()
    return image


def _comparison(session: Session, tenant: Tenant, a: Image, b: Image, **kw: object) -> Comparison:
    comparison = Comparison(tenant_id=tenant.id, image_a_id=a.id, image_b_id=b.id, **kw)
    session.add(comparison)
    session.flush()
    return comparison


def test_round_trip_json_uuid_enums_and_aware_datetimes(session_factory: SessionFactory) -> None:
    options = {"mode": "strict", "ignore": [[0, 0, 10, 20]], "tolerance": 2.5, "flag": None}
    metadata = {"ref": "build-42", "nested": {"ok": True, "list": [1, "two", 3.0]}, "ünï": "çødé"}
    result = {"ssim": 0.987654321, "psnr": None, "regions": [{"x": 1, "y": 2, "w": 3, "h": 4}]}
    lease = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a, b = _image(session, tenant, "a"), _image(session, tenant, "b")
        batch = Batch(tenant_id=tenant.id, client_metadata={"run": 7}, total=1)
        session.add(batch)
        session.flush()
        comparison = _comparison(
            session,
            tenant,
            a,
            b,
            batch_id=batch.id,
            options=options,
            client_metadata=metadata,
            result=result,
            queue=ComparisonQueue.BATCH,
            lease_expires_at=lease,
        )
        comparison_id = comparison.id

    with session_factory() as session:
        loaded = session.get_one(Comparison, comparison_id)
        assert isinstance(loaded.id, uuid.UUID) and loaded.id == comparison_id
        assert loaded.batch_id == batch.id
        assert loaded.options == options
        assert loaded.client_metadata == metadata
        assert loaded.result == result
        assert loaded.state is ComparisonState.QUEUED
        assert loaded.queue is ComparisonQueue.BATCH
        assert (loaded.attempt, loaded.crash_count) == (0, 0)
        assert loaded.error_code is None and loaded.heatmap_key is None
        # Aware UTC datetimes come back on both databases, the same instant as written.
        assert loaded.lease_expires_at == lease
        assert loaded.lease_expires_at is not None
        assert loaded.lease_expires_at.utcoffset() == timedelta(0)
        assert loaded.created_at.tzinfo is not None
        assert abs(loaded.created_at - datetime.now(UTC)) < timedelta(minutes=5)
        # The attribute client_metadata is stored in the column "metadata".
        raw = session.execute(
            sa.select(Comparison.__table__.c.metadata).where(Comparison.id == comparison_id)
        ).scalar_one()
        assert raw == metadata


def test_none_is_sql_null_in_json_columns(session_factory: SessionFactory) -> None:
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        comparison_id = _comparison(session, tenant, a, a, result=None).id
    with session_factory() as session:
        null_count = session.execute(
            sa.select(sa.func.count())
            .select_from(Comparison)
            .where(Comparison.id == comparison_id, Comparison.result.is_(None))
        ).scalar_one()
        assert null_count == 1


def test_datetime_order_in_sql_follows_time_across_offsets(
    session_factory: SessionFactory,
) -> None:
    # 10:00+05:00 is 05:00 UTC, earlier than 06:00 UTC: SQLite must not compare wall clocks.
    early = datetime(2030, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=5)))
    late = datetime(2030, 1, 1, 6, 0, tzinfo=UTC)
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        first = _comparison(session, tenant, a, a, lease_expires_at=early).id
        _comparison(session, tenant, a, a, lease_expires_at=late)
    with session_factory() as session:
        cutoff = datetime(2030, 1, 1, 5, 30, tzinfo=UTC)
        expired = session.scalars(
            sa.select(Comparison.id).where(Comparison.lease_expires_at < cutoff)
        ).all()
        assert expired == [first]


def test_naive_datetime_is_refused(session_factory: SessionFactory) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), session_factory() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        _comparison(session, tenant, a, a, lease_expires_at=datetime(2030, 1, 1))


def test_updated_at_moves_on_update(session_factory: SessionFactory) -> None:
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        comparison = _comparison(session, tenant, a, a)
        before = comparison.updated_at
    with session_factory.begin() as session:
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == comparison.id)
            .values(state=ComparisonState.RUNNING, attempt=Comparison.attempt + 1)
        )
    with session_factory() as session:
        loaded = session.get_one(Comparison, comparison.id)
        assert loaded.state is ComparisonState.RUNNING and loaded.attempt == 1
        assert loaded.updated_at >= before


@pytest.mark.parametrize(
    ("table", "column", "bad_value"),
    [
        ("comparisons", "state", "exploded"),
        ("comparisons", "queue", "urgent"),
        ("comparisons", "attempt", -1),
        ("images", "status", "broken"),
    ],
)
def test_check_constraints_reject_bad_values(
    session_factory: SessionFactory, table: str, column: str, bad_value: object
) -> None:
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        row_id = a.id if table == "images" else _comparison(session, tenant, a, a).id
    # Raw SQL: the ORM's enum validation would refuse the value before the database sees it.
    statement = sa.text(f"UPDATE {table} SET {column} = :value WHERE id = :id").bindparams(
        sa.bindparam("id", type_=sa.Uuid())
    )
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        session.execute(statement, {"value": bad_value, "id": row_id})


def test_orm_refuses_unknown_enum_value(session_factory: SessionFactory) -> None:
    with pytest.raises(sa.exc.StatementError), session_factory() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        _comparison(session, tenant, a, a, state="exploded")


def test_ready_image_needs_its_content_fields(session_factory: SessionFactory) -> None:
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        tenant = _tenant(session)
        session.add(Image(tenant_id=tenant.id, status=ImageStatus.READY, storage_key="x"))


def test_image_sha256_unique_per_tenant_for_ready_rows_pending_rows_free(
    session_factory: SessionFactory,
) -> None:
    with session_factory.begin() as session:
        acme, other = _tenant(session, "acme"), _tenant(session, "other")
        _image(session, acme, "same")
        _image(session, other, "same")  # another tenant may hold the same bytes
        for i in range(2):  # pending presigned uploads: sha256 NULL, any number of them
            session.add(
                Image(tenant_id=acme.id, status=ImageStatus.PENDING, storage_key=f"uploads/{i}")
            )
        acme_id = acme.id
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Image)) == 4
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        duplicate = _sha("same")
        session.add(
            Image(
                tenant_id=acme_id,
                sha256=duplicate,
                storage_key=f"images/{duplicate}",
                size_bytes=1,
                format="PNG",
                width=1,
                height=1,
            )
        )


@pytest.mark.parametrize("what", ["tenant_name", "key_hash", "idempotency_key"])
def test_unique_constraints(session_factory: SessionFactory, what: str) -> None:
    with session_factory.begin() as session:
        tenant = _tenant(session)
        tenant_id = tenant.id
        session.add(ApiKey(tenant_id=tenant_id, prefix="dfa_abcd", key_hash=_sha("k")))
        session.add(
            IdempotencyKey(
                tenant_id=tenant_id,
                key="k1",
                request_hash=_sha("body"),
                expires_at=datetime.now(UTC) + timedelta(hours=24),
            )
        )
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        if what == "tenant_name":
            session.add(Tenant(name="acme"))
        elif what == "key_hash":
            session.add(ApiKey(tenant_id=tenant_id, prefix="dfa_wxyz", key_hash=_sha("k")))
        else:
            session.add(
                IdempotencyKey(
                    tenant_id=tenant_id,
                    key="k1",
                    request_hash=_sha("other"),
                    expires_at=datetime.now(UTC),
                )
            )


def test_idempotency_record_round_trip(session_factory: SessionFactory) -> None:
    expires = datetime.now(UTC) + timedelta(hours=24)
    body = [{"id": "x", "state": "queued"}, 3, None]
    with session_factory.begin() as session:
        tenant_id = _tenant(session).id
        session.add(
            IdempotencyKey(
                tenant_id=tenant_id,
                key="k1",
                request_hash=_sha("body"),
                state=IdempotencyState.DONE,
                status_code=202,
                response_body=body,
                response_headers={"Location": "/v1/comparisons/x"},
                expires_at=expires,
            )
        )
    with session_factory() as session:
        record = session.get_one(IdempotencyKey, (tenant_id, "k1"))
        assert record.state is IdempotencyState.DONE
        assert (record.status_code, record.response_body) == (202, body)
        assert record.response_headers == {"Location": "/v1/comparisons/x"}
        assert record.expires_at == expires


def test_foreign_keys_enforced(session_factory: SessionFactory) -> None:
    # SQLite enforces foreign keys only with PRAGMA foreign_keys=ON (set by make_engine).
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        session.add(ApiKey(tenant_id=uuid.uuid4(), prefix="dfa_abcd", key_hash=_sha("k")))


def test_comparison_cannot_reference_another_tenants_image(
    session_factory: SessionFactory,
) -> None:
    with session_factory.begin() as session:
        acme, other = _tenant(session, "acme"), _tenant(session, "other")
        mine, theirs = _image(session, acme, "mine"), _image(session, other, "theirs")
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        session.add(Comparison(tenant_id=acme.id, image_a_id=mine.id, image_b_id=theirs.id))


def test_deleting_a_tenant_deletes_what_it_owns(session_factory: SessionFactory) -> None:
    with session_factory.begin() as session:
        acme, other = _tenant(session, "acme"), _tenant(session, "other")
        session.add(ApiKey(tenant_id=acme.id, prefix="dfa_abcd", key_hash=_sha("k")))
        a = _image(session, acme)
        batch = Batch(tenant_id=acme.id, total=1)
        session.add(batch)
        session.flush()
        _comparison(session, acme, a, a, batch_id=batch.id)
        kept = _image(session, other)
        _comparison(session, other, kept, kept)
    with session_factory.begin() as session:
        session.execute(sa.delete(Tenant).where(Tenant.id == acme.id))
    with session_factory() as session:
        for model in (ApiKey, Image, Batch, Comparison):
            owners = session.scalars(sa.select(model.tenant_id)).all()
            assert acme.id not in owners
        assert session.scalar(sa.select(sa.func.count()).select_from(Comparison)) == 1


def test_image_in_use_cannot_be_deleted(session_factory: SessionFactory) -> None:
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        _comparison(session, tenant, a, a)
    with pytest.raises(sa.exc.IntegrityError), session_factory.begin() as session:
        session.execute(sa.delete(Image).where(Image.id == a.id))


def test_savepoint_rolls_back_one_item_only(session_factory: SessionFactory) -> None:
    # Batches report one bad pair without sinking the rest: SAVEPOINTs must work, also with
    # make_engine's own SQLite transaction handling (BEGIN IMMEDIATE).
    with session_factory.begin() as session:
        tenant = _tenant(session)
        a = _image(session, tenant)
        outcomes = []
        for image_b_id in (a.id, uuid.uuid4(), a.id):
            try:
                with session.begin_nested():
                    _comparison(session, tenant, a, session.get_one(Image, a.id))
                    if image_b_id != a.id:
                        session.add(
                            Comparison(tenant_id=tenant.id, image_a_id=a.id, image_b_id=image_b_id)
                        )
                        session.flush()
                outcomes.append(True)
            except sa.exc.IntegrityError:
                outcomes.append(False)
    assert outcomes == [True, False, True]
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Comparison)) == 2


def test_objects_usable_after_commit_and_close(session_factory: SessionFactory) -> None:
    with session_factory.begin() as session:
        tenant = _tenant(session)
    # expire_on_commit=False: no lazy load (which would fail on a closed session).
    assert tenant.name == "acme" and isinstance(tenant.id, uuid.UUID)


def test_every_constraint_and_index_is_named_short_enough() -> None:
    names: list[str] = []
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            assert isinstance(constraint.name, str) and constraint.name, constraint
            names.append(constraint.name)
        for index in table.indexes:
            assert isinstance(index.name, str) and index.name, index
            names.append(index.name)
    assert len(names) == len(set(names))
    assert max(len(name) for name in names) <= 63  # PostgreSQL's identifier limit


def test_database_holds_the_named_constraints(engine: Engine) -> None:
    # Alembic's autogenerate (and so `alembic check`) ignores CHECK constraints: compare names.
    inspector = sa.inspect(engine)
    for table in Base.metadata.sorted_tables:
        expected_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        expected_uniques = {c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint)}
        expected_fks = {c.name for c in table.constraints if isinstance(c, sa.ForeignKeyConstraint)}
        assert {c["name"] for c in inspector.get_check_constraints(table.name)} == expected_checks
        assert {c["name"] for c in inspector.get_unique_constraints(table.name)} == (
            expected_uniques
        )
        assert {c["name"] for c in inspector.get_foreign_keys(table.name)} == expected_fks
        reflected_indexes = {
            i["name"]
            for i in inspector.get_indexes(table.name)
            if not i.get("duplicates_constraint")  # PostgreSQL lists unique constraints too
        }
        assert reflected_indexes == {i.name for i in table.indexes}
        if engine.dialect.name == "postgresql":  # SQLite does not keep primary key names
            assert inspector.get_pk_constraint(table.name)["name"] == f"pk_{table.name}"


def test_sqlite_connection_settings(tmp_path: object) -> None:
    engine = db_session.make_engine(f"sqlite:///{tmp_path}/nested/dir/x.db")
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == db_session.SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_sqlite_transactions_take_the_write_lock_up_front(tmp_path: object) -> None:
    # With BEGIN IMMEDIATE a second writer waits (here: times out at once) when the
    # transaction begins, instead of failing half-way through a read-then-write.
    url = f"sqlite:///{tmp_path}/lock.db"
    first = db_session.make_engine(url)
    second = sa.create_engine(url, connect_args={"timeout": 0})
    try:
        with first.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with first.connect() as holder:
            holder.exec_driver_sql("SELECT count(*) FROM t").scalar()  # a read-only transaction
            with pytest.raises(sa.exc.OperationalError, match="locked"), second.begin() as other:
                other.exec_driver_sql("INSERT INTO t VALUES (1)")
    finally:
        first.dispose()
        second.dispose()


def test_postgres_url_uses_psycopg3() -> None:
    engine = db_session.make_engine("postgresql://u@127.0.0.1:1/x")
    try:
        assert engine.dialect.driver == "psycopg"
        assert engine.pool.size() == db_session.PG_POOL_SIZE  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    assert db_session.normalise_url("postgres://u@h/x").drivername == "postgresql+psycopg"
    assert db_session.normalise_url("sqlite:///x.db").drivername == "sqlite"


def test_cached_engine_follows_the_configured_url(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("DIFFALL_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    db_session.dispose_engine()
    try:
        engine = db_session.get_engine()
        assert engine is db_session.get_engine()
        assert str(engine.url) == f"sqlite:///{tmp_path}/diffall.db"
        factory = db_session.get_sessionmaker()
        assert factory is db_session.get_sessionmaker()
        assert factory.kw["bind"] is engine and factory.kw["expire_on_commit"] is False

        monkeypatch.setenv("DIFFALL_DATABASE_URL", f"sqlite:///{tmp_path}/other.db")
        get_settings.cache_clear()
        assert db_session.get_engine() is not engine

        db_session.dispose_engine()
        fresh = db_session.get_engine()
        assert fresh is not engine
        assert db_session.get_sessionmaker().kw["bind"] is fresh
    finally:
        db_session.dispose_engine()
        get_settings.cache_clear()

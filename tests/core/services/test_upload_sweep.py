"""Abandoned presigned uploads are swept: pending images older than the limit are deleted with
their stored bytes; fresh, finalised and referenced ones are kept.

Real databases (SQLite and PostgreSQL) and real stores (a local directory and moto's S3).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.config import LimitsSettings
from core.db.models import Image, ImageStatus, Tenant, utcnow
from core.services import images
from core.services.upload_sweep import sweep_abandoned_uploads
from core.storage import ObjectStore
from tests.support.images import png_bytes

SessionFactory = sessionmaker[Session]
DAY_S = 24 * 3600.0
LIMITS = LimitsSettings()


def _presign(sessions: SessionFactory, store: ObjectStore, tenant: Tenant) -> uuid.UUID:
    with sessions() as session:
        upload = images.presign_upload(
            session,
            store,
            tenant_id=tenant.id,
            public_base_url="http://127.0.0.1:8000",
            expires_s=900,
        )
        return upload.image.id


def _put(sessions: SessionFactory, store: ObjectStore, tenant: Tenant, ident: uuid.UUID) -> None:
    with sessions() as session:
        images.receive_upload(
            session,
            store,
            tenant_id=tenant.id,
            image_id=ident,
            data=png_bytes(16, 12, seed=int(ident.int % 1000)),
            limits=LIMITS,
        )


def _age(sessions: SessionFactory, ident: uuid.UUID, seconds: float) -> None:
    with sessions.begin() as session:
        session.execute(
            sa.update(Image)
            .where(Image.id == ident)
            .values(created_at=utcnow() - timedelta(seconds=seconds))
        )


def _row(sessions: SessionFactory, ident: uuid.UUID) -> Image | None:
    with sessions() as session:
        return session.get(Image, ident)


def test_abandoned_uploads_are_deleted_with_their_bytes(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> None:
    abandoned_with_bytes = _presign(sessions, store, tenant)
    _put(sessions, store, tenant, abandoned_with_bytes)
    abandoned_empty = _presign(sessions, store, tenant)  # the client never PUT anything
    fresh = _presign(sessions, store, tenant)
    _put(sessions, store, tenant, fresh)
    finalised = _presign(sessions, store, tenant)
    _put(sessions, store, tenant, finalised)
    with sessions() as session:
        ready = images.finalize_upload(
            session, store, tenant_id=tenant.id, image_id=finalised, limits=LIMITS
        )
    for ident in (abandoned_with_bytes, abandoned_empty, finalised):
        _age(sessions, ident, DAY_S + 60)
    _age(sessions, fresh, DAY_S - 60)
    old_key = images.upload_key(abandoned_with_bytes)
    assert store.exists(old_key)

    report = sweep_abandoned_uploads(sessions, store, max_age_s=DAY_S)

    assert (report.deleted, report.skipped) == (2, 0)
    assert _row(sessions, abandoned_with_bytes) is None
    assert _row(sessions, abandoned_empty) is None
    assert not store.exists(old_key)
    fresh_row = _row(sessions, fresh)
    assert fresh_row is not None and fresh_row.status is ImageStatus.PENDING
    assert store.exists(images.upload_key(fresh))
    ready_row = _row(sessions, ready.id)
    assert ready_row is not None and ready_row.status is ImageStatus.READY
    assert store.exists(ready_row.storage_key)
    # Nothing left to do: a second pass deletes nothing.
    assert sweep_abandoned_uploads(sessions, store, max_age_s=DAY_S).deleted == 0


def test_a_pass_takes_at_most_its_limit_oldest_first(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> None:
    idents = [_presign(sessions, store, tenant) for _ in range(3)]
    for n, ident in enumerate(idents):
        _age(sessions, ident, DAY_S * (3 - n))  # idents[0] is the oldest
    assert sweep_abandoned_uploads(sessions, store, max_age_s=60, limit=2).deleted == 2
    assert [_row(sessions, i) is None for i in idents] == [True, True, False]


def test_bad_arguments_are_refused(sessions: SessionFactory, store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        sweep_abandoned_uploads(sessions, store, max_age_s=0)
    with pytest.raises(ValueError):
        sweep_abandoned_uploads(sessions, store, max_age_s=60, limit=0)

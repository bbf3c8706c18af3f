"""Rows for the migration tests: written with the models' tables (plain inserts, no ORM
session) into a database at an older revision, whose ``tenants`` and ``images`` columns are
those of today."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa

from core.db.models import Base

__all__ = ["insert_tenant_and_image"]


def insert_tenant_and_image(
    connection: sa.Connection, *, created_at: datetime, width: int = 1, height: int = 1
) -> tuple[uuid.UUID, uuid.UUID]:
    """Insert a tenant and one ready PNG image of ``width`` x ``height`` pixels of it; return
    (tenant id, image id)."""
    tenants, images = (Base.metadata.tables[name] for name in ("tenants", "images"))
    tenant, image = uuid.uuid4(), uuid.uuid4()
    connection.execute(sa.insert(tenants), [{"id": tenant, "name": "t", "created_at": created_at}])
    connection.execute(
        sa.insert(images),
        [
            {
                "id": image,
                "tenant_id": tenant,
                "status": "ready",
                "sha256": "a" * 64,
                "storage_key": "images/a",
                "size_bytes": 1,
                "format": "PNG",
                "width": width,
                "height": height,
                "created_at": created_at,
            }
        ],
    )
    return tenant, image

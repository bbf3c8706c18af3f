"""Tenants and stored images for the service-level tests (through the services themselves)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session, sessionmaker

from core.config import LimitsSettings
from core.db.models import Image, Tenant
from core.services import images, keys
from core.storage import ObjectStore

__all__ = ["add_image", "make_tenant"]


def make_tenant(sessions: sessionmaker[Session], name: str | None = None) -> Tenant:
    """A new tenant (through ``keys.create_key``)."""
    with sessions() as session:
        token = keys.create_key(session, tenant_name=name or f"t-{uuid.uuid4().hex[:8]}")
        return keys.authenticate(session, token)


def add_image(
    sessions: sessionmaker[Session], store: ObjectStore, tenant_id: uuid.UUID, data: bytes
) -> Image:
    """Store ``data`` as a ready image of the tenant (``images.store_image``)."""
    with sessions() as session:
        image, _ = images.store_image(
            session, store, tenant_id=tenant_id, data=data, limits=LimitsSettings()
        )
        return image

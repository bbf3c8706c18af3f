"""Images: stored once by content, validated from the header, presigned uploads finalised."""

from __future__ import annotations

import hashlib
import io
import uuid

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image as PILImage
from sqlalchemy.orm import Session, sessionmaker

from core.config import LimitsSettings
from core.db.models import Image, ImageStatus, Tenant
from core.services import images
from core.services.errors import Conflict, ImageRejected, NotFound, Unavailable
from core.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.support.images import corrupt_png, png_bytes

SessionFactory = sessionmaker[Session]
LIMITS = LimitsSettings()


def _count(sessions: SessionFactory) -> int:
    with sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Image)) or 0)


def test_store_image_is_content_addressed_and_described_from_the_header(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    data = png_bytes(80, 60, seed=3)
    sha = hashlib.sha256(data).hexdigest()
    with sessions() as session:
        image, created = images.store_image(
            session, store, tenant_id=tenant.id, data=data, limits=LIMITS
        )
        again, created_again = images.store_image(
            session, store, tenant_id=tenant.id, data=data, limits=LIMITS
        )
        theirs, created_theirs = images.store_image(
            session, store, tenant_id=other_tenant.id, data=data, limits=LIMITS
        )
    assert created and not created_again and created_theirs
    assert again.id == image.id and theirs.id != image.id  # one row per tenant
    assert image.sha256 == sha and image.storage_key == f"images/{sha}"
    assert store.get(f"images/{sha}") == data  # one object for both tenants
    # Width, height and format as PIL (an independent decoder) reads them.
    with PILImage.open(io.BytesIO(data)) as pil:
        assert (image.width, image.height, image.format) == (*pil.size, pil.format)
    assert image.size_bytes == len(data) and image.status is ImageStatus.READY


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"%PDF-1.4 not an image at all", "unsupported_format"),
        (png_bytes(64, 48)[:-30], "corrupt_image"),  # the end is missing
    ],
)
def test_bad_files_are_refused_with_the_engine_code(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, data: bytes, code: str
) -> None:
    with sessions() as session, pytest.raises(ImageRejected) as info:
        images.store_image(session, local_store, tenant_id=tenant.id, data=data, limits=LIMITS)
    assert info.value.code == code
    assert _count(sessions) == 0


def test_limits_are_enforced_before_decoding(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    data = png_bytes(64, 48)
    with sessions() as session:
        with pytest.raises(ImageRejected) as too_many_bytes:
            images.store_image(
                session,
                local_store,
                tenant_id=tenant.id,
                data=data,
                limits=LimitsSettings(max_upload_bytes=len(data) - 1),
            )
        with pytest.raises(ImageRejected) as too_many_pixels:
            images.store_image(
                session,
                local_store,
                tenant_id=tenant.id,
                data=data,
                limits=LimitsSettings(max_pixels=64 * 48 - 1),
            )
        image, _ = images.store_image(
            session,
            local_store,
            tenant_id=tenant.id,
            data=data,
            limits=LimitsSettings(max_upload_bytes=len(data), max_pixels=64 * 48),
        )
    assert too_many_bytes.value.code == too_many_pixels.value.code == "image_too_large"
    assert image.width == 64


def test_corrupt_pixels_pass_the_header_check(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    # Only the header is read at upload: damaged pixel data is the worker's to find.
    with sessions() as session:
        image, _ = images.store_image(
            session, local_store, tenant_id=tenant.id, data=corrupt_png(), limits=LIMITS
        )
    assert image.status is ImageStatus.READY


def test_get_image_is_tenant_scoped(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant, other_tenant: Tenant
) -> None:
    with sessions() as session:
        image, _ = images.store_image(
            session, local_store, tenant_id=tenant.id, data=png_bytes(), limits=LIMITS
        )
        assert images.get_image(session, tenant_id=tenant.id, image_id=image.id).id == image.id
        with pytest.raises(NotFound):
            images.get_image(session, tenant_id=other_tenant.id, image_id=image.id)
        with pytest.raises(NotFound):
            images.get_image(session, tenant_id=tenant.id, image_id=uuid.uuid4())


def _upload(
    store: ObjectStore,
    url: str,
    sessions: SessionFactory,
    tenant: Tenant,
    image_id: uuid.UUID,
    data: bytes,
) -> None:
    """PUT the bytes like a client: to S3 directly, or through the API's receive_upload."""
    if isinstance(store, S3ObjectStore):
        response = httpx.put(
            url, content=data, headers={"Content-Type": images.UPLOAD_CONTENT_TYPE}, timeout=10
        )
        assert response.status_code == 200, response.text
    else:
        with sessions() as session:
            images.receive_upload(
                session, store, tenant_id=tenant.id, image_id=image_id, data=data, limits=LIMITS
            )


def test_presigned_upload_is_finalised_into_a_ready_image(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> None:
    data = png_bytes(40, 30, seed=5)
    with sessions() as session:
        upload = images.presign_upload(
            session,
            store,
            tenant_id=tenant.id,
            public_base_url="http://api.example:8000/",
            expires_s=300,
        )
    image_id = upload.image.id
    assert upload.image.status is ImageStatus.PENDING and upload.method == "PUT"
    if isinstance(store, LocalObjectStore):
        assert upload.url == f"http://api.example:8000/v1/images/{image_id}/content"
    with sessions() as session, pytest.raises(Conflict) as missing:
        images.finalize_upload(
            session, store, tenant_id=tenant.id, image_id=image_id, limits=LIMITS
        )
    assert missing.value.code == "upload_missing"
    _upload(store, upload.url, sessions, tenant, image_id, data)
    with sessions() as session:
        image = images.finalize_upload(
            session, store, tenant_id=tenant.id, image_id=image_id, limits=LIMITS
        )
        again = images.finalize_upload(
            session, store, tenant_id=tenant.id, image_id=image_id, limits=LIMITS
        )
    sha = hashlib.sha256(data).hexdigest()
    assert image.id == again.id == image_id
    assert (image.status, image.sha256, image.width, image.height) == (
        ImageStatus.READY,
        sha,
        40,
        30,
    )
    assert store.get(f"images/{sha}") == data
    assert not store.exists(images.upload_key(image_id))  # the pending object is gone


def test_finalising_known_bytes_returns_the_existing_image(
    sessions: SessionFactory, store: ObjectStore, tenant: Tenant
) -> None:
    data = png_bytes(40, 30, seed=6)
    with sessions() as session:
        existing, _ = images.store_image(
            session, store, tenant_id=tenant.id, data=data, limits=LIMITS
        )
        upload = images.presign_upload(
            session, store, tenant_id=tenant.id, public_base_url="http://x", expires_s=60
        )
    _upload(store, upload.url, sessions, tenant, upload.image.id, data)
    with sessions() as session:
        image = images.finalize_upload(
            session, store, tenant_id=tenant.id, image_id=upload.image.id, limits=LIMITS
        )
    assert image.id == existing.id
    assert _count(sessions) == 1  # the pending row was removed


def test_a_rejected_upload_stays_pending_and_can_be_sent_again(
    sessions: SessionFactory, local_store: LocalObjectStore, tenant: Tenant
) -> None:
    with sessions() as session:
        upload = images.presign_upload(
            session, local_store, tenant_id=tenant.id, public_base_url="http://x", expires_s=60
        )
    image_id = upload.image.id
    _upload(local_store, upload.url, sessions, tenant, image_id, b"not an image")
    with sessions() as session, pytest.raises(ImageRejected) as info:
        images.finalize_upload(
            session, local_store, tenant_id=tenant.id, image_id=image_id, limits=LIMITS
        )
    assert info.value.code == "unsupported_format"
    assert not local_store.exists(images.upload_key(image_id))
    _upload(local_store, upload.url, sessions, tenant, image_id, png_bytes())
    with sessions() as session:
        image = images.finalize_upload(
            session, local_store, tenant_id=tenant.id, image_id=image_id, limits=LIMITS
        )
        with pytest.raises(Conflict):  # no second upload once ready
            images.receive_upload(
                session,
                local_store,
                tenant_id=tenant.id,
                image_id=image_id,
                data=b"x",
                limits=LIMITS,
            )
    assert image.status is ImageStatus.READY


def test_storage_outage_is_unavailable(
    sessions: SessionFactory, dead_s3_store: S3ObjectStore, tenant: Tenant
) -> None:
    with sessions() as session, pytest.raises(Unavailable):
        images.store_image(
            session, dead_s3_store, tenant_id=tenant.id, data=png_bytes(), limits=LIMITS
        )
    assert _count(sessions) == 0

"""``/v1/images``: upload (stored once by SHA-256, header validated at once), presigned uploads."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.idempotency import IdempotentRoute
from api.routes import problem_responses
from api.routes.bodies import (
    IMAGE_REQUEST_BODY,
    RAW_REQUEST_BODY,
    read_image_upload,
    read_raw_body,
)
from api.schemas import ImageOut, PresignOut
from core.services import images
from core.services.errors import ImageRejected
from core.services.images import ReceivedFile

router = APIRouter(route_class=IdempotentRoute, tags=["images"])

# Spooled files, deleted (and their upload slot freed) as soon as the route returned.
ImageBytes = Annotated[ReceivedFile, Depends(read_image_upload, scope="function")]
RawBytes = Annotated[ReceivedFile, Depends(read_raw_body, scope="function")]


@router.post(
    "/v1/images",
    status_code=201,
    response_model=ImageOut,
    summary="Upload an image",
    openapi_extra=IMAGE_REQUEST_BODY,
    responses={
        200: {"model": ImageOut, "description": "These bytes were uploaded before: same image."},
        **problem_responses(400, 413, 415, 422, 503),
    },
)
def upload_image(
    tenant: TenantDep,
    data: ImageBytes,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
) -> ImageOut:
    """Store one image (multipart field ``file``, or the raw body), validated from its header.

    201 with ``Location`` for new bytes; 200 with the existing image when the same bytes were
    uploaded before (content-addressed by SHA-256). Refused with 413 ``image_too_large`` (bytes,
    pixels, or the memory a comparison of it would need) or 422 ``empty_file`` /
    ``unsupported_format`` / ``corrupt_image`` (including broken structure: missing or truncated
    image data) before any job exists; 503 ``too_many_uploads`` with ``Retry-After`` when the
    server is receiving its maximum of uploads.
    """
    image, created = images.store_image(
        session, store, tenant_id=tenant.id, data=data, limits=settings.limits
    )
    base = settings.api.public_base_url
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"{base}/v1/images/{image.id}"
    return ImageOut.from_image(image, base_url=base)


@router.post(
    "/v1/images/presign",
    status_code=201,
    response_model=PresignOut,
    summary="Start a direct upload",
    responses=problem_responses(503),
)
def presign_image(
    tenant: TenantDep, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> PresignOut:
    """Create a pending image and a URL to ``PUT`` its bytes to, then ``POST`` ``finalize_url``.

    On S3 the URL is presigned (send exactly the returned headers, no API key); with local
    storage it is ``PUT /v1/images/{id}/content`` on the API (send your API key too).
    """
    base = settings.api.public_base_url
    presigned = images.presign_upload(
        session,
        store,
        tenant_id=tenant.id,
        public_base_url=base,
        expires_s=settings.storage.presign_expiry_s,
    )
    return PresignOut.from_presigned(presigned, base_url=base)


@router.put(
    "/v1/images/{image_id}/content",
    status_code=204,
    response_class=Response,
    summary="Upload the bytes of a pending image (local storage)",
    openapi_extra=RAW_REQUEST_BODY,
    responses=problem_responses(404, 409, 413, 422, 503),
)
def put_image_content(
    image_id: uuid.UUID,
    tenant: TenantDep,
    data: RawBytes,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """The upload URL of a presigned upload when storage is local: the raw bytes as the body
    (an empty body is 422 ``empty_file``)."""
    if data.size == 0:
        raise ImageRejected("the request body is empty: send the image's bytes", code="empty_file")
    images.receive_upload(
        session, store, tenant_id=tenant.id, image_id=image_id, data=data, limits=settings.limits
    )
    return Response(status_code=204)


@router.post(
    "/v1/images/{image_id}/finalize",
    response_model=ImageOut,
    summary="Finalise a direct upload",
    responses=problem_responses(404, 409, 413, 422),
)
def finalize_image(
    image_id: uuid.UUID,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ImageOut:
    """Validate the uploaded bytes and make the image ``ready``.

    When you already had these bytes, the existing image is returned (its id may differ from
    the pending one). 409 ``conflict`` when nothing was uploaded yet.
    """
    image = images.finalize_upload(
        session, store, tenant_id=tenant.id, image_id=image_id, limits=settings.limits
    )
    return ImageOut.from_image(image, base_url=settings.api.public_base_url)


@router.get(
    "/v1/images/{image_id:uuid}",  # only ids: GET /v1/images/presign is 405, not 422
    response_model=ImageOut,
    summary="Get an image",
    responses=problem_responses(404),
)
def get_image(
    image_id: uuid.UUID, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> ImageOut:
    """One of your images (404 for any other id)."""
    image = images.get_image(session, tenant_id=tenant.id, image_id=image_id)
    return ImageOut.from_image(image, base_url=settings.api.public_base_url)

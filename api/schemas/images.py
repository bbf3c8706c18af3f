"""Image bodies: an uploaded image, and the presigned-upload instructions."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from api.schemas.common import InModel, OutModel
from core.db.models import Image, ImageStatus
from core.services.images import PresignedUpload

__all__ = [
    "ImageOut",
    "PresignOut",
    "PresignRequest",
    "UploadInstructions",
]


class ImageLinks(OutModel):
    self_: str = Field(alias="self")


class ImageOut(OutModel):
    """An uploaded image: content-addressed by SHA-256, validated from its header."""

    id: uuid.UUID
    status: ImageStatus = Field(description="`pending` until a presigned upload is finalised.")
    sha256: str | None = Field(description="Hex SHA-256 of the bytes (null while pending).")
    size_bytes: int | None = Field(description="File size in bytes.")
    format: str | None = Field(description="Format from the header, e.g. `PNG`, `JPEG`.")
    width: int | None = Field(description="Width in pixels.")
    height: int | None = Field(description="Height in pixels.")
    created_at: datetime
    links: ImageLinks

    @classmethod
    def from_image(cls, image: Image, *, base_url: str) -> ImageOut:
        """Build the resource from a row.

        Parameters
        ----------
        image
            The image row.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        ImageOut
            The response body.
        """
        return cls(
            id=image.id,
            status=image.status,
            sha256=image.sha256,
            size_bytes=image.size_bytes,
            format=image.format,
            width=image.width,
            height=image.height,
            created_at=image.created_at,
            links=ImageLinks.model_validate({"self": f"{base_url}/v1/images/{image.id}"}),
        )


class PresignRequest(InModel):
    """Optional body of ``POST /v1/images/presign`` (empty today; reserved)."""


class UploadInstructions(OutModel):
    """How to send the bytes: one HTTP request with exactly these method and headers."""

    url: str = Field(description="Where to send the bytes (S3, or the API's own upload URL).")
    method: str = Field(description="HTTP method, `PUT`.")
    headers: dict[str, str] = Field(description="Headers to send with the bytes, exactly.")
    expires_at: datetime = Field(description="The URL stops working after this time.")
    requires_api_key: bool = Field(
        description="True when `url` is the API itself: send `Authorization: Bearer <key>` too."
    )


class PresignOut(OutModel):
    """A pending image, where to upload its bytes, and where to finalise it afterwards."""

    image: ImageOut
    upload: UploadInstructions
    finalize_url: str = Field(description="`POST` here once the bytes are uploaded.")

    @classmethod
    def from_presigned(cls, presigned: PresignedUpload, *, base_url: str) -> PresignOut:
        """Build the response from the service's result.

        Parameters
        ----------
        presigned
            The pending image and its upload URL.
        base_url
            ``settings.api.public_base_url``.

        Returns
        -------
        PresignOut
            The response body.
        """
        image_id = presigned.image.id
        return cls(
            image=ImageOut.from_image(presigned.image, base_url=base_url),
            upload=UploadInstructions(
                url=presigned.url,
                method=presigned.method,
                headers=dict(presigned.headers),
                expires_at=presigned.expires_at,
                requires_api_key=presigned.url.startswith(f"{base_url}/"),
            ),
            finalize_url=f"{base_url}/v1/images/{image_id}/finalize",
        )

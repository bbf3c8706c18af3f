"""Images: content-addressed storage (``images/<sha256>``), validated from the header.

Bytes are stored once per content under ``images/<sha256>`` (shared by tenants uploading the same
bytes); each tenant gets its own row. Pending presigned uploads are written to
``uploads/<image_id>`` and moved to their content address when finalised.

Uploads arrive as :class:`ReceivedFile`: spooled to a temporary file (kept in memory only while
small), SHA-256 hashed while it was written, validated in place through a memory map and copied
to storage in pieces, so an upload never sits in the API's memory whole. Validation before the
201: the header and its limits (``read_header``), the file's structure
(``core.imaging.structure``: a PNG without or with truncated image data, a TIFF strip outside
the file, a GIF frame outside its screen, a JPEG too short for its size), and the memory a
comparison of the image would need (``core.imaging.budget``, against ``limits.job_memory_mb``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.config import LimitsSettings
from core.db.models import Image, ImageStatus, utcnow
from core.imaging.budget import check_budget, footprint
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.header import ImageHeader, read_header
from core.imaging.structure import check_structure
from core.services._common import map_db_errors, map_storage_errors
from core.services.errors import Conflict, ImageRejected, InvalidRequest, NotFound
from core.storage import ObjectNotFound, ObjectStore

__all__ = [
    "CONTENT_TYPES",
    "UPLOAD_CONTENT_TYPE",
    "PresignedUpload",
    "ReceivedFile",
    "UploadSpool",
    "finalize_upload",
    "get_image",
    "image_key",
    "presign_upload",
    "receive_upload",
    "store_image",
    "upload_key",
]

#: MIME type of each format ``read_header`` reports.
CONTENT_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "gif": "image/gif",
}
#: Content type a presigned upload must be sent with (it is part of the S3 signature).
UPLOAD_CONTENT_TYPE = "application/octet-stream"


#: Bytes read or hashed at a time.
_PIECE = 1024 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    """An uploaded file: a seekable file object, its size in bytes and its SHA-256 (hex)."""

    file: BinaryIO
    size: int
    sha256: str

    @classmethod
    def from_bytes(cls, data: bytes) -> ReceivedFile:
        """A file held in memory (tests, the command line)."""
        return cls(io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())

    @classmethod
    def from_file(cls, file: BinaryIO) -> ReceivedFile:
        """A file already written (e.g. a multipart part), hashed in 1 MiB pieces."""
        file.seek(0)
        digest = hashlib.sha256()
        size = 0
        while piece := file.read(_PIECE):
            digest.update(piece)
            size += len(piece)
        return cls(file, size, digest.hexdigest())


class UploadSpool:
    """Receives an upload piece by piece: hashes it on the way and spools it to a temporary
    file once it exceeds ``memory_bytes`` (the caller closes it with :meth:`close`).

    Parameters
    ----------
    max_bytes
        Largest accepted upload, in bytes: one more and :meth:`write` raises ``ImageRejected``
        (``image_too_large``).
    memory_bytes
        Bytes kept in memory before spooling to disk (>= 0).
    """

    def __init__(self, *, max_bytes: int, memory_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.file: BinaryIO = tempfile.SpooledTemporaryFile(  # type: ignore[assignment]  # noqa: SIM115
            max_size=memory_bytes, mode="w+b", prefix="diffall-upload-"
        )
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, piece: bytes) -> None:
        """Append ``piece`` (hashed, spooled)."""
        self.size += len(piece)
        if self.size > self.max_bytes:
            raise _too_many_bytes(self.size, self.max_bytes, at_least=True)
        self._digest.update(piece)
        self.file.write(piece)

    def finish(self) -> ReceivedFile:
        """The received file (rewound)."""
        self.file.seek(0)
        return ReceivedFile(self.file, self.size, self._digest.hexdigest())

    def close(self) -> None:
        """Delete the temporary file."""
        self.file.close()


def _too_many_bytes(size: int, limit: int, *, at_least: bool = False) -> ImageRejected:
    more = "more than " if at_least else ""
    return ImageRejected(
        f"the file is {more}{size} bytes; at most {limit} are accepted",
        code=ErrorCode.IMAGE_TOO_LARGE.value,
        details={"max_bytes": limit},
    )


@contextlib.contextmanager
def _mapped(upload: ReceivedFile) -> Iterator[bytes | mmap.mmap]:
    """The upload's bytes: read when small, else a read-only memory map of its file."""
    if upload.size <= _PIECE:
        upload.file.seek(0)
        yield upload.file.read()
        return
    try:
        fileno = upload.file.fileno()  # a spooled file rolls over to disk here
    except (OSError, io.UnsupportedOperation):  # an in-memory file object
        upload.file.seek(0)
        yield upload.file.read()
        return
    upload.file.flush()
    mapped = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
    try:
        yield mapped
    finally:
        with contextlib.suppress(BufferError):  # a view still held: freed with it
            mapped.close()


def image_key(sha256: str) -> str:
    """Storage key of the bytes with this SHA-256 (hex): ``images/<sha256>``."""
    return f"images/{sha256}"


def upload_key(image_id: uuid.UUID) -> str:
    """Storage key a pending upload is written to: ``uploads/<image_id>``."""
    return f"uploads/{image_id}"


@dataclass(frozen=True)
class PresignedUpload:
    """Where and how the client PUTs the bytes of a pending image, then finalises it."""

    image: Image
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


def _content_type(header: ImageHeader) -> str:
    return CONTENT_TYPES.get(header.format, UPLOAD_CONTENT_TYPE)


def _validate(data: bytes | mmap.mmap, limits: LimitsSettings) -> ImageHeader:
    """Check ``data`` under the limits before any job exists: size, header, structure and the
    memory a comparison of it would need; ``ImageRejected`` with the engine's code."""
    if len(data) > limits.max_upload_bytes:
        raise _too_many_bytes(len(data), limits.max_upload_bytes)
    try:
        header = read_header(data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
        check_structure(data, header.format)
        budget = limits.job_memory_bytes
        if budget is not None:
            check_budget(footprint(header), budget)
    except ImagingError as exc:
        details: dict[str, int] = {}
        if exc.code is ErrorCode.IMAGE_TOO_LARGE:
            details = {"max_bytes": limits.max_upload_bytes, "max_pixels": limits.max_pixels}
            if limits.job_memory_bytes is not None:
                details["job_memory_bytes"] = limits.job_memory_bytes
        raise ImageRejected(exc.message, code=exc.code.value, details=details) from exc
    return header


def _validate_upload(upload: ReceivedFile, limits: LimitsSettings) -> ImageHeader:
    if upload.size > limits.max_upload_bytes:
        raise _too_many_bytes(upload.size, limits.max_upload_bytes)
    with _mapped(upload) as data:
        return _validate(data, limits)


def _ready_by_sha(session: Session, tenant_id: uuid.UUID, sha256: str) -> Image | None:
    return session.scalars(
        sa.select(Image).where(
            Image.tenant_id == tenant_id,
            Image.sha256 == sha256,
            Image.status == ImageStatus.READY,
        )
    ).one_or_none()


def _fields(header: ImageHeader, sha256: str, size: int) -> dict[str, object]:
    return {
        "status": ImageStatus.READY,
        "sha256": sha256,
        "storage_key": image_key(sha256),
        "size_bytes": size,
        "format": header.format.upper(),
        "width": header.width,
        "height": header.height,
    }


def store_image(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    data: bytes | ReceivedFile,
    limits: LimitsSettings,
) -> tuple[Image, bool]:
    """Validate ``data`` (header, structure, memory budget: see the module docstring), store it
    once under ``images/<sha256>`` and return ``(image, created)``; the same bytes again return
    the existing row with ``created=False``. Raises ``ImageRejected`` (code from the engine:
    ``empty_file``, ``unsupported_format``, ``corrupt_image``, ``image_too_large``). Commits.

    ``format`` is stored upper-case (``PNG``, ``JPEG``, ...); width and height are in pixels as
    displayed. ``Unavailable`` when storage or the database cannot be reached.
    """
    upload = data if isinstance(data, ReceivedFile) else ReceivedFile.from_bytes(data)
    header = _validate_upload(upload, limits)
    sha256 = upload.sha256
    with map_db_errors("store image"):
        existing = _ready_by_sha(session, tenant_id, sha256)
        if existing is not None:
            session.commit()
            return existing, False
        session.commit()  # no transaction (SQLite: no write lock) held during the upload
    with map_storage_errors("store image"):
        store.put_file(image_key(sha256), upload.file, content_type=_content_type(header))
    with map_db_errors("store image"):
        image = Image(tenant_id=tenant_id, **_fields(header, sha256, upload.size))
        session.add(image)
        try:
            session.commit()
        except sa.exc.IntegrityError:  # the same bytes were stored concurrently
            session.rollback()
            existing = _ready_by_sha(session, tenant_id, sha256)
            if existing is None:
                raise
            session.commit()
            return existing, False
    return image, True


def presign_upload(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    public_base_url: str,
    expires_s: int,
) -> PresignedUpload:
    """Create a ``pending`` image and a URL to PUT its bytes to: an S3 presigned URL, or with
    local storage ``{public_base_url}/v1/images/{id}/content`` on the API itself. Commits.

    The client sends ``Content-Type: application/octet-stream`` (``headers``), then calls
    :func:`finalize_upload`. ``expires_s`` is the URL's lifetime in seconds (1 to 604800).
    """
    if not 1 <= expires_s <= 7 * 24 * 3600:
        raise InvalidRequest("expires_s must be within 1..604800 seconds")
    image_id = uuid.uuid4()
    key = upload_key(image_id)
    with map_storage_errors("presign upload"):
        url = store.presign_put(key, expires_s=expires_s, content_type=UPLOAD_CONTENT_TYPE)
    if url is None:
        url = f"{public_base_url.rstrip('/')}/v1/images/{image_id}/content"
    with map_db_errors("presign upload"):
        image = Image(id=image_id, tenant_id=tenant_id, status=ImageStatus.PENDING, storage_key=key)
        session.add(image)
        session.commit()
    return PresignedUpload(
        image=image,
        url=url,
        method="PUT",
        headers={"Content-Type": UPLOAD_CONTENT_TYPE},
        expires_at=utcnow() + timedelta(seconds=expires_s),
    )


def _tenant_image(session: Session, tenant_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    image = session.scalars(
        sa.select(Image).where(Image.tenant_id == tenant_id, Image.id == image_id)
    ).one_or_none()
    if image is None:
        raise NotFound(f"image {image_id} not found")
    return image


def receive_upload(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    image_id: uuid.UUID,
    data: bytes | ReceivedFile,
    limits: LimitsSettings,
) -> None:
    """Store the bytes of a pending upload sent to the API's own upload URL (local storage).

    ``NotFound`` for an unknown image, ``Conflict`` (code ``image_already_ready``) once it is
    finalised, ``ImageRejected`` (``image_too_large``) above the byte limit; the header is
    checked when finalising. A second PUT replaces the first.
    """
    with map_db_errors("receive upload"):
        image = _tenant_image(session, tenant_id, image_id)
        session.commit()
    if image.status is not ImageStatus.PENDING:
        raise Conflict(f"image {image_id} is already uploaded", code="image_already_ready")
    upload = data if isinstance(data, ReceivedFile) else ReceivedFile.from_bytes(data)
    if upload.size > limits.max_upload_bytes:
        raise _too_many_bytes(upload.size, limits.max_upload_bytes)
    with map_storage_errors("receive upload"):
        store.put_file(image.storage_key, upload.file, content_type=UPLOAD_CONTENT_TYPE)


def finalize_upload(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    image_id: uuid.UUID,
    limits: LimitsSettings,
) -> Image:
    """Validate the uploaded bytes of a pending image and make it ``ready`` (moved to its
    content address). If the tenant already has these bytes, return that image instead.
    Raises ``NotFound``, ``Conflict`` (nothing uploaded yet), ``ImageRejected``. Commits.

    Finalising a ready image returns it unchanged. A rejected upload is deleted from storage
    and the image stays ``pending`` (the client may PUT again while its URL is valid).
    """
    with map_db_errors("finalize upload"):
        image = _tenant_image(session, tenant_id, image_id)
        session.commit()
    if image.status is ImageStatus.READY:
        return image
    pending_key = image.storage_key
    with map_storage_errors("finalize upload"):
        try:
            size = store.size(pending_key)
        except ObjectNotFound:
            raise Conflict(
                f"nothing was uploaded for image {image_id} yet", code="upload_missing"
            ) from None
        if size > limits.max_upload_bytes:
            store.delete(pending_key)
            raise _too_many_bytes(size, limits.max_upload_bytes)
        try:
            data = store.get(pending_key)
        except ObjectNotFound:
            raise Conflict(
                f"nothing was uploaded for image {image_id} yet", code="upload_missing"
            ) from None
    try:
        header = _validate(data, limits)
    except ImageRejected:
        with map_storage_errors("finalize upload"):
            store.delete(pending_key)
        raise
    sha256 = hashlib.sha256(data).hexdigest()
    with map_db_errors("finalize upload"):
        existing = _ready_by_sha(session, tenant_id, sha256)
        session.commit()
    if existing is None:
        with map_storage_errors("finalize upload"):
            store.put(image_key(sha256), data, content_type=_content_type(header))
    with map_db_errors("finalize upload"):
        result: Image | None = existing
        if existing is None:
            try:
                updated = session.execute(
                    sa.update(Image)
                    .where(
                        Image.id == image_id,
                        Image.tenant_id == tenant_id,
                        Image.status == ImageStatus.PENDING,
                    )
                    .values(**_fields(header, sha256, len(data)))
                    .execution_options(synchronize_session=False)
                )
                rowcount = int(updated.rowcount)  # type: ignore[attr-defined]
                session.commit()
            except sa.exc.IntegrityError:  # the tenant got these bytes meanwhile
                session.rollback()
                rowcount = 0
            if rowcount == 1:
                result = _tenant_image(session, tenant_id, image_id)
                session.refresh(result)
            else:  # finalised concurrently, or another row holds these bytes now
                result = _ready_by_sha(session, tenant_id, sha256)
        if result is None:  # pragma: no cover - defensive
            raise Conflict(f"image {image_id} changed while it was finalised")
        if result.id != image_id:
            session.execute(
                sa.delete(Image).where(
                    Image.id == image_id,
                    Image.tenant_id == tenant_id,
                    Image.status == ImageStatus.PENDING,
                )
            )
        session.commit()
    with map_storage_errors("finalize upload"):
        store.delete(pending_key)
    return result


def get_image(session: Session, *, tenant_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    """The tenant's image; ``NotFound`` otherwise (other tenants' ids included)."""
    with map_db_errors("get image"):
        return _tenant_image(session, tenant_id, image_id)

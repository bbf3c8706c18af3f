"""Request body readers (async dependencies): raw bytes, an image upload, a comparison request.

They run after authentication (declare them after ``TenantDep``), read the body through the
size-limiting middleware, and raise ``RequestValidationError`` in FastAPI's format, so a bad
form field gets the same 422 ``validation_error`` as a bad JSON field. No pixel is decoded here.

Image uploads (``POST /v1/images``, ``PUT /v1/images/{id}/content``) are never held in memory
whole: a raw body is hashed and spooled to a temporary file as it arrives
(``core.services.images.UploadSpool``), a multipart file part is spooled by Starlette's parser
and hashed from its file. Each holds one of the process's ``limits.max_concurrent_uploads``
upload slots until the route returned; with none free the request is refused at once with 503
``too_many_uploads`` and ``Retry-After``, before its body is read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ComparisonCreate
from core.config import Settings
from core.services.errors import Unavailable
from core.services.images import ReceivedFile, UploadSpool

__all__ = [
    "COMPARISON_REQUEST_BODY",
    "IMAGE_REQUEST_BODY",
    "RAW_REQUEST_BODY",
    "ComparisonSubmission",
    "UploadSlots",
    "media_type",
    "read_comparison_submission",
    "read_image_upload",
    "read_raw_body",
]

#: Largest non-file multipart field (options, metadata), in bytes.
MAX_FORM_FIELD_BYTES: Final = 1024 * 1024

_RAW_IMAGE_TYPES: Final = ("application/octet-stream",)


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    if media == "application/json":
        return True
    return media.startswith("application/") and media.endswith("+json")


def _error(field: str, kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "loc": ("body", field), "msg": message, "input": None}


def _invalid(*errors: dict[str, Any]) -> RequestValidationError:
    return RequestValidationError(list(errors))


class UploadSlots:
    """Uploads one API process receives at once (used on the event loop only: no lock).

    Parameters
    ----------
    limit
        Most uploads at once (>= 1).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def acquire(self) -> None:
        """Take a slot; ``Unavailable`` (503 ``too_many_uploads``) when all are taken."""
        if self.used >= self.limit:
            raise Unavailable(
                f"this server is receiving {self.limit} uploads already; retry shortly",
                code="too_many_uploads",
                details={"max_concurrent_uploads": self.limit},
            )
        self.used += 1

    def release(self) -> None:
        """Give a slot back."""
        self.used = max(0, self.used - 1)


def _upload_slots(request: Request) -> UploadSlots:
    slots: UploadSlots | None = getattr(request.app.state, "upload_slots", None)
    if slots is None:
        settings: Settings = request.app.state.settings
        slots = UploadSlots(settings.limits.max_concurrent_uploads)
        request.app.state.upload_slots = slots
    return slots


async def _spool_body(request: Request) -> UploadSpool:
    """Hash and spool the raw body as it arrives (closed by the caller)."""
    limits = request.app.state.settings.limits
    spool = UploadSpool(
        max_bytes=limits.max_upload_bytes, memory_bytes=limits.upload_spool_memory_bytes
    )
    try:
        async for piece in request.stream():
            if piece:
                spool.write(piece)
    except BaseException:
        spool.close()
        raise
    return spool


async def read_raw_body(request: Request) -> AsyncIterator[ReceivedFile]:
    """The raw request body (``PUT /v1/images/{id}/content``), spooled and hashed, at most the
    upload limit; holds an upload slot until the route returned.

    Parameters
    ----------
    request
        The current request.

    Yields
    ------
    ReceivedFile
        The body as sent (deleted afterwards).
    """
    slots = _upload_slots(request)
    slots.acquire()
    try:
        spool = await _spool_body(request)
        try:
            yield spool.finish()
        finally:
            spool.close()
    finally:
        slots.release()


def _form_file(form: FormData, field: str) -> UploadFile:
    value = form.get(field)
    if value is None:
        raise _invalid(_error(field, "missing", "Field required: an image file"))
    if not isinstance(value, UploadFile):
        raise _invalid(_error(field, "file_type", "Expected a file upload"))
    return value


async def _read_file(form: FormData, field: str) -> ReceivedFile:
    return ReceivedFile.from_file(_form_file(form, field).file)


async def read_image_upload(request: Request) -> AsyncIterator[ReceivedFile]:
    """The image of ``POST /v1/images``: multipart field ``file``, or the raw body.

    A raw body is accepted with ``Content-Type: application/octet-stream`` or ``image/*``.

    Parameters
    ----------
    request
        The current request.

    Yields
    ------
    ReceivedFile
        The image file, spooled and hashed (validated later by the service; deleted once the
        route returned).

    Raises
    ------
    RequestValidationError
        No ``file`` field (422 ``validation_error``).
    HTTPException
        Another media type (415 ``unsupported_media_type``).
    Unavailable
        Every upload slot is taken (503 ``too_many_uploads``).
    """
    media = media_type(request)
    if media == "multipart/form-data":
        slots = _upload_slots(request)
        slots.acquire()
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=MAX_FORM_FIELD_BYTES)
            try:
                yield await _read_file(form, "file")
            finally:
                await form.close()
        finally:
            slots.release()
        return
    if media in _RAW_IMAGE_TYPES or media.startswith("image/"):
        async for received in read_raw_body(request):
            yield received
        return
    raise StarletteHTTPException(
        415,
        "send the image as multipart/form-data (field 'file') or as the raw body with "
        "Content-Type application/octet-stream",
    )


@dataclass(frozen=True)
class ComparisonSubmission:
    """A comparison request, from JSON or multipart.

    ``a`` and ``b`` are image ids, or the bytes of files uploaded with the request.
    """

    a: uuid.UUID | bytes
    b: uuid.UUID | bytes
    options: dict[str, Any] | None
    metadata: dict[str, Any] | None
    webhook_url: str | None


def _json_object(form: FormData, field: str) -> dict[str, Any] | None:
    value = form.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise _invalid(_error(field, "json_type", "Expected a JSON object, not a file"))
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise _invalid(_error(field, "json_invalid", f"Invalid JSON: {exc}")) from exc
    if not isinstance(parsed, dict):
        raise _invalid(_error(field, "dict_type", "Expected a JSON object"))
    return parsed


async def _image_field(form: FormData, field: str) -> uuid.UUID | bytes:
    value = form.get(field)
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError as exc:
            raise _invalid(
                _error(field, "uuid_parsing", "Expected an image file or an image id")
            ) from exc
    part = _form_file(form, field).file  # the comparison's route takes the bytes (unhashed)
    part.seek(0)
    return part.read()


def _prefixed(exc: ValidationError) -> RequestValidationError:
    errors: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = dict(error)
        item["loc"] = ("body", *error.get("loc", ()))
        errors.append(item)
    return RequestValidationError(errors)


async def read_comparison_submission(request: Request) -> ComparisonSubmission:
    """The body of ``POST /v1/comparisons``: JSON ``{a, b, ...}`` or multipart with files.

    Multipart fields: ``a`` and ``b`` (files, or image ids as text), ``options`` and
    ``metadata`` (JSON objects as text), ``webhook_url`` (text).

    Parameters
    ----------
    request
        The current request.

    Returns
    -------
    ComparisonSubmission
        The parsed request.

    Raises
    ------
    RequestValidationError
        A missing or malformed field (422 ``validation_error``).
    HTTPException
        Neither JSON nor multipart (415 ``unsupported_media_type``).
    """
    media = media_type(request)
    if _is_json(media):
        body = await request.body()
        try:
            parsed = ComparisonCreate.model_validate_json(body)
        except ValidationError as exc:
            raise _prefixed(exc) from exc
        return ComparisonSubmission(
            a=parsed.a,
            b=parsed.b,
            options=parsed.options,
            metadata=parsed.metadata,
            webhook_url=parsed.webhook_url,
        )
    if media == "multipart/form-data":
        form = await request.form(max_files=2, max_fields=16, max_part_size=MAX_FORM_FIELD_BYTES)
        try:
            errors: list[dict[str, Any]] = []
            values: dict[str, Any] = {}
            for field in ("a", "b"):
                try:
                    values[field] = await _image_field(form, field)
                except RequestValidationError as exc:
                    errors.extend(exc.errors())
            for field in ("options", "metadata"):
                try:
                    values[field] = _json_object(form, field)
                except RequestValidationError as exc:
                    errors.extend(exc.errors())
            webhook = form.get("webhook_url")
            if webhook is not None and not isinstance(webhook, str):
                errors.append(_error("webhook_url", "string_type", "Expected text"))
                webhook = None
            if errors:
                raise RequestValidationError(errors)
        finally:
            await form.close()
        if isinstance(webhook, str) and webhook.strip():
            try:
                ComparisonCreate.model_validate(
                    {"a": uuid.UUID(int=0), "b": uuid.UUID(int=0), "webhook_url": webhook.strip()}
                )
            except ValidationError as exc:
                raise _prefixed(exc) from exc
            values["webhook_url"] = webhook.strip()
        else:
            values["webhook_url"] = None
        return ComparisonSubmission(**values)
    raise StarletteHTTPException(
        415, "send application/json ({a, b, options, ...}) or multipart/form-data (files a, b)"
    )


#: OpenAPI ``requestBody`` of ``PUT /v1/images/{id}/content``.
RAW_REQUEST_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "minLength": 1}
            }
        },
    }
}

#: OpenAPI ``requestBody`` of ``POST /v1/images``.
IMAGE_REQUEST_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_FILE_OR_ID = {
    "anyOf": [{"type": "string", "format": "binary"}, {"type": "string", "format": "uuid"}]
}

#: OpenAPI ``requestBody`` of ``POST /v1/comparisons`` (JSON or multipart).
COMPARISON_REQUEST_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ComparisonCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {
                        "a": {**_FILE_OR_ID, "description": "Image A: a file or an image id."},
                        "b": {**_FILE_OR_ID, "description": "Image B: a file or an image id."},
                        "options": {
                            "type": "string",
                            "description": "JSON text of a `ComparisonOptions` object.",
                        },
                        "metadata": {"type": "string", "description": "JSON object, echoed."},
                        "webhook_url": {"type": "string", "format": "uri"},
                    },
                }
            },
        },
    }
}

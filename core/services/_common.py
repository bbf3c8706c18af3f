"""Helpers shared by the services: translating database and storage errors, small checks."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from core.config import MAX_PAGE_SIZE
from core.services.errors import InvalidRequest, ServiceError, Unavailable
from core.storage import ObjectNotFound, StorageError, StorageUnavailable

__all__ = [
    "MAX_METADATA_BYTES",
    "check_page_limit",
    "map_db_errors",
    "map_storage_errors",
    "validate_metadata",
]

#: Largest ``metadata`` object accepted, in bytes of compact JSON.
MAX_METADATA_BYTES = 16 * 1024

# Errors that mean "the database cannot be used right now" (connection refused or lost, pool
# exhausted, SQLite busy): worth retrying later. Integrity and programming errors are not.
_DB_TRANSIENT: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


@contextlib.contextmanager
def map_db_errors(action: str) -> Iterator[None]:
    """Translate transient database errors raised in the block into ``Unavailable``, and a
    value the database cannot store (``DataError``: a NUL character in PostgreSQL text, a
    number out of range) into ``InvalidRequest``.

    A ``DBAPIError`` whose connection was invalidated (the server went away mid-statement)
    counts as transient too.
    """
    try:
        yield
    except _DB_TRANSIENT as exc:
        raise Unavailable(f"the database is unavailable ({action})") from exc
    except sa.exc.DataError as exc:
        if exc.connection_invalidated:
            raise Unavailable(f"the database is unavailable ({action})") from exc
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "invalid"
        raise InvalidRequest(f"a value of the request cannot be stored ({reason})") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable(f"the database is unavailable ({action})") from exc
        raise


@contextlib.contextmanager
def map_storage_errors(action: str) -> Iterator[None]:
    """Translate storage errors raised in the block: ``StorageUnavailable`` becomes
    ``Unavailable``; any other ``StorageError`` (except ``ObjectNotFound``, left to the caller)
    becomes a ``ServiceError`` with code ``storage_error``."""
    try:
        yield
    except ObjectNotFound:
        raise
    except StorageUnavailable as exc:
        raise Unavailable(f"storage is unavailable ({action}): {exc}") from exc
    except StorageError as exc:
        raise ServiceError(f"storage failed ({action}): {exc}", code="storage_error") from exc


def validate_metadata(metadata: Any, *, what: str = "metadata") -> dict[str, Any] | None:
    """Check the client's ``metadata``: None or a JSON object of at most
    :data:`MAX_METADATA_BYTES` bytes of UTF-8, with no NUL character (U+0000) and no lone
    surrogate (neither can be stored as text by PostgreSQL, so neither is taken anywhere);
    ``InvalidRequest`` otherwise."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    try:
        text = json.dumps(metadata, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} holds a lone surrogate (not valid Unicode text)") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{what} must be plain JSON: {exc}") from exc
    if any("\x00" in item for item in _strings(metadata)):
        raise InvalidRequest(f"{what} may not contain the NUL character (U+0000)")
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"{what} is {size} bytes of JSON; at most {MAX_METADATA_BYTES} are accepted",
            details={"max_bytes": MAX_METADATA_BYTES},
        )
    return metadata


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value: object keys, and string values at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def check_page_limit(limit: int) -> None:
    """``InvalidRequest`` unless ``limit`` is an integer in 1..:data:`MAX_PAGE_SIZE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be an integer in 1..{MAX_PAGE_SIZE}, not {limit!r}")


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    """An opaque keyset-pagination cursor for the row at (``created_at``, ``ident``)."""
    raw = json.dumps([created_at.isoformat(), ident.hex], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) of :func:`encode_cursor`; ``InvalidRequest`` if malformed."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        return created_at, uuid.UUID(hex=ident)
    except (ValueError, TypeError, binascii.Error, UnicodeError, AttributeError) as exc:
        raise InvalidRequest("malformed cursor: pass a next_cursor from a previous page") from exc


class _Keyed(Protocol):
    """A row with the keyset of the listings."""

    created_at: datetime
    id: uuid.UUID


_Row = TypeVar("_Row", bound=_Keyed)
_Query = TypeVar("_Query", bound="sa.Select[Any]")


def newest_first(
    query: _Query,
    created_at: Any,
    ident: Any,
    *,
    cursor: str | None,
    limit: int,
) -> _Query:
    """``query`` in keyset order, newest first, after ``cursor`` (of :func:`encode_cursor`),
    with ``limit + 1`` rows at most (the extra row tells a next page exists; see
    :func:`cut_page`). ``created_at`` and ``ident`` are the model's columns;
    ``InvalidRequest`` for a malformed cursor."""
    if cursor:
        after_created, after_id = decode_cursor(cursor)
        query = query.where(sa.tuple_(created_at, ident) < sa.tuple_(after_created, after_id))
    return query.order_by(created_at.desc(), ident.desc()).limit(limit + 1)


def cut_page(rows: list[_Row], limit: int) -> tuple[list[_Row], str | None]:
    """The first ``limit`` rows of a :func:`newest_first` result and the cursor of the next
    page (None on the last page)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)

"""Lower-layer exceptions that reach a caller as service errors, translated in ONE place.

The use cases translate what they expect (``core.services._common.map_db_errors``,
``map_storage_errors``); an exception of the database, storage or secret-box layer that
escapes them anyway (a connection lost while a dependency opened a session, a storage outage
met while streaming, a stored secret the configured keys cannot open) is turned into a
:class:`~core.services.errors.ServiceError` here, so the API's error mapping
(``api/errors.py``) knows service errors only and names no lower layer.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
import structlog

from core.db.secretbox import SecretDecryptionError
from core.services.errors import NotFound, ServiceError, Unavailable
from core.storage import ObjectNotFound, StorageUnavailable

__all__ = ["TRANSLATED", "as_service_error"]

log = structlog.get_logger(__name__)

#: The lower-layer exception types :func:`as_service_error` translates (registered as handlers
#: by the API).
TRANSLATED: Final[tuple[type[Exception], ...]] = (
    StorageUnavailable,
    ObjectNotFound,
    SecretDecryptionError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
)


def as_service_error(exc: BaseException) -> ServiceError | None:
    """The service error ``exc`` stands for, or None when it is none of :data:`TRANSLATED`.

    Parameters
    ----------
    exc
        An exception raised below the services.

    Returns
    -------
    ServiceError or None
        ``storage_unavailable`` / ``database_unavailable`` (``Unavailable``: HTTP 503,
        retry later), ``not_found`` (a stored object is gone: 404), or the secret box's own
        code (``secret_key_missing``, ``secret_format_unknown``: the server's keys, HTTP 500;
        logged as an error for the operator).
    """
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, StorageUnavailable):
        return Unavailable("object storage is unavailable; retry later", code=exc.code)
    if isinstance(exc, ObjectNotFound):
        return NotFound("the stored object does not exist")
    if isinstance(exc, SecretDecryptionError):
        log.error("secret_undecryptable", code=exc.code)
        return ServiceError(
            "a stored webhook signing secret cannot be decrypted with the configured keys "
            "(DIFFALL_WEBHOOKS__SECRET_KEYS); the operator has been told in the log",
            code=exc.code,
        )
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return Unavailable("the database is unavailable; retry later", code="database_unavailable")
    return None

"""Lower-layer errors become service errors in one place (api/errors.py names none of them)."""

from __future__ import annotations

import structlog
from sqlalchemy.exc import InterfaceError, OperationalError

from core.db.secretbox import SecretDecryptionError
from core.services.errors import NotFound, ServiceError, Unavailable
from core.services.translate import TRANSLATED, as_service_error
from core.storage import ObjectNotFound, StorageUnavailable


def test_each_lower_layer_error_has_its_service_error() -> None:
    cases = [
        (StorageUnavailable("s3 down"), Unavailable, "storage_unavailable"),
        (ObjectNotFound("heatmaps/x.png"), NotFound, "not_found"),
        (OperationalError("SELECT 1", {}, Exception("down")), Unavailable, "database_unavailable"),
        (InterfaceError("SELECT 1", {}, Exception("gone")), Unavailable, "database_unavailable"),
    ]
    for exc, kind, code in cases:
        translated = as_service_error(exc)
        assert isinstance(translated, kind) and translated.code == code, exc
        assert isinstance(exc, TRANSLATED)
    # A secret the configured keys cannot open: the server's fault, told to the operator.
    with structlog.testing.capture_logs() as logs:
        secret = as_service_error(SecretDecryptionError("no key opens it"))
    assert type(secret) is ServiceError and secret.code == "secret_key_missing"
    assert "no key" not in secret.message and "DIFFALL_WEBHOOKS__SECRET_KEYS" in secret.message
    assert [(e["event"], e["log_level"], e["code"]) for e in logs] == [
        ("secret_undecryptable", "error", "secret_key_missing")
    ]


def test_service_errors_pass_and_bugs_are_not_translated() -> None:
    error = Unavailable("broker down")
    assert as_service_error(error) is error
    assert as_service_error(ValueError("a bug")) is None
    assert as_service_error(KeyError("x")) is None

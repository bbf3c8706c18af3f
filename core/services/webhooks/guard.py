"""The SSRF guard as the webhook use cases see it: :mod:`core.netguard`'s answers as service errors.

A refused URL is :class:`ForbiddenDestination` (422 ``webhook_url_forbidden``); an address the
operator could open names the setting that does (``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``) in its
message and in ``details["setting"]``. A POST that got no answer is :class:`DeliveryError`
with one of :data:`DELIVERY_ERROR_CODES`. The rules themselves live in :mod:`core.netguard`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from core.config import ALLOWED_NETWORKS_ENV
from core.netguard.classify import MAX_URL_LENGTH, IPNetwork, RefusedURL, check_url_offline
from core.netguard.resolve import DEFAULT_RESOLVE_TIMEOUT_S, PinnedTarget, validate_url
from core.netguard.resolve import resolve_pinned as _resolve_pinned
from core.netguard.transport import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    SEND_ERROR_CODES,
    PostResult,
    SendFailed,
)
from core.netguard.transport import pinned_post as _pinned_post
from core.services.errors import InvalidRequest, ServiceError

__all__ = [
    "DELIVERY_ERROR_CODES",
    "DeliveryError",
    "ForbiddenDestination",
    "check_ad_hoc_url",
    "pinned_post",
    "resolve_pinned",
    "validate_webhook_url",
]

#: The stable codes :class:`DeliveryError` carries.
DELIVERY_ERROR_CODES = SEND_ERROR_CODES

_HINT = (
    f" An operator can allow a network with the setting {ALLOWED_NETWORKS_ENV} "
    "(comma-separated CIDR networks, e.g. 127.0.0.0/8,::1/128 for a receiver on this host)."
)


class ForbiddenDestination(InvalidRequest):
    """A webhook URL is malformed or points somewhere a webhook may not go (HTTP 422).

    ``details["reason"]`` says which rule refused it: ``length``, ``syntax``, ``scheme``,
    ``userinfo``, ``host``, ``port``, ``address`` (a forbidden IP address; for IP literals
    ``details["address"]`` is the normalised address; ``details["setting"]`` names the
    allow-list setting that could open it) or ``unresolvable`` (the name has no
    address, or resolution failed or timed out).
    """

    code = "webhook_url_forbidden"

    def __init__(self, message: str, *, reason: str = "address", **details: Any) -> None:
        super().__init__(message, details={"reason": reason, **details})
        self.reason = reason


class DeliveryError(ServiceError):
    """A webhook POST failed before an HTTP response arrived.

    ``code`` is one of :data:`DELIVERY_ERROR_CODES`: ``timeout`` (the total timeout expired),
    ``connection_error`` (refused, reset, unresolvable name, malformed HTTP answer),
    ``forbidden_destination`` (the URL fails the SSRF rules at send time; retrying will not
    help) or ``tls_error`` (handshake or certificate verification failed). ``duration_ms`` is the
    time spent, in milliseconds.
    """

    code = "connection_error"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        duration_ms: int = 0,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.duration_ms = duration_ms


def _explained(refusal: RefusedURL) -> tuple[str, dict[str, Any]]:
    """The refusal's message and details, naming the allow-list setting when it could help."""
    extra = {k: v for k, v in refusal.details.items() if k != "reason"}
    if not refusal.allow_listable:
        return refusal.message, extra
    return refusal.message + _HINT, {"setting": ALLOWED_NETWORKS_ENV, **extra}


def _forbidden(refusal: RefusedURL) -> ForbiddenDestination:
    message, details = _explained(refusal)
    return ForbiddenDestination(message, reason=refusal.reason, **details)


def validate_webhook_url(
    url: str,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
) -> None:
    """Check a webhook URL when it is registered (the rules: :mod:`core.netguard`).

    ``allowed_networks``: ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``, parsed; ``resolve_timeout_s``:
    limit on name resolution, seconds (> 0). ``ForbiddenDestination`` (422) when refused.
    """
    try:
        validate_url(url, allowed_networks=allowed_networks, resolve_timeout_s=resolve_timeout_s)
    except RefusedURL as exc:
        raise _forbidden(exc) from exc


def resolve_pinned(
    url: str,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
) -> PinnedTarget:
    """:func:`core.netguard.resolve.resolve_pinned`, refusals as ``ForbiddenDestination`` (422)."""
    try:
        return _resolve_pinned(
            url, allowed_networks=allowed_networks, resolve_timeout_s=resolve_timeout_s
        )
    except RefusedURL as exc:
        raise _forbidden(exc) from exc


def check_ad_hoc_url(url: Any, *, allowed_networks: Sequence[IPNetwork] = ()) -> str | None:
    """Check a per-comparison or per-batch ``webhook_url``: None, or an http(s) URL of at most
    :data:`~core.netguard.classify.MAX_URL_LENGTH` characters that is not a forbidden
    destination as far as can be told without DNS (:func:`core.netguard.classify.check_url_offline`;
    host names are checked again when the webhook is sent). Returns it; ``InvalidRequest`` for
    a value that is not text, ``ForbiddenDestination`` (422) for a refused URL."""
    if url is None:
        return None
    if not isinstance(url, str):
        raise InvalidRequest(f"webhook_url must be a URL of at most {MAX_URL_LENGTH} characters")
    try:
        return check_url_offline(url, allowed_networks=allowed_networks)
    except RefusedURL as exc:
        raise _forbidden(exc) from exc


def pinned_post(
    target_url: str | PinnedTarget,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    allowed_networks: Sequence[IPNetwork] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> PostResult:
    """:func:`core.netguard.transport.pinned_post` (same parameters and result), its failures
    as ``DeliveryError`` with the same stable code. ``ValueError`` for bad timeouts or headers."""
    try:
        return _pinned_post(
            target_url,
            content=content,
            headers=headers,
            timeout_s=timeout_s,
            body_timeout_s=body_timeout_s,
            allowed_networks=allowed_networks,
            ssl_context=ssl_context,
        )
    except SendFailed as exc:
        message, details = exc.message, exc.details
        if exc.refusal is not None:
            message, extra = _explained(exc.refusal)
            details = {"reason": exc.refusal.reason, **extra}
        raise DeliveryError(
            exc.code, message, duration_ms=exc.duration_ms, details=details or None
        ) from exc

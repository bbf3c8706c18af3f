"""Verify DiffALL webhook deliveries in your receiver (Standard Webhooks signatures).

Every delivery carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` headers; the signature is HMAC-SHA256 over ``id.timestamp.body`` with the
endpoint's ``whsec_...`` secret (https://www.standardwebhooks.com). During a secret rotation the
header carries two ``v1,`` signatures, one per secret, so a receiver holding either secret
verifies.

>>> from diffall.webhooks import WebhookVerificationError, verify_webhook
>>> def receive(headers, body):  # doctest: +SKIP
...     try:
...         event = verify_webhook(headers, body, "whsec_...")
...     except WebhookVerificationError:
...         return 400
...     print(event["type"], event["data"]["id"])
...     return 204

Pass the raw body bytes exactly as received: re-serialised JSON does not verify.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["DEFAULT_TOLERANCE_S", "WebhookVerificationError", "verify_webhook"]

#: How far a delivery's timestamp may be from the receiver's clock, seconds (as the spec advises).
DEFAULT_TOLERANCE_S = 300


def _signatures(header: str) -> list[bytes]:
    """The ``v1`` signatures of a ``webhook-signature`` header (others and junk are skipped)."""
    found: list[bytes] = []
    for item in header.split():
        version, _, encoded = item.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Sequence[str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> dict[str, Any]:
    """Check a delivery's signature and timestamp; return its JSON payload.

    Parameters
    ----------
    headers : mapping of str to str
        The request headers (any letter case), e.g. ``request.headers`` of Flask, FastAPI or
        Django; must hold ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.
    body : bytes or str
        The raw request body, exactly as received (UTF-8).
    secret : str or sequence of str
        The endpoint's signing secret (``whsec_`` + base64), or several: the delivery verifies
        if any of its ``v1`` signatures was made with any of them (use both while rotating).
    tolerance_s : int
        Largest accepted difference between the delivery's timestamp and this machine's clock,
        seconds (>= 0; default 300), in either direction: protects against replays.

    Returns
    -------
    dict
        The payload ``{"type": ..., "timestamp": ..., "data": {...}}``.

    Raises
    ------
    WebhookVerificationError
        A header is missing or malformed, the timestamp is outside the tolerance, no signature
        matches, or the verified body is not a JSON object.
    ValueError
        No secret was given, a secret is not valid base64, or ``tolerance_s`` is negative.

    Notes
    -----
    The HMAC is computed by ``standardwebhooks.Webhook.sign`` (the reference implementation);
    its ``Webhook.verify`` is not called directly because its tolerance is fixed at five
    minutes, it accepts only one secret, and a malformed signature entry crashes it.
    """
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("at least one webhook secret is needed")
    webhooks: list[Webhook] = []
    for item in secrets:
        try:
            webhooks.append(Webhook(item))
        except Exception as exc:  # binascii.Error, EmptyWebhookSecretError
            raise ValueError("a webhook secret is not 'whsec_' + base64 of its key") from exc

    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "").strip()
    timestamp_text = lowered.get("webhook-timestamp", "").strip()
    signature_header = lowered.get("webhook-signature", "")
    if not (msg_id and timestamp_text and signature_header):
        raise WebhookVerificationError("Missing required headers")
    if not (timestamp_text.isascii() and timestamp_text.isdigit()):
        raise WebhookVerificationError("Invalid Signature Headers")
    timestamp = int(timestamp_text)
    now = datetime.now(UTC).timestamp()
    if timestamp < now - tolerance_s:
        raise WebhookVerificationError("Message timestamp too old")
    if timestamp > now + tolerance_s:
        raise WebhookVerificationError("Message timestamp too new")

    try:
        text = body if isinstance(body, str) else bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookVerificationError("The body is not UTF-8") from exc
    passed = _signatures(signature_header)
    when = datetime.fromtimestamp(timestamp, UTC)
    for webhook in webhooks:
        expected = base64.b64decode(webhook.sign(msg_id, when, text).partition(",")[2])
        # compare against every candidate (no early exit on the first miss)
        if any([hmac.compare_digest(expected, candidate) for candidate in passed]):
            break
    else:
        raise WebhookVerificationError("No matching signature found")

    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WebhookVerificationError("The body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookVerificationError("The body is not a JSON object")
    return payload

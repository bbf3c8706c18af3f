"""``diffall.webhooks.verify_webhook``: deliveries signed by standardwebhooks' reference signer
(``Webhook(secret).sign``) verify; tampering, stale timestamps and wrong secrets do not."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from standardwebhooks import Webhook

from diffall.webhooks import WebhookVerificationError, verify_webhook

_rng = np.random.default_rng(20240604)
OLD_SECRET = "whsec_" + base64.b64encode(_rng.bytes(32)).decode()
NEW_SECRET = "whsec_" + base64.b64encode(_rng.bytes(32)).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(_rng.bytes(32)).decode()

PAYLOAD = json.dumps(
    {
        "type": "comparison.succeeded",
        "timestamp": "2024-06-04T12:00:00Z",
        "data": {"id": "0b6f3c1e", "state": "succeeded", "result": {"ssim": 0.9731}, "n": "é"},
    },
    separators=(",", ":"),
    ensure_ascii=False,
)


def signed(
    *secrets: str, msg_id: str = "msg_2hGqNw", at: datetime | None = None, body: str = PAYLOAD
) -> dict[str, str]:
    """Headers of a delivery signed with each secret by the reference implementation."""
    at = at or datetime.now(UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, at, body) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


def test_a_signed_delivery_verifies_and_returns_the_payload() -> None:
    headers = signed(NEW_SECRET)
    assert verify_webhook(headers, PAYLOAD.encode(), NEW_SECRET) == json.loads(PAYLOAD)
    assert verify_webhook(headers, PAYLOAD, NEW_SECRET)["data"]["n"] == "é"
    # the reference verifier agrees
    assert Webhook(NEW_SECRET).verify(PAYLOAD, headers) == json.loads(PAYLOAD)


def test_header_names_are_case_insensitive() -> None:
    headers = {name.title(): value for name, value in signed(NEW_SECRET).items()}
    assert "Webhook-Signature" in headers
    assert verify_webhook(headers, PAYLOAD, NEW_SECRET)["type"] == "comparison.succeeded"


@pytest.mark.parametrize(
    "body",
    [
        PAYLOAD.replace("0.9731", "0.9732"),
        PAYLOAD + " ",
        PAYLOAD.replace(",", ", "),  # same JSON, different bytes
        "",
    ],
)
def test_a_tampered_body_fails(body: str) -> None:
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify_webhook(signed(NEW_SECRET), body.encode(), NEW_SECRET)


def test_tampered_id_or_timestamp_fails() -> None:
    headers = signed(NEW_SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**headers, "webhook-id": "msg_other"}, PAYLOAD, NEW_SECRET)
    later = str(int(headers["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**headers, "webhook-timestamp": later}, PAYLOAD, NEW_SECRET)


def test_old_and_future_timestamps_fail_outside_the_tolerance() -> None:
    now = datetime.now(UTC)
    old = signed(NEW_SECRET, at=now - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(old, PAYLOAD, NEW_SECRET)
    future = signed(NEW_SECRET, at=now + timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify_webhook(future, PAYLOAD, NEW_SECRET)
    # a wider tolerance accepts both, a tighter one refuses a 2-minute-old delivery
    assert verify_webhook(old, PAYLOAD, NEW_SECRET, tolerance_s=3600)["type"]
    assert verify_webhook(future, PAYLOAD, NEW_SECRET, tolerance_s=3600)["type"]
    recent = signed(NEW_SECRET, at=now - timedelta(minutes=2))
    assert verify_webhook(recent, PAYLOAD, NEW_SECRET)["type"]
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(recent, PAYLOAD, NEW_SECRET, tolerance_s=60)


def test_two_signatures_verify_with_either_secret() -> None:
    headers = signed(OLD_SECRET, NEW_SECRET)
    assert len(headers["webhook-signature"].split()) == 2
    assert verify_webhook(headers, PAYLOAD, OLD_SECRET)["type"]
    assert verify_webhook(headers, PAYLOAD, NEW_SECRET)["type"]
    assert verify_webhook(headers, PAYLOAD, [OTHER_SECRET, NEW_SECRET])["type"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, PAYLOAD, OTHER_SECRET)


def test_a_receiver_holding_both_secrets_verifies_either_signature() -> None:
    for secret in (OLD_SECRET, NEW_SECRET):
        assert verify_webhook(signed(secret), PAYLOAD, (OLD_SECRET, NEW_SECRET))["type"]


def test_a_wrong_secret_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify_webhook(signed(NEW_SECRET), PAYLOAD, OTHER_SECRET)


def test_a_secret_without_the_prefix_is_the_same_key() -> None:
    bare = NEW_SECRET.removeprefix("whsec_")
    assert verify_webhook(signed(NEW_SECRET), PAYLOAD, bare)["type"]


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_fail(missing: str) -> None:
    headers = signed(NEW_SECRET)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match="Missing"):
        verify_webhook(headers, PAYLOAD, NEW_SECRET)


@pytest.mark.parametrize("timestamp", ["1.7e9", "-5", "abc", "١٧١٧٥٠٠٠٠٠"])
def test_malformed_timestamps_fail(timestamp: str) -> None:
    headers = {**signed(NEW_SECRET), "webhook-timestamp": timestamp}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, PAYLOAD, NEW_SECRET)


def test_malformed_signature_entries_are_skipped_not_fatal() -> None:
    headers = signed(NEW_SECRET)
    good = headers["webhook-signature"]
    junk = "v1 v1, v1,!!!notbase64 v2,AAAA garbage"
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify_webhook({**headers, "webhook-signature": junk}, PAYLOAD, NEW_SECRET)
    mixed = {**headers, "webhook-signature": f"{junk} {good}"}
    assert verify_webhook(mixed, PAYLOAD, NEW_SECRET)["type"]
    # a v2 entry carrying the right bytes does not count as v1
    v2 = {**headers, "webhook-signature": good.replace("v1,", "v2,")}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(v2, PAYLOAD, NEW_SECRET)


def test_a_signed_body_that_is_not_a_json_object_fails() -> None:
    for body in ("[1, 2]", "not json"):
        with pytest.raises(WebhookVerificationError, match="JSON"):
            verify_webhook(signed(NEW_SECRET, body=body), body, NEW_SECRET)


def test_a_body_that_is_not_utf8_fails() -> None:
    with pytest.raises(WebhookVerificationError, match="UTF-8"):
        verify_webhook(signed(NEW_SECRET), b"\xff\xfe", NEW_SECRET)


def test_bad_arguments() -> None:
    headers = signed(NEW_SECRET)
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(headers, PAYLOAD, [])
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(headers, PAYLOAD, "whsec_")
    with pytest.raises(ValueError, match="tolerance"):
        verify_webhook(headers, PAYLOAD, NEW_SECRET, tolerance_s=-1)

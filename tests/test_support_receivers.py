"""tests/support/receivers.py: the webhook receiver answers as scripted and records what it got;
``verify`` is the standard library's check; the inline queue keeps and drains deliveries."""

from __future__ import annotations

import uuid

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.receivers import InlineQueue, Received, Receiver, Reply, verify


def test_receiver_scripts_replies_and_records_requests(receiver: Receiver) -> None:
    receiver.script("/a", Reply(500, body=b"no"), Reply(201, {"x-test": "1"}))
    with httpx.Client() as client:
        answers = [client.post(receiver.url("/a"), content=b"{}") for _ in range(3)]
        other = client.post(receiver.url("/b"), content=b"[]")
    assert [a.status_code for a in answers] == [500, 201, 201]  # the last reply repeats
    assert answers[0].text == "no" and answers[1].headers["x-test"] == "1"
    assert other.status_code == 200
    assert [r.body for r in receiver.wait_for("/a", 3)] == [b"{}"] * 3
    assert receiver.received("/b")[0].body == b"[]"


def test_receiver_hangs_when_told(receiver: Receiver) -> None:
    receiver.script("/slow", Reply(delay_s=5.0))
    with httpx.Client() as client, pytest.raises(httpx.ReadTimeout):
        client.post(receiver.url("/slow"), content=b"{}", timeout=0.3)


def test_verify_uses_the_standard_webhooks_library() -> None:
    # A request signed by the library's own Webhook.sign verifies; a wrong secret does not.
    from datetime import UTC, datetime

    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    other = "whsec_" + "Ab" * 16
    now = datetime.now(UTC)
    body = '{"type":"ping"}'
    request = Received(
        path="/",
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_1", now, body),
        },
        body=body.encode(),
        at=0.0,
    )
    assert verify(secret, request) == {"type": "ping"}
    with pytest.raises(WebhookVerificationError):
        verify(other, request)


def test_inline_queue_keeps_and_drains() -> None:
    queue = InlineQueue()
    pair = (uuid.uuid4(), uuid.uuid4())
    queue.send_delivery(*pair)
    assert queue.sent == [pair]

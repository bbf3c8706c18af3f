"""A delivery's hard limits: ``forbidden_destination`` fails it at once (no retry can change
the SSRF verdict), and one total time limit holds however slowly a receiver sends.

Real delivery code (:func:`deliver` through :func:`pump`) on SQLite and PostgreSQL, against a
real receiver: a raw socket server thread on loopback that answers ``200`` and then trickles
its body one byte at a time (or never finishes its headers).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Tenant, WebhookDeliveryState
from core.services.webhooks.guard import DeliveryError, pinned_post
from core.services.webhooks.policy import DeliveryPolicy
from tests.support.receivers import Receiver, Reply, pump
from tests.support.webhooks import (
    LOOPBACK,
    add_endpoint,
    add_ping,
    attempts_of,
    delivery_is_final,
    delivery_state,
)

SessionFactory = sessionmaker[Session]

#: How long the trickling receiver would go on if nobody hung up, seconds.
TRICKLE_FOR_S = 60.0


@dataclass
class Trickler:
    """A loopback HTTP receiver that sends ``head`` at once, then one byte every ``every_s``."""

    head: bytes
    every_s: float = 0.05
    port: int = 0
    #: Per connection: seconds from accepting it to the client hanging up (None: still open).
    held_s: list[float | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _serve_one(conn: socket.socket, trickler: Trickler, index: int, stop: threading.Event) -> None:
    accepted = time.monotonic()
    with conn:
        conn.settimeout(5.0)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        try:
            conn.sendall(trickler.head)
            end = accepted + TRICKLE_FOR_S
            while time.monotonic() < end and not stop.wait(trickler.every_s):
                conn.sendall(b"x")
        except OSError:  # the client hung up: how long did it hold the connection?
            trickler.held_s[index] = time.monotonic() - accepted


@contextmanager
def trickling(head: bytes) -> Iterator[Trickler]:
    """Run a :class:`Trickler` on a free loopback port until the block ends."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    trickler = Trickler(head=head, port=server.getsockname()[1])
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            trickler.held_s.append(None)
            thread = threading.Thread(
                target=_serve_one, args=(conn, trickler, len(trickler.held_s) - 1, stop)
            )
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    try:
        yield trickler
    finally:
        stop.set()
        acceptor.join()
        for thread in threads:
            thread.join()
        server.close()


BODY_AFTER_200 = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n"
ENDLESS_HEADERS = b"HTTP/1.1 200 OK\r\nx-slow: "


def test_forbidden_destination_fails_at_once(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    # Registered while loopback was allowed; at send time it is not: the SSRF verdict will not
    # change on a retry, so the first refusal is final despite five attempts in the schedule.
    endpoint = add_endpoint(sessions, tenant, receiver.url("/private"))
    ident = add_ping(sessions, tenant, endpoint)
    strict = DeliveryPolicy(schedule_s=(0.0,) * 5, jitter=0.0, timeout_s=1.0, lease_s=5.0)
    pump(sessions, strict, lambda: delivery_is_final(sessions, ident))
    assert delivery_state(sessions, ident) is WebhookDeliveryState.FAILED
    assert [a.error_code for a in attempts_of(sessions, ident)] == ["forbidden_destination"]
    assert receiver.received("/private") == []


def test_a_failure_that_may_pass_is_still_retried(
    sessions: SessionFactory, tenant: Tenant, receiver: Receiver
) -> None:
    endpoint = add_endpoint(sessions, tenant, receiver.url("/flaky"))
    ident = add_ping(sessions, tenant, endpoint)
    loopback = DeliveryPolicy(
        schedule_s=(0.0,) * 3, jitter=0.0, timeout_s=1.0, lease_s=5.0, allowed_networks=LOOPBACK
    )
    receiver.script("/flaky", Reply(500), Reply(200))
    pump(sessions, loopback, lambda: delivery_is_final(sessions, ident))
    assert delivery_state(sessions, ident) is WebhookDeliveryState.SUCCEEDED
    assert [a.status_code for a in attempts_of(sessions, ident)] == [500, 200]


def test_a_body_trickled_after_200_does_not_hold_the_delivery(
    sessions: SessionFactory, tenant: Tenant
) -> None:
    timeout_s = 3.0
    policy = DeliveryPolicy(
        schedule_s=(0.0,) * 3,
        jitter=0.0,
        timeout_s=timeout_s,
        lease_s=10.0,
        allowed_networks=LOOPBACK,
    )
    with trickling(BODY_AFTER_200) as receiver:
        ident = add_ping(sessions, tenant, add_endpoint(sessions, tenant, receiver.url))
        pump(sessions, policy, lambda: delivery_is_final(sessions, ident), timeout=timeout_s * 4)
        (attempt,) = attempts_of(sessions, ident)
        # The 200 counts; what of the body arrived in time is kept.
        assert delivery_state(sessions, ident) is WebhookDeliveryState.SUCCEEDED
        assert attempt.status_code == 200
        assert attempt.response_body and set(attempt.response_body) == {"x"}
        assert attempt.duration_ms is not None and attempt.duration_ms <= timeout_s * 1000 + 100
        # The delivery hung up on the receiver within the limit (it would trickle for 60 s).
        deadline = time.monotonic() + 5.0
        while receiver.held_s[0] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        held = receiver.held_s[0]
        assert held is not None and held <= timeout_s + 0.5


def test_the_total_limit_covers_the_body_whatever_the_body_timeout() -> None:
    with trickling(BODY_AFTER_200) as receiver:
        result = pinned_post(
            receiver.url,
            content=b"{}",
            headers={"content-type": "application/json"},
            timeout_s=1.5,
            body_timeout_s=30.0,  # longer than the total: the total wins
            allowed_networks=LOOPBACK,
        )
    assert result.status_code == 200
    assert result.duration_ms <= 1500 + 100
    assert 0 < len(result.body_text) < 1024


def test_headers_that_never_end_time_out_within_the_limit() -> None:
    with trickling(ENDLESS_HEADERS) as receiver, pytest.raises(DeliveryError) as info:
        pinned_post(
            receiver.url,
            content=b"{}",
            headers={"content-type": "application/json"},
            timeout_s=1.5,
            allowed_networks=LOOPBACK,
        )
    assert info.value.code == "timeout"
    assert info.value.duration_ms is not None and info.value.duration_ms <= 1500 + 100

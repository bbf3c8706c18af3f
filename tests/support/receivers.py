"""Webhook receivers for the tests: a real HTTP receiver on loopback (and its ``receiver``
fixture), and deliveries run in the test process (:class:`InlineQueue`, :func:`pump`).

:class:`Receiver` runs a threaded ``http.server`` on ``127.0.0.1`` and a free port. Each path
answers from a script (:meth:`Receiver.script`: status, headers, body, delay), the last reply
repeating; every request is recorded with its headers and body, and :func:`verify` checks its
signature with the ``standardwebhooks`` library, independently of the service's signing code.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook

from core.services.webhooks.delivery import DeliveryResult, deliver
from core.services.webhooks.dispatch import dispatch_due
from core.services.webhooks.policy import DeliveryPolicy

__all__ = [
    "InlineQueue",
    "Received",
    "Receiver",
    "Reply",
    "pump",
    "receiver",
    "running_receiver",
    "signatures",
    "verify",
]


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0  # wait before answering (a hanging receiver)


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


class Receiver:
    """A webhook receiver on ``127.0.0.1`` (see the module docstring). Close it when done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._scripts: dict[str, list[Reply]] = {}
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                reply = receiver._record(
                    Received(
                        path=path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        at=time.monotonic(),
                    )
                )
                if reply.delay_s and receiver._stop.wait(reply.delay_s):
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _record(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            script = self._scripts.get(received.path, [])
            if len(script) > 1:
                return script.pop(0)
            return script[0] if script else Reply()

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies`` in order (the last repeats)."""
        with self._lock:
            self._scripts[path] = list(replies)

    def received(self, path: str | None = None) -> list[Received]:
        """The requests so far (to ``path`` only, if given), oldest first."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(self, path: str, count: int = 1, *, timeout: float = 20.0) -> list[Received]:
        """Wait until ``count`` requests reached ``path``; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.received(path)) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(self.received(path))} of {count} requests reached {path}")
            time.sleep(0.02)
        return self.received(path)

    def close(self) -> None:
        """Stop serving (hanging replies are released)."""
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A :class:`Receiver`, closed on exit."""
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


def verify(secret: str, request: Received) -> dict[str, Any]:
    """Verify a request's signature with ``standardwebhooks`` and return the parsed payload.

    Raises ``WebhookVerificationError`` when no signature matches ``secret``; the delivery must
    also verify with svix's verifier.
    """
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    # svix's verifier (a second, independently packaged Standard Webhooks consumer) must agree.
    SvixWebhook(secret).verify(request.body, dict(request.headers))
    return payload


def signatures(request: Received) -> list[str]:
    """The ``v1,`` signatures of a request's ``webhook-signature`` header."""
    return request.headers["webhook-signature"].split(" ")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running :class:`Receiver` for one test (registered for every test in tests/conftest.py)."""
    with running_receiver() as running:
        yield running


# -- running deliveries in the test process ---------------------------------------------------


class InlineQueue:
    """A ``DeliveryQueue`` that keeps the claimed deliveries; :meth:`drain` sends them here."""

    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, uuid.UUID]] = []

    def send_delivery(self, delivery_id: uuid.UUID, claim_id: uuid.UUID) -> None:
        self.sent.append((delivery_id, claim_id))

    def drain(
        self, sessions: sessionmaker[Session], policy: DeliveryPolicy, *, workers: int = 1
    ) -> list[DeliveryResult | None]:
        """Run every kept delivery (on ``workers`` threads, like as many worker processes)."""
        pending, self.sent = self.sent, []

        def run(item: tuple[uuid.UUID, uuid.UUID]) -> DeliveryResult | None:
            return deliver(sessions, delivery_id=item[0], claim_id=item[1], policy=policy)

        if workers == 1:
            return [run(item) for item in pending]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, pending))


def pump(
    sessions: sessionmaker[Session],
    policy: DeliveryPolicy,
    until: Callable[[], bool],
    *,
    timeout: float = 15.0,
    workers: int = 1,
) -> None:
    """Dispatch and deliver in a loop (dispatcher + workers in one) until ``until()`` holds."""
    queue = InlineQueue()
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail("the deliveries did not reach the expected state in time")
        with sessions() as session:
            dispatch_due(session, queue, policy=policy)
        queue.drain(sessions, policy, workers=workers)
        time.sleep(0.02)

"""The webhook benchmark's receiver: a threaded ``http.server`` on loopback in the benchmark's
process that verifies every delivery's signature with ``standardwebhooks`` and records its
arrival time per ``webhook-id``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def posix_s(value: str | datetime | None) -> float | None:
    """POSIX seconds of an aware datetime (or ISO text); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


#: Event type the benchmark's endpoint subscribes to (the receiver counts its subjects).
EVENT = "comparison.succeeded"


@dataclass
class Arrival:
    """The first arrival of one ``webhook-id`` at the receiver.

    Attributes
    ----------
    msg_id : str
        The ``webhook-id`` header.
    at : float
        ``time.time()`` when the request's headers had been read (the same clock as the
        database's timestamps: one machine).
    type : str
        The payload's ``type`` (``ping``, ``comparison.succeeded`` ...); ``?`` if unverified.
    subject : str or None
        ``data.id`` of the payload (the comparison's id) when there is one.
    count : int
        Requests received with this ``webhook-id`` (more than 1: a retry or a duplicate).
    """

    msg_id: str
    at: float
    type: str
    subject: str | None
    count: int = 1


class Receiver:
    """A webhook receiver on ``127.0.0.1`` (threaded ``http.server``) that verifies every
    request with ``standardwebhooks`` and records the first arrival of each ``webhook-id``.

    Every request is answered :attr:`answer` (200 unless a test sets another; a bad signature
    is counted in :attr:`bad_signatures`, not refused, so that it cannot cause retries that
    would distort the timings). :meth:`go_down` and :meth:`come_up` stop and restart listening
    on the same port. Close it with :meth:`close`.
    """

    def __init__(self) -> None:
        self.secret: str | None = None
        self._lock = threading.Lock()
        self.arrivals: dict[str, Arrival] = {}
        self.by_subject: dict[str, Arrival] = {}
        self.bad_signatures = 0
        self.requests = 0
        #: Status answered to every request; anything but 2xx is counted in :attr:`refused`,
        #: not recorded as an arrival (the sender must retry it).
        self.answer = 200
        self.refused = 0
        self.port = 0
        self._serve()

    def _serve(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.answer
                if 200 <= status < 300:
                    receiver._record(at, headers, body)
                else:
                    with receiver._lock:
                        receiver.requests += 1
                        receiver.refused += 1
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webhook-receiver",
            daemon=True,
        )
        self._thread.start()

    def go_down(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`come_up`."""
        self.close()

    def come_up(self) -> None:
        """Listen again, on the same port."""
        self._serve()

    def url(self, path: str = "/hooks") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _record(self, at: float, headers: dict[str, str], body: bytes) -> None:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        msg_id = headers.get("webhook-id", "")
        kind, subject, verified = "?", None, False
        if self.secret is not None:
            try:
                payload = Webhook(self.secret).verify(body, headers)
                verified = True
                kind = str(payload.get("type"))
                data = payload.get("data") or {}
                subject = str(data["id"]) if isinstance(data, dict) and "id" in data else None
            except WebhookVerificationError:
                pass
        with self._lock:
            self.requests += 1
            if not verified:
                self.bad_signatures += 1
                return
            known = self.arrivals.get(msg_id)
            if known is not None:
                known.count += 1
                return
            arrival = Arrival(msg_id=msg_id, at=at, type=kind, subject=subject)
            self.arrivals[msg_id] = arrival
            if subject is not None and kind == EVENT:
                self.by_subject[subject] = arrival

    def arrived(self, msg_ids: Sequence[str]) -> list[Arrival]:
        """The arrivals among ``msg_ids`` so far."""
        with self._lock:
            return [self.arrivals[m] for m in msg_ids if m in self.arrivals]

    def for_subjects(self, subjects: Sequence[str]) -> dict[str, Arrival]:
        """``comparison.succeeded`` arrivals of the given comparison ids so far."""
        with self._lock:
            return {s: self.by_subject[s] for s in subjects if s in self.by_subject}

    def duplicates(self) -> int:
        """Requests beyond the first of their ``webhook-id``."""
        with self._lock:
            return sum(a.count - 1 for a in self.arrivals.values())

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

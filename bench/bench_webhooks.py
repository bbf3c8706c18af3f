"""Webhook benchmark: delivery throughput, and the delay from a comparison ending to its webhook.

Run it from the repository root (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 must be
up)::

    .venv/bin/python -m bench.bench_webhooks [--rate 50] [--seconds 10] [--workers N]
                                             [--deliveries 500] [--json OUT]

Set-up (untimed): the real stack of :mod:`bench.lib.stack` (a fresh PostgreSQL database, an
empty Redis database, moto's S3 server, the API under uvicorn) with the normal worker set-up:
ONE Celery worker with ``--concurrency N`` (default: the service's default,
``WorkerSettings.processes``: the CPUs + 1) consuming
``interactive,batch,maintenance`` with its beat embedded (``--beat``, which sends the webhook
dispatcher every ``webhooks.dispatch_interval_s``), as ``diffall serve`` runs it; every service
setting at its default but ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32``. A receiver on
loopback (a threaded ``http.server`` in this process) verifies every delivery's signature with
``standardwebhooks`` and records its arrival time per ``webhook-id``; an endpoint for
``comparison.succeeded`` is registered through ``POST /v1/webhooks``.

1. **Delivery throughput**: ``--deliveries`` ping events are written through the service
   function the API uses (:func:`core.services.webhooks.endpoints.create_ping`), all in one
   transaction, so the backlog appears at once when it commits; then one dispatcher pass is
   requested (:meth:`core.services.jobqueue.CeleryDeliveryQueue.kick`). Timed from the commit to
   the last arrival: deliveries per second with the normal worker count.
2. **Latency at ``--rate`` comparisons per second**: tiny PNG pairs (``--size``, 32x32 by
   default: the engine takes about 1 ms) are submitted through ``POST /v1/comparisons`` by a
   paced client (open loop: request i is sent at t0 + i / rate by a pool of sender threads) for
   ``--seconds`` seconds. For each comparison, the delay from its ``finished_at`` (read from the
   database) to the arrival of its ``comparison.succeeded`` webhook at the receiver. Median and
   p99 are judged (targets < 1 s and < 3 s); every webhook must arrive.

Everything started is stopped, the database dropped and the Redis database flushed in a
``finally``. The script exits 0 whatever the figures: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog
from rich.console import Console
from rich.table import Table

from bench.lib.client import FINAL, fmt, upload_pairs
from bench.lib.machine import (
    MACHINE_BUSY,
    cpu_delta,
    cpu_snapshot,
    load_average,
    machine_cpus,
    machine_info,
    progress,
)
from bench.lib.stack import ServiceStack
from core.config import WorkerSettings
from tests.support.processes import wait_until

#: ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS`` of the stack: the receiver listens on 127.0.0.1.
ALLOWED_NETWORKS = "127.0.0.1/32"
#: Comparisons submitted per second in the latency window.
DEFAULT_RATE = 50.0
#: Seconds the paced submission lasts.
DEFAULT_SECONDS = 10.0
#: Ping deliveries of the throughput backlog.
DEFAULT_DELIVERIES = 500
#: Side of the square test images, in pixels.
DEFAULT_SIZE = 32
#: Distinct image pairs, reused cyclically.
DEFAULT_DISTINCT = 4
#: Seed of the first image pair (pair i uses seed + i).
DEFAULT_SEED = 2024
#: Client threads sending the paced requests (an open loop: a slow answer delays no later
#: request while a thread is free).
DEFAULT_SENDERS = 16
#: Target: median seconds from a comparison's ``finished_at`` to its webhook's arrival, below.
TARGET_MEDIAN_S = 1.0
#: Target: 99th percentile of that delay, below (seconds).
TARGET_P99_S = 3.0
#: Share of ``--rate`` the comparisons must actually finish at for the latency to count as
#: measured "at that rate".
RATE_TOLERANCE = 0.95
#: Seconds between two polls of the database while waiting for stragglers.
POLL_S = 0.2
#: Event type the benchmark's endpoint subscribes to.
EVENT = "comparison.succeeded"
#: Missing comparison ids listed in the report (the count is always complete).
MISSING_SHOWN = 20


# --------------------------------------------------------------------------------------------
# Configuration and small helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WebhookBenchConfig:
    """What one run does.

    Attributes
    ----------
    workers : int
        Celery worker concurrency (prefork pool processes, >= 1).
    rate : float
        Comparisons submitted per second in the latency window (> 0).
    seconds : float
        Length of the paced submission, seconds (> 0); ``round(rate * seconds)`` comparisons.
    deliveries : int
        Ping deliveries of the throughput backlog (>= 0; 0 skips that step).
    size : int
        Side of the square PNG test images, pixels (8..512).
    distinct : int
        Distinct image pairs, reused cyclically (>= 1).
    seed : int
        Seed of the first image pair.
    senders : int
        Client threads sending the paced requests (>= 1).
    drain_s : float
        Seconds to wait, after the last submission or the backlog's commit, for every
        comparison to end and every webhook to arrive (> 0).
    timeout_s : float
        Seconds a process may take to start (> 0).
    webhook_workers : int
        Threads of the delivery worker consuming only the ``maintenance`` queue (>= 0; 0: none,
        the set-up before ``diffall serve`` and compose ran one; see
        :func:`webhook_worker_argv`).
    """

    workers: int
    rate: float = DEFAULT_RATE
    seconds: float = DEFAULT_SECONDS
    deliveries: int = DEFAULT_DELIVERIES
    size: int = DEFAULT_SIZE
    distinct: int = DEFAULT_DISTINCT
    seed: int = DEFAULT_SEED
    senders: int = DEFAULT_SENDERS
    drain_s: float = 60.0
    timeout_s: float = 60.0
    webhook_workers: int = 0

    def __post_init__(self) -> None:
        if min(self.workers, self.distinct, self.senders) < 1:
            raise ValueError("workers, distinct and senders must be >= 1")
        if self.deliveries < 0 or self.webhook_workers < 0:
            raise ValueError("deliveries and webhook_workers must be >= 0")
        if not (self.rate > 0 and self.seconds > 0 and self.drain_s > 0 and self.timeout_s > 0):
            raise ValueError("rate, seconds, drain_s and timeout_s must be > 0")
        if not 8 <= self.size <= 512:
            raise ValueError("size must be within 8..512 pixels")
        if round(self.rate * self.seconds) < 1:
            raise ValueError("rate * seconds must make at least one comparison")

    @property
    def comparisons(self) -> int:
        """Comparisons of the latency window: ``round(rate * seconds)``."""
        return round(self.rate * self.seconds)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, linear interpolation) of ``values``; None when empty."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, median, p99 and maximum of ``values`` (None for an empty sequence)."""

    def rnd(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "n": len(values),
        "median": rnd(percentile(values, 50)),
        "p99": rnd(percentile(values, 99)),
        "max": rnd(max(values) if values else None),
    }


def make_pairs(distinct: int, size: int, *, seed: int) -> list[tuple[bytes, bytes]]:
    """PNG bytes of ``distinct`` tiny pairs: A random RGB noise (``default_rng(seed + i)``), B
    the same with one inverted square (a localised edit), both ``size`` x ``size``.

    Returns
    -------
    list of tuple of bytes
        ``[(png_a, png_b), ...]``; A and B of a pair differ.
    """
    from bench.images import png_bytes

    out = []
    for i in range(distinct):
        rng = np.random.default_rng(seed + i)
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = a.copy()
        lo, hi = size // 4, size // 2
        b[lo:hi, lo:hi] = 255 - b[lo:hi, lo:hi]
        out.append((png_bytes(a), png_bytes(b)))
    return out


def _ts(value: str | datetime | None) -> float | None:
    """POSIX seconds of an aware datetime (or ISO text); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


# --------------------------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------------------------


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

    Every request is answered 200 (a bad signature is counted in :attr:`bad_signatures`, not
    refused, so that it cannot cause retries that would distort the timings). Close it with
    :meth:`close`.
    """

    def __init__(self) -> None:
        self.secret: str | None = None
        self._lock = threading.Lock()
        self.arrivals: dict[str, Arrival] = {}
        self.by_subject: dict[str, Arrival] = {}
        self.bad_signatures = 0
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(at, headers, body)
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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


# --------------------------------------------------------------------------------------------
# The stack: bench.lib.stack's, plus the worker's beat and the allow-list
# --------------------------------------------------------------------------------------------


def worker_argv(*, concurrency: int, schedule: Path) -> list[str]:
    """The normal worker of ``diffall serve``: prefork, ``concurrency`` processes, the three
    queues, the beat embedded (``--beat``, schedule file ``schedule``)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "--app=worker.celery_app",
        "worker",
        "--beat",
        f"--schedule={schedule}",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "--queues=interactive,batch,maintenance",
        f"--hostname=bench-hooks-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]


def webhook_worker_argv(*, threads: int) -> list[str]:
    """The delivery worker (``--webhook-worker N``, as ``diffall serve`` runs it): only the
    ``maintenance`` queue (deliveries, dispatcher passes, sweeps), a pool of ``threads``
    threads (a delivery waits on the network, not the CPU), no beat."""
    return [
        sys.executable,
        "-m",
        "celery",
        "--app=worker.celery_app",
        "worker",
        "--pool=threads",
        f"--concurrency={threads}",
        "--queues=maintenance",
        f"--hostname=bench-deliveries-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]


class WebhookStack(ServiceStack):
    """:class:`bench.lib.stack.ServiceStack` with the normal worker set-up of
    ``diffall serve``: the beat runs inside the worker (``--beat``), and every process gets
    ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS`` (the receiver is on loopback).

    Parameters
    ----------
    workers : int
        Celery worker concurrency (>= 1).
    timeout_s : float
        Seconds a process may take to start.
    webhook_workers : int
        Threads of an extra worker consuming only ``maintenance`` (0: none, the normal
        set-up; see :func:`webhook_worker_argv`).
    """

    def __init__(self, *, workers: int, timeout_s: float = 60.0, webhook_workers: int = 0) -> None:
        super().__init__(workers=workers, timeout_s=timeout_s)
        self.webhook_workers = webhook_workers

    def _start_celery(self, name: str, argv: list[str]) -> None:
        proc = self.start_process(name, argv)
        self.procs[name] = proc
        wait_until(
            lambda: " ready." in proc.tail(100_000),
            what=f"the Celery worker {name!r}",
            timeout_s=self.timeout_s,
            services=[proc],
        )

    def start_worker(self) -> None:
        """Start the worker with its embedded beat (and the dedicated delivery worker, if
        asked) and wait until it is ready.

        The allow-list is added to ``self.env`` here, before any service process starts:
        :meth:`ServiceStack.start` starts the API after the worker with the same environment
        (were it not so, registering the loopback endpoint would fail with 422, loudly).
        """
        self.env["DIFFALL_WEBHOOK_ALLOWED_NETWORKS"] = ALLOWED_NETWORKS
        data_dir = Path(self.env["DIFFALL_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        schedule = data_dir / "celerybeat-schedule"
        self._start_celery("worker", worker_argv(concurrency=self.workers, schedule=schedule))
        if self.webhook_workers:
            self._start_celery("webhooks", webhook_worker_argv(threads=self.webhook_workers))

    def close(self) -> None:
        """Stop the dedicated delivery worker, then everything :meth:`ServiceStack.close`
        stops (API, worker, S3, database, Redis database)."""
        proc = self.procs.pop("webhooks", None)
        try:
            if proc is not None:
                proc.stop()
        finally:
            super().close()

    def celery_app(self) -> Any:
        """A Celery producer app on the stack's broker, configured like the service's."""
        from core.config import Settings
        from core.services.jobqueue import make_celery_app

        # No .env file: only what the stack's processes were given counts.
        options: dict[str, Any] = {
            "_env_file": None,
            "data_dir": Path(self.env["DIFFALL_DATA_DIR"]),
            "database_url": self.database_url,
            "broker_url": self.env["DIFFALL_BROKER_URL"],
        }
        settings = Settings(**options)
        return make_celery_app(settings, name="bench-webhooks")


@contextlib.contextmanager
def database(url: str) -> Iterator[Any]:
    """An engine on the benchmark's database, disposed on exit."""
    from core.db.session import make_engine

    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def register_endpoint(http: httpx.Client, url: str) -> tuple[str, str]:
    """``POST /v1/webhooks`` for :data:`EVENT`; return the endpoint's id and secret."""
    response = http.post(
        "/v1/webhooks",
        json={"url": url, "events": [EVENT], "description": "bench_webhooks receiver"},
    )
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/webhooks: {response.status_code} {response.text[:500]}")
    body = response.json()
    return str(body["id"]), str(body["secret"])


def _wait(condition: Any, *, timeout_s: float, interval_s: float = POLL_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


# --------------------------------------------------------------------------------------------
# 1. Delivery throughput
# --------------------------------------------------------------------------------------------


@dataclass
class ThroughputRun:
    """The throughput window: a backlog of pings committed at once, delivered by the workers.

    Attributes
    ----------
    deliveries : int
        Deliveries of the backlog.
    arrived : int
        Of those, how many reached the receiver (verified).
    write_s : float
        Seconds spent writing the backlog (untimed: before the commit).
    wall_s : float or None
        Commit to last arrival, seconds (None when some never arrived).
    first_arrival_s : float or None
        Commit to first arrival, seconds (the dispatcher pass and the first task's start).
    steady_rate : float or None
        ``(arrived - 1) / (last - first arrival)``, deliveries per second once flowing.
    attempt_ms : dict
        :func:`summary` of the attempts' ``duration_ms`` (the POST as the worker timed it).
    states : dict of str to int
        Final states of the deliveries (database).
    attempts : int
        Attempts recorded in all (more than ``deliveries``: retries).
    cpu_s : dict of str to float
        CPU seconds of each component during the window (``bench.lib.machine.cpu_snapshot``).
    cpus : int
        CPUs of the machine.
    load_start : list of float
        Load averages when the window opened.
    """

    deliveries: int
    arrived: int
    write_s: float
    wall_s: float | None
    first_arrival_s: float | None
    steady_rate: float | None
    attempt_ms: dict[str, Any]
    states: dict[str, int]
    attempts: int
    cpu_s: dict[str, float]
    cpus: int
    load_start: list[float]

    @property
    def rate(self) -> float | None:
        """Deliveries per second, commit to last arrival (None when some never arrived)."""
        return None if not self.wall_s else self.deliveries / self.wall_s

    @property
    def ours_cpu_s(self) -> float:
        """CPU seconds of our components in the window."""
        return sum(v for k, v in self.cpu_s.items() if k != MACHINE_BUSY)

    @property
    def foreign_cpu_s(self) -> float:
        """CPU seconds other processes used during the window."""
        return max(0.0, self.cpu_s.get(MACHINE_BUSY, 0.0) - self.ours_cpu_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        rate = self.rate
        return {
            **asdict(self),
            "rate_per_s": None if rate is None else round(rate, 3),
            "foreign_cpu_s": round(self.foreign_cpu_s, 3),
        }


def _delivery_stats(engine: Any, ids: Sequence[uuid.UUID]) -> tuple[dict[str, int], list[Any]]:
    """States of the deliveries ``ids`` and their attempts (delivery_id, number, started_at,
    duration_ms, status_code, error_code)."""
    import sqlalchemy as sa

    from core.db.models import WebhookAttempt, WebhookDelivery

    states: dict[str, int] = {}
    attempts: list[Any] = []
    with engine.connect() as connection:
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            for state, count in connection.execute(
                sa.select(WebhookDelivery.state, sa.func.count())
                .where(WebhookDelivery.id.in_(chunk))
                .group_by(WebhookDelivery.state)
            ):
                key = getattr(state, "value", str(state))
                states[key] = states.get(key, 0) + int(count)
            attempts += connection.execute(
                sa.select(
                    WebhookAttempt.delivery_id,
                    WebhookAttempt.number,
                    WebhookAttempt.started_at,
                    WebhookAttempt.duration_ms,
                    WebhookAttempt.status_code,
                    WebhookAttempt.error_code,
                ).where(WebhookAttempt.delivery_id.in_(chunk))
            ).all()
    return states, attempts


def run_throughput(
    stack: WebhookStack,
    receiver: Receiver,
    engine: Any,
    *,
    endpoint_id: str,
    deliveries: int,
    drain_s: float,
) -> ThroughputRun:
    """Write ``deliveries`` pings in one transaction, commit, request a dispatcher pass, and
    time until every one arrived.

    Parameters
    ----------
    stack : WebhookStack
        The started stack (worker running).
    receiver : Receiver
        The receiver the endpoint points at (its secret set).
    engine : sqlalchemy.Engine
        On the stack's database.
    endpoint_id : str
        The registered endpoint.
    deliveries : int
        Pings to deliver (>= 1).
    drain_s : float
        Seconds after the commit to wait for the last arrival.

    Returns
    -------
    ThroughputRun
        The figures.
    """
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from core.db.models import WebhookEndpoint
    from core.services import webhooks
    from core.services.jobqueue import CeleryDeliveryQueue

    ident = uuid.UUID(endpoint_id)
    with engine.connect() as connection:
        tenant_id = connection.execute(
            sa.select(WebhookEndpoint.tenant_id).where(WebhookEndpoint.id == ident)
        ).scalar_one()
    app = stack.celery_app()
    queue = CeleryDeliveryQueue(app)
    groups = stack.groups()
    main_pids = {"worker": stack.procs["worker"].pid}
    try:
        t_write = time.perf_counter()
        delivery_ids: list[uuid.UUID] = []
        msg_ids: list[str] = []
        with engine.connect() as connection:
            outer = connection.begin()
            # create_ping commits: here each commit only releases a savepoint, so the whole
            # backlog becomes visible to the dispatcher at once, when ``outer`` commits.
            session = Session(
                bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
            try:
                for _ in range(deliveries):
                    delivery = webhooks.create_ping(session, tenant_id=tenant_id, endpoint_id=ident)
                    delivery_ids.append(delivery.id)
                    msg_ids.append(webhooks.webhook_id(delivery.event_id))
            finally:
                session.close()
            write_s = time.perf_counter() - t_write
            load_start = load_average()
            before = cpu_snapshot(groups, main_pids=main_pids)
            bench0 = time.process_time()
            outer.commit()
            t0 = time.time()
        queue.kick()
        _wait(lambda: len(receiver.arrived(msg_ids)) >= deliveries, timeout_s=drain_s)
        cpu = cpu_delta(cpu_snapshot(groups, main_pids=main_pids), before)
        cpu["bench"] = round(time.process_time() - bench0, 3)
    finally:
        app.close()
    arrivals = receiver.arrived(msg_ids)
    times = sorted(a.at for a in arrivals)
    complete = len(arrivals) == deliveries

    def recorded() -> bool:  # the worker records an attempt after the receiver answered
        states = _delivery_stats(engine, delivery_ids)[0]
        return states.get("succeeded", 0) + states.get("failed", 0) >= len(arrivals)

    _wait(recorded, timeout_s=5.0)
    states, attempts = _delivery_stats(engine, delivery_ids)
    durations = [float(a.duration_ms) for a in attempts if a.duration_ms is not None]
    return ThroughputRun(
        deliveries=deliveries,
        arrived=len(arrivals),
        write_s=round(write_s, 3),
        wall_s=round(times[-1] - t0, 4) if complete and times else None,
        first_arrival_s=round(times[0] - t0, 4) if times else None,
        steady_rate=(
            round((len(times) - 1) / (times[-1] - times[0]), 3)
            if len(times) > 1 and times[-1] > times[0]
            else None
        ),
        attempt_ms=summary(durations),
        states=states,
        attempts=len(attempts),
        cpu_s=cpu,
        cpus=machine_cpus(),
        load_start=load_start,
    )


# --------------------------------------------------------------------------------------------
# 2. Latency at a paced comparison rate
# --------------------------------------------------------------------------------------------


@dataclass
class Submission:
    """One paced ``POST /v1/comparisons``.

    Attributes
    ----------
    index : int
        Its place in the sequence (sent at ``t0 + index / rate``).
    scheduled : float
        ``time.time()`` it was due.
    sent : float
        ``time.time()`` a sender thread started the request.
    answered : float
        ``time.time()`` the answer arrived.
    status : int
        HTTP status (0: the request failed).
    comparison_id : str or None
        The new comparison (202 answers).
    """

    index: int
    scheduled: float
    sent: float
    answered: float
    status: int
    comparison_id: str | None


@dataclass
class LatencyRun:
    """The latency window: comparisons submitted at a paced rate, each one's webhook timed.

    Times are seconds unless the name says ms. ``delay_s`` and the breakdown lists hold one
    value per comparison whose webhook arrived.

    Attributes
    ----------
    rate : float
        The requested submission rate, per second.
    planned : int
        Comparisons planned (``round(rate * seconds)``).
    accepted : int
        Answered 202.
    rejected : dict of str to int
        Other answers by status (``0``: the request failed).
    submit_rate : float or None
        Achieved submission rate: ``(accepted - 1) / (last - first send)``.
    send_lag_ms : dict
        :func:`summary` of (sent - scheduled): a client that fell behind its schedule.
    post_ms : dict
        :func:`summary` of POST-to-202 times.
    states : dict of str to int
        Final states (database) of the accepted comparisons; ``unfinished`` for the rest.
    finish_rate : float or None
        ``(finished - 1) / (last - first finished_at)``: comparisons ended per second.
    arrived : int
        Webhooks that arrived for succeeded comparisons.
    missing : int
        Succeeded comparisons whose webhook never arrived (within ``drain_s``).
    missing_ids : list of str
        Up to :data:`MISSING_SHOWN` of them.
    delay_s : list of float
        finished_at -> arrival, per comparison (the judged figure).
    queue_wait_ms, run_ms, to_attempt_ms, post_to_arrival_ms : list of float
        The comparison's created -> started and started -> finished; finished -> its first
        delivery attempt started (the dispatcher and the deliver task's wait in the queue);
        attempt started -> arrival (claim check, signing, SSRF resolution, connect, send).
    retried : int
        Deliveries that needed more than one attempt.
    wall_s : float
        First submission to last arrival.
    cpu_s : dict of str to float
        CPU seconds by component during the window.
    cpus : int
        CPUs of the machine.
    load_start : list of float
        Load averages when the window opened.
    """

    rate: float
    planned: int
    accepted: int
    rejected: dict[str, int]
    submit_rate: float | None
    send_lag_ms: dict[str, Any]
    post_ms: dict[str, Any]
    states: dict[str, int]
    finish_rate: float | None
    arrived: int
    missing: int
    missing_ids: list[str]
    delay_s: list[float]
    queue_wait_ms: list[float]
    run_ms: list[float]
    to_attempt_ms: list[float]
    post_to_arrival_ms: list[float]
    retried: int
    wall_s: float
    cpu_s: dict[str, float]
    cpus: int
    load_start: list[float]

    @property
    def delay_median_s(self) -> float | None:
        """Median finished -> arrival delay, seconds."""
        return percentile(self.delay_s, 50)

    @property
    def delay_p99_s(self) -> float | None:
        """99th percentile of the finished -> arrival delay, seconds."""
        return percentile(self.delay_s, 99)

    @property
    def ours_cpu_s(self) -> float:
        """CPU seconds of our components in the window."""
        return sum(v for k, v in self.cpu_s.items() if k != MACHINE_BUSY)

    @property
    def foreign_cpu_s(self) -> float:
        """CPU seconds other processes used during the window."""
        return max(0.0, self.cpu_s.get(MACHINE_BUSY, 0.0) - self.ours_cpu_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures, with summaries of every list beside the lists."""
        out = asdict(self)
        for name in ("delay_s", "queue_wait_ms", "run_ms", "to_attempt_ms", "post_to_arrival_ms"):
            out[f"{name}_summary"] = summary(getattr(self, name))
        out["foreign_cpu_s"] = round(self.foreign_cpu_s, 3)
        return out


def _comparison_rows(engine: Any, ids: Sequence[str]) -> dict[str, Any]:
    """id -> row (state, created_at, started_at, finished_at) of the given comparisons."""
    import sqlalchemy as sa

    from core.db.models import Comparison

    rows: dict[str, Any] = {}
    with engine.connect() as connection:
        for start in range(0, len(ids), 1000):
            chunk = [uuid.UUID(i) for i in ids[start : start + 1000]]
            for row in connection.execute(
                sa.select(
                    Comparison.id,
                    Comparison.state,
                    Comparison.created_at,
                    Comparison.started_at,
                    Comparison.finished_at,
                ).where(Comparison.id.in_(chunk))
            ):
                rows[str(row.id)] = row
    return rows


def _state(row: Any) -> str:
    return str(getattr(row.state, "value", row.state))


def _first_attempts(engine: Any, ids: Sequence[str]) -> tuple[dict[str, datetime], int]:
    """Comparison id -> start of the first attempt of its ``comparison.succeeded`` delivery,
    and how many of those deliveries had more than one attempt."""
    import sqlalchemy as sa

    from core.db.models import (
        WebhookAttempt,
        WebhookDelivery,
        WebhookEvent,
        WebhookEventType,
    )

    starts: dict[str, datetime] = {}
    retried = 0
    with engine.connect() as connection:
        for start in range(0, len(ids), 1000):
            chunk = [uuid.UUID(i) for i in ids[start : start + 1000]]
            rows = connection.execute(
                sa.select(
                    WebhookEvent.subject_id,
                    WebhookAttempt.number,
                    WebhookAttempt.started_at,
                    WebhookDelivery.attempt_count,
                )
                .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
                .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
                .where(
                    WebhookEvent.subject_id.in_(chunk),
                    WebhookEvent.type == WebhookEventType.COMPARISON_SUCCEEDED,
                )
            ).all()
            for row in rows:
                if row.number == 1:
                    starts[str(row.subject_id)] = row.started_at
                    retried += int(row.attempt_count > 1)
    return starts, retried


def run_latency(
    stack: WebhookStack,
    receiver: Receiver,
    engine: Any,
    ids: Sequence[tuple[str, str]],
    *,
    rate: float,
    count: int,
    senders: int,
    drain_s: float,
) -> LatencyRun:
    """Submit ``count`` comparisons at ``rate`` per second and time each one's webhook.

    Parameters
    ----------
    stack : WebhookStack
        The started, warmed-up stack.
    receiver : Receiver
        The endpoint's receiver (its secret set).
    engine : sqlalchemy.Engine
        On the stack's database.
    ids : sequence of (str, str)
        Image ids of the uploaded pairs (cycled over).
    rate : float
        Submissions per second (> 0).
    count : int
        Comparisons (>= 1).
    senders : int
        Client threads (>= 1).
    drain_s : float
        Seconds after the last submission to wait for every comparison to end and every
        webhook to arrive.

    Returns
    -------
    LatencyRun
        The figures.
    """
    local = threading.local()
    clients: list[httpx.Client] = []
    clients_lock = threading.Lock()

    def client() -> httpx.Client:
        http = getattr(local, "http", None)
        if http is None:
            http = stack.client(timeout=30.0)
            local.http = http
            with clients_lock:
                clients.append(http)
        return http

    def send(index: int, scheduled: float) -> Submission:
        a, b = ids[index % len(ids)]
        http = client()
        sent = time.time()
        try:
            response = http.post(
                "/v1/comparisons",
                json={"a": a, "b": b, "metadata": {"bench": "webhooks", "i": index}},
            )
            status = response.status_code
            ident = str(response.json()["id"]) if status == 202 else None
        except (httpx.HTTPError, ValueError, KeyError):
            status, ident = 0, None
        return Submission(index, scheduled, sent, time.time(), status, ident)

    groups = stack.groups()
    main_pids = {"worker": stack.procs["worker"].pid}
    load_start = load_average()
    before = cpu_snapshot(groups, main_pids=main_pids)
    bench0 = time.process_time()
    with ThreadPoolExecutor(max_workers=senders, thread_name_prefix="bench-sender") as pool:
        for _ in range(senders):  # open the connections before the clock starts
            pool.submit(client).result()
        t0 = time.time() + 0.05
        futures = []
        for index in range(count):
            due = t0 + index / rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(send, index, due))
        submissions = [f.result() for f in futures]
    for http in clients:
        http.close()
    accepted = [s for s in submissions if s.comparison_id is not None]
    cids = [str(s.comparison_id) for s in accepted]

    def done() -> bool:
        rows = _comparison_rows(engine, cids)
        final = [r for r in rows.values() if _state(r) in FINAL]
        succeeded = [str(r.id) for r in final if _state(r) == "succeeded"]
        return len(final) == len(cids) and len(receiver.for_subjects(succeeded)) == len(succeeded)

    _wait(done, timeout_s=drain_s, interval_s=0.5)
    cpu = cpu_delta(cpu_snapshot(groups, main_pids=main_pids), before)
    cpu["bench"] = round(time.process_time() - bench0, 3)

    rows = _comparison_rows(engine, cids)
    states: dict[str, int] = {}
    for cid in cids:
        row = rows.get(cid)
        key = _state(row) if row is not None and _state(row) in FINAL else "unfinished"
        states[key] = states.get(key, 0) + 1
    succeeded = [cid for cid in cids if cid in rows and _state(rows[cid]) == "succeeded"]
    arrivals = receiver.for_subjects(succeeded)
    attempt_starts, retried = _first_attempts(engine, succeeded)
    delay: list[float] = []
    queue_wait: list[float] = []
    run: list[float] = []
    to_attempt: list[float] = []
    post_to_arrival: list[float] = []
    for cid in succeeded:
        row = rows[cid]
        created, started, finished = (
            _ts(row.created_at),
            _ts(row.started_at),
            _ts(row.finished_at),
        )
        if created is not None and started is not None:
            queue_wait.append((started - created) * 1000)
        if started is not None and finished is not None:
            run.append((finished - started) * 1000)
        arrival = arrivals.get(cid)
        if arrival is None or finished is None:
            continue
        delay.append(arrival.at - finished)
        attempt = _ts(attempt_starts.get(cid))
        if attempt is not None:
            to_attempt.append((attempt - finished) * 1000)
            post_to_arrival.append((arrival.at - attempt) * 1000)
    finished_times = sorted(
        t for t in (_ts(rows[c].finished_at) for c in cids if c in rows) if t is not None
    )
    sent = sorted(s.sent for s in accepted)
    missing = [cid for cid in succeeded if cid not in arrivals]
    rejected: dict[str, int] = {}
    for s in submissions:
        if s.comparison_id is None:
            rejected[str(s.status)] = rejected.get(str(s.status), 0) + 1
    last = max([a.at for a in arrivals.values()] + finished_times + [sent[-1] if sent else t0])
    return LatencyRun(
        rate=rate,
        planned=count,
        accepted=len(accepted),
        rejected=rejected,
        submit_rate=(
            round((len(sent) - 1) / (sent[-1] - sent[0]), 3)
            if len(sent) > 1 and sent[-1] > sent[0]
            else None
        ),
        send_lag_ms=summary([(s.sent - s.scheduled) * 1000 for s in submissions]),
        post_ms=summary([(s.answered - s.sent) * 1000 for s in submissions]),
        states=states,
        finish_rate=(
            round((len(finished_times) - 1) / (finished_times[-1] - finished_times[0]), 3)
            if len(finished_times) > 1 and finished_times[-1] > finished_times[0]
            else None
        ),
        arrived=len(arrivals),
        missing=len(missing),
        missing_ids=missing[:MISSING_SHOWN],
        delay_s=[round(d, 4) for d in delay],
        queue_wait_ms=[round(v, 1) for v in queue_wait],
        run_ms=[round(v, 1) for v in run],
        to_attempt_ms=[round(v, 1) for v in to_attempt],
        post_to_arrival_ms=[round(v, 1) for v in post_to_arrival],
        retried=retried,
        wall_s=round(last - t0, 3),
        cpu_s=cpu,
        cpus=machine_cpus(),
        load_start=load_start,
    )


def warm_up(
    stack: WebhookStack,
    receiver: Receiver,
    ids: Sequence[tuple[str, str]],
    *,
    endpoint_id: str,
    count: int,
    timeout_s: float,
) -> float:
    """Untimed: ``count`` pings through the API and ``count`` comparisons, until each one's
    webhook arrived (every pool process has opened its connections); return the seconds."""
    t0 = time.perf_counter()
    cids: list[str] = []
    with stack.client() as http:
        for index in range(count):
            ping = http.post(f"/v1/webhooks/{endpoint_id}/ping")
            if ping.status_code != 202:
                raise RuntimeError(f"ping: {ping.status_code} {ping.text[:300]}")
            a, b = ids[index % len(ids)]
            response = http.post("/v1/comparisons", json={"a": a, "b": b})
            if response.status_code != 202:
                raise RuntimeError(f"comparison: {response.status_code} {response.text[:300]}")
            cids.append(str(response.json()["id"]))
    if not _wait(lambda: len(receiver.for_subjects(cids)) == len(cids), timeout_s=timeout_s):
        raise TimeoutError(
            f"warm-up: {len(receiver.for_subjects(cids))} of {len(cids)} webhooks arrived "
            f"in {timeout_s:g} s\n{stack.describe_failure()}"
        )
    return round(time.perf_counter() - t0, 3)


# --------------------------------------------------------------------------------------------
# The whole run, targets, output
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run measured."""

    config: WebhookBenchConfig
    machine: dict[str, Any]
    throughput: ThroughputRun | None = None
    latency: LatencyRun | None = None
    warmup_s: float | None = None
    bad_signatures: int = 0
    duplicates: int = 0
    requests: int = 0
    stack: dict[str, Any] = field(default_factory=dict)

    def targets(self) -> list[dict[str, Any]]:
        """The judged rows: name, measured value, limit, status (PASS, FAIL, info or n/a).

        The latency targets hold "at ``rate`` comparisons per second": the rate row says
        whether the comparisons really ended that fast (if not, the delays were measured at a
        lower rate, which it shows).
        """
        lat = self.latency
        rows: list[dict[str, Any]] = []
        median = None if lat is None else lat.delay_median_s
        p99 = None if lat is None else lat.delay_p99_s

        def status(ok: bool | None) -> str:
            return "n/a" if ok is None else ("PASS" if ok else "FAIL")

        rows.append(
            {
                "target": "delay finished -> webhook arrived, median (s)",
                "measured": None if median is None else round(median, 3),
                "limit": f"< {TARGET_MEDIAN_S:g} s",
                "status": status(None if median is None else median < TARGET_MEDIAN_S),
            }
        )
        rows.append(
            {
                "target": "delay finished -> webhook arrived, p99 (s)",
                "measured": None if p99 is None else round(p99, 3),
                "limit": f"< {TARGET_P99_S:g} s",
                "status": status(None if p99 is None else p99 < TARGET_P99_S),
            }
        )
        finish = None if lat is None else lat.finish_rate
        want = self.config.rate * RATE_TOLERANCE
        rows.append(
            {
                "target": "comparisons finished per second (the delays' condition)",
                "measured": finish,
                "limit": f">= {want:g} ({RATE_TOLERANCE:.0%} of {self.config.rate:g})",
                "status": status(None if finish is None else finish >= want),
            }
        )
        tp = self.throughput
        if lat is not None or tp is not None:
            lost = self.bad_signatures
            if lat is not None:
                lost += lat.missing + sum(v for k, v in lat.states.items() if k != "succeeded")
            if tp is not None:
                lost += tp.deliveries - tp.arrived
            rows.append(
                {
                    "target": "webhooks arrived, correctly signed (missing, not succeeded, "
                    "bad signatures)",
                    "measured": lost,
                    "limit": "0",
                    "status": status(lost == 0),
                }
            )
        rows.append(
            {
                "target": "deliveries per second (backlog, commit -> last arrival)",
                "measured": None if tp is None or tp.rate is None else round(tp.rate, 2),
                "limit": "no target",
                "status": "n/a" if tp is None or tp.rate is None else "info",
            }
        )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "config": asdict(self.config),
            "machine": self.machine,
            "throughput": None if self.throughput is None else self.throughput.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
            "warmup_s": self.warmup_s,
            "receiver": {
                "requests": self.requests,
                "bad_signatures": self.bad_signatures,
                "duplicates": self.duplicates,
            },
            "targets": self.targets(),
            "stack": self.stack,
        }


def run(config: WebhookBenchConfig, *, console: Console | None = None) -> Report:
    """Run the whole benchmark: the stack, the throughput backlog, the paced latency window;
    every subprocess, the database and the Redis database are cleaned up whatever happens.

    Parameters
    ----------
    config : WebhookBenchConfig
        What to run.
    console : rich.console.Console, optional
        Where to print progress lines (none when omitted).

    Returns
    -------
    Report
        The figures; :func:`render` prints them.
    """

    say = progress(console)

    report = Report(config=config, machine=machine_info(pipeline=True))
    pngs = make_pairs(config.distinct, config.size, seed=config.seed)
    receiver = Receiver()
    try:
        say(
            "starting the stack: PostgreSQL database, Redis database, moto S3, worker "
            f"(concurrency {config.workers}, embedded beat"
            + (
                f"; a delivery worker of {config.webhook_workers} threads on maintenance"
                if config.webhook_workers
                else ""
            )
            + "), API"
        )
        stack = WebhookStack(
            workers=config.workers,
            timeout_s=config.timeout_s,
            webhook_workers=config.webhook_workers,
        )
        with stack:
            report.stack = {
                "database": stack.database_name,
                "redis_db": stack.redis_db,
                "base_url": stack.base_url,
                "pids": {name: proc.pid for name, proc in stack.procs.items()},
            }
            try:
                with database(stack.database_url) as engine, stack.client() as http:
                    endpoint_id, receiver.secret = register_endpoint(http, receiver.url())
                    ids = upload_pairs(http, pngs)
                    say(f"warm-up: {2 * config.workers} pings and comparisons")
                    report.warmup_s = warm_up(
                        stack,
                        receiver,
                        ids,
                        endpoint_id=endpoint_id,
                        count=2 * config.workers,
                        timeout_s=config.drain_s,
                    )
                    if config.deliveries:
                        say(f"throughput: a backlog of {config.deliveries} ping deliveries")
                        report.throughput = run_throughput(
                            stack,
                            receiver,
                            engine,
                            endpoint_id=endpoint_id,
                            deliveries=config.deliveries,
                            drain_s=config.drain_s,
                        )
                    say(
                        f"latency: {config.comparisons} comparisons of {config.size}x"
                        f"{config.size} PNGs at {config.rate:g}/s for {config.seconds:g} s"
                    )
                    report.latency = run_latency(
                        stack,
                        receiver,
                        engine,
                        ids,
                        rate=config.rate,
                        count=config.comparisons,
                        senders=config.senders,
                        drain_s=config.drain_s,
                    )
            except Exception as exc:
                raise RuntimeError(f"{exc}\n{stack.describe_failure()}") from exc
            say("cleaning up: processes, database, Redis database")
    finally:
        receiver.close()
    report.bad_signatures = receiver.bad_signatures
    report.duplicates = receiver.duplicates()
    report.requests = receiver.requests
    report.machine["load_average_end"] = load_average()
    return report


def _cpu_table(title: str, cpu_s: dict[str, float], per: int, unit: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column(f"CPU ms / {unit}", justify="right")
    table.add_column("CPU s", justify="right")
    ours = {k: v for k, v in cpu_s.items() if k != MACHINE_BUSY}
    for name, value in sorted(ours.items(), key=lambda kv: -kv[1]):
        table.add_row(name, fmt(value / max(1, per) * 1000, 1), fmt(value, 2))
    total = sum(ours.values())
    table.add_row("[bold]ours, total[/bold]", fmt(total / max(1, per) * 1000, 1), fmt(total))
    foreign = max(0.0, cpu_s.get(MACHINE_BUSY, 0.0) - total)
    table.add_row("other processes", fmt(foreign / max(1, per) * 1000, 1), fmt(foreign))
    return table


def render(console: Console, report: Report) -> None:
    """Print the report's tables.

    Parameters
    ----------
    console : rich.console.Console
        Where to print.
    report : Report
        What :func:`run` measured.
    """
    m, c = report.machine, report.config
    console.print(
        f"[bold]DiffALL webhook benchmark[/bold] on {m.get('cpu_model')}: {m.get('cpu_count')} "
        f"cores ({m.get('cpu_affinity')} usable); ONE worker, concurrency {c.workers}, queues "
        f"interactive,batch,maintenance, beat embedded (dispatcher every 1 s)"
        + (
            f", plus a delivery worker of {c.webhook_workers} threads on maintenance only "
            "(the normal set-up of diffall serve and compose)"
            if c.webhook_workers
            else ", [yellow]no delivery worker (not the normal set-up)[/yellow]"
        )
        + f"; allow-list {ALLOWED_NETWORKS}"
    )
    end = m.get("load_average_end")
    console.print(
        "load average (1, 5, 15 min): at start "
        + " ".join(str(v) for v in m.get("load_average", []))
        + ("" if end is None else "; at end " + " ".join(str(v) for v in end))
    )
    console.print(
        f"python {m.get('python')}; receiver: {report.requests} requests, "
        f"{report.bad_signatures} bad signatures, {report.duplicates} duplicates "
        f"(standardwebhooks verification); warm-up {fmt(report.warmup_s)} s"
    )

    tp = report.throughput
    if tp is not None:
        table = Table(
            title=f"1. Delivery throughput: backlog of {tp.deliveries} pings committed at once",
            title_justify="left",
        )
        for name in (
            "arrived",
            "commit -> first s",
            "commit -> last s",
            "deliveries / s",
            "steady / s",
            "POST ms (median, p99)",
            "attempts",
            "states",
            "load 1 min",
        ):
            table.add_column(name, justify="right")
        table.add_row(
            f"{tp.arrived}/{tp.deliveries}",
            fmt(tp.first_arrival_s),
            fmt(tp.wall_s),
            fmt(tp.rate, 1),
            fmt(tp.steady_rate, 1),
            f"{fmt(tp.attempt_ms.get('median'), 0)}, {fmt(tp.attempt_ms.get('p99'), 0)}",
            str(tp.attempts),
            ", ".join(f"{k} {v}" for k, v in sorted(tp.states.items())),
            fmt(tp.load_start[0]),
        )
        console.print(table)
        console.print(
            _cpu_table(
                "CPU per delivery by component (throughput window)",
                tp.cpu_s,
                tp.deliveries,
                "delivery",
            )
        )

    lat = report.latency
    if lat is not None:
        table = Table(
            title=f"2. Latency: {lat.planned} comparisons at {lat.rate:g}/s "
            f"({c.size}x{c.size} PNGs), one webhook each",
            title_justify="left",
        )
        table.add_column("figure")
        table.add_column("value", justify="right")
        rejected = ", ".join(f"{k}: {v}" for k, v in lat.rejected.items()) or "none"
        table.add_row("accepted (202) / planned", f"{lat.accepted} / {lat.planned}")
        table.add_row("rejected", rejected)
        table.add_row("submitted per s", fmt(lat.submit_rate, 1))
        table.add_row(
            "send lag ms (median, p99)",
            f"{fmt(lat.send_lag_ms['median'], 0)}, {fmt(lat.send_lag_ms['p99'], 0)}",
        )
        table.add_row(
            "POST to 202 ms (median, p99)",
            f"{fmt(lat.post_ms['median'], 0)}, {fmt(lat.post_ms['p99'], 0)}",
        )
        table.add_row("finished per s", fmt(lat.finish_rate, 1))
        table.add_row("states", ", ".join(f"{k} {v}" for k, v in sorted(lat.states.items())))
        table.add_row("webhooks arrived", str(lat.arrived))
        shown = (": " + ", ".join(lat.missing_ids)) if lat.missing_ids else ""
        table.add_row("webhooks missing", f"{lat.missing}{shown}")
        table.add_row("deliveries retried", str(lat.retried))
        table.add_row("first submission -> last event s", fmt(lat.wall_s))
        console.print(table)

        stages = Table(title="Where the time goes (per comparison)", title_justify="left")
        stages.add_column("stage")
        for name in ("median", "p99", "max", "n"):
            stages.add_column(name, justify="right")
        for label, values, scale in (
            ("comparison queue wait (created -> started) ms", lat.queue_wait_ms, 1.0),
            ("comparison run (started -> finished) ms", lat.run_ms, 1.0),
            ("finished -> delivery attempt started ms", lat.to_attempt_ms, 1.0),
            ("attempt started -> arrival ms", lat.post_to_arrival_ms, 1.0),
            ("[bold]finished -> webhook arrived ms[/bold]", lat.delay_s, 1000.0),
        ):
            s = summary([v * scale for v in values])
            stages.add_row(
                label, fmt(s["median"], 0), fmt(s["p99"], 0), fmt(s["max"], 0), str(s["n"])
            )
        console.print(stages)
        console.print(
            _cpu_table(
                "CPU per comparison by component (latency window, webhook included)",
                lat.cpu_s,
                max(1, lat.accepted),
                "comparison",
            )
        )

    targets = Table(title="Targets", title_justify="left")
    for name in ("target", "measured", "limit", "status"):
        targets.add_column(name, justify="right" if name == "measured" else "left")
    colours = {"PASS": "green", "FAIL": "red"}
    for t in report.targets():
        colour = colours.get(t["status"], "dim")
        measured = t["measured"]
        targets.add_row(
            t["target"],
            str(measured) if isinstance(measured, int) else fmt(measured, 3),
            t["limit"],
            f"[{colour}]{t['status']}[/{colour}]",
        )
    console.print(targets)


def parse_args(argv: Sequence[str] | None = None) -> tuple[WebhookBenchConfig, Path | None]:
    """Parse the command line into a :class:`WebhookBenchConfig` and the JSON path (or None)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_webhooks",
        description="Webhook delivery throughput and the delay from a comparison ending to its "
        "webhook arriving, on the real stack.",
    )
    add = parser.add_argument
    add("--rate", type=float, default=DEFAULT_RATE, help="comparisons submitted per second")
    add("--seconds", type=float, default=DEFAULT_SECONDS, help="seconds of paced submission")
    add(
        "--workers",
        type=int,
        default=WorkerSettings().processes,
        help="worker concurrency (default: the service's, the CPUs + 1)",
    )
    add("--deliveries", type=int, default=DEFAULT_DELIVERIES, help="backlog (0: skip)")
    add("--size", type=int, default=DEFAULT_SIZE, help="side of the square test PNGs")
    add("--distinct", type=int, default=DEFAULT_DISTINCT, help="distinct image pairs")
    add("--senders", type=int, default=DEFAULT_SENDERS, help="client threads")
    add("--drain", type=float, default=60.0, help="seconds to wait for stragglers")
    add("--seed", type=int, default=DEFAULT_SEED, help="seed of the first image pair")
    add(
        "--webhook-worker",
        type=int,
        default=4,
        metavar="THREADS",
        help="the delivery worker on the maintenance queue only, with this many threads "
        "(default 4, as `diffall serve` and compose run it; 0: none, the old set-up)",
    )
    add("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        config = WebhookBenchConfig(
            workers=args.workers,
            rate=args.rate,
            seconds=args.seconds,
            deliveries=args.deliveries,
            size=args.size,
            distinct=args.distinct,
            senders=args.senders,
            drain_s=args.drain,
            seed=args.seed,
            webhook_workers=args.webhook_worker,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: it reports, it does not gate)."""
    config, json_out = parse_args(argv)
    # The services called in this process (the throughput backlog) log at info: keep the
    # output to the benchmark's own lines.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    report = run(config, console=console)
    render(console, report)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
        console.print(f"JSON written to {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

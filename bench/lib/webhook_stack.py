"""The webhook benchmark's stack: :class:`bench.lib.stack.ServiceStack` with the worker set-up of
``diffall serve`` (the beat inside the worker, an optional delivery-only worker) and the
loopback allow-list; the endpoint registration and a polling wait."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.lib.hook_receiver import EVENT, Receiver
from bench.lib.stack import ServiceStack, celery_worker_argv, wait_for_celery

#: ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS`` of the stack: the receiver listens on 127.0.0.1.
ALLOWED_NETWORKS = "127.0.0.1/32"
#: Seconds between two polls of the database while waiting for stragglers.
POLL_S = 0.2


def worker_argv(*, concurrency: int, schedule: Path) -> list[str]:
    """The normal worker of ``diffall serve``: prefork, ``concurrency`` processes, the three
    queues, the beat embedded (``--beat``, schedule file ``schedule``)."""
    argv = celery_worker_argv(
        concurrency=concurrency, hostname=f"bench-hooks-{uuid.uuid4().hex[:8]}"
    )
    return [*argv[:5], "--beat", f"--schedule={schedule}", *argv[5:]]


def webhook_worker_argv(*, threads: int) -> list[str]:
    """The delivery worker (``--webhook-worker N``, as ``diffall serve`` runs it): only the
    ``maintenance`` queue (deliveries, dispatcher passes, sweeps), a pool of ``threads``
    threads (a delivery waits on the network, not the CPU), no beat."""
    return celery_worker_argv(
        concurrency=threads,
        hostname=f"bench-deliveries-{uuid.uuid4().hex[:8]}",
        pool="threads",
        queues="maintenance",
    )


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
        wait_for_celery(proc, timeout_s=self.timeout_s)

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


def wait_for(condition: Any, *, timeout_s: float, interval_s: float = POLL_S) -> bool:
    """Call ``condition`` every ``interval_s`` s until it is true (True) or ``timeout_s`` s
    have passed (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


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
    if not wait_for(lambda: len(receiver.for_subjects(cids)) == len(cids), timeout_s=timeout_s):
        raise TimeoutError(
            f"warm-up: {len(receiver.for_subjects(cids))} of {len(cids)} webhooks arrived "
            f"in {timeout_s:g} s\n{stack.describe_failure()}"
        )
    return round(time.perf_counter() - t0, 3)

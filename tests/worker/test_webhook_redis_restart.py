"""A real Redis restart loses no webhook delivery.

The worker's broker is a private ``redis-server`` (no persistence, as the session's Redis runs)
that the test stops and starts again on the same port: the queued deliver task is gone, the
worker reconnects, and the delivery, whose schedule is in PostgreSQL, is sent again once its
claim's lease ended. The task stuck in a POST while the broker went away is retried too.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from core.db.models import WebhookAttempt, WebhookDelivery, WebhookDeliveryState
from core.services.jobqueue import CeleryDeliveryQueue, make_celery_app
from core.services.tasknames import QUEUE_MAINTENANCE, WEBHOOK_DELIVER
from core.services.webhooks.dispatch import dispatch_due
from tests.s3server import free_port
from tests.support.brokers import redis_messages
from tests.support.receivers import Receiver, Reply, verify
from tests.support.tenants import make_tenant
from tests.support.workers import WorkerEnv, WorkerProcess
from tests.worker.test_webhook_delivery import POLICY, WEBHOOK_VARIABLES, _endpoint, _ping


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail("the private redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop the server (its data is gone: no persistence) and start it on the same port."""
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _attempt_codes(env: WorkerEnv, ident: uuid.UUID) -> list[str | None]:
    with env.sessions() as session:
        return [
            a.error_code
            for a in session.query(WebhookAttempt)
            .filter(WebhookAttempt.delivery_id == ident)
            .order_by(WebhookAttempt.number)
        ]


def _wait_all(
    env: WorkerEnv,
    idents: list[uuid.UUID],
    worker: WorkerProcess,
    dispatch: Callable[[], object],
    *,
    timeout: float = 60.0,
) -> dict[uuid.UUID, WebhookDelivery]:
    """Run dispatcher passes until every delivery is final."""
    deadline = time.monotonic() + timeout
    while True:
        dispatch()
        with env.sessions() as session:
            rows = {i: session.get_one(WebhookDelivery, i) for i in idents}
        final = (WebhookDeliveryState.SUCCEEDED, WebhookDeliveryState.FAILED)
        if all(row.state in final for row in rows.values()):
            return rows
        if time.monotonic() > deadline or worker.process.poll() is not None:
            states = {str(i): row.state.value for i, row in rows.items()}
            pytest.fail(f"deliveries not final: {states}\n{worker.log_tail()}")
        time.sleep(0.2)


def test_a_real_redis_restart_loses_no_delivery(
    redis_worker_env: WorkerEnv, private_redis: PrivateRedis, receiver: Receiver
) -> None:
    env = redis_worker_env
    variables = {**env.variables, **WEBHOOK_VARIABLES, "DIFFALL_BROKER_URL": private_redis.url}
    app = make_celery_app(env.settings.model_copy(update={"broker_url": private_redis.url}))
    queue = CeleryDeliveryQueue(app)

    def dispatch() -> object:
        with env.sessions() as session:
            return dispatch_due(session, queue, policy=POLICY)

    worker = WorkerProcess(variables, env.log_dir / f"restart-{uuid.uuid4().hex[:6]}.log")
    try:
        tenant = make_tenant(env.sessions)
        receiver.script("/hang", Reply(200, delay_s=10.0), Reply(200))
        busy = _endpoint(env, tenant, receiver.url("/hang"))
        lost = _endpoint(env, tenant, receiver.url("/lost"))
        hanging = _ping(env, tenant, busy)
        dispatch()
        receiver.wait_for("/hang", 1, timeout=20)  # the only pool process is stuck in this POST
        ident = _ping(env, tenant, lost)
        dispatch()
        with private_redis.client() as broker:
            queued = redis_messages(broker, QUEUE_MAINTENANCE)
        assert [m.args[0] for m in queued if m.task == WEBHOOK_DELIVER] == [str(ident)]
        private_redis.restart()
        with private_redis.client() as broker:
            assert redis_messages(broker, QUEUE_MAINTENANCE) == []  # the task is gone
        rows = _wait_all(env, [hanging, ident], worker, dispatch)
        assert {row.state for row in rows.values()} == {WebhookDeliveryState.SUCCEEDED}
        (request,) = receiver.received("/lost")
        verify(lost.secret, request)
        assert _attempt_codes(env, ident) == [None]
        # The POST that hung while the broker went away: timed out, or its worker process was
        # replaced (worker_lost); either way one more attempt delivered it, same webhook-id.
        codes = _attempt_codes(env, hanging)
        assert codes[-1] is None and set(codes[:-1]) <= {"timeout", "worker_lost"}
        hung = receiver.received("/hang")
        assert len({r.headers["webhook-id"] for r in hung}) == 1
        for request in hung:
            verify(busy.secret, request)
    finally:
        worker.stop()
        app.close()

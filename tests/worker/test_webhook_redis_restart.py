"""A real Redis restart loses no webhook delivery.

The worker's broker is a private ``redis-server`` (no persistence, as the session's Redis runs)
that the test stops and starts again on the same port: the queued deliver task is gone, the
worker reconnects, and the delivery, whose schedule is in PostgreSQL, is sent again once its
claim's lease ended. The task stuck in a POST while the broker went away is retried too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db.models import WebhookAttempt, WebhookDeliveryState
from core.services.jobqueue import CeleryDeliveryQueue, make_celery_app
from core.services.tasknames import QUEUE_MAINTENANCE, WEBHOOK_DELIVER
from core.services.webhooks.dispatch import dispatch_due
from tests.support.brokers import PrivateRedis, redis_messages
from tests.support.receivers import Receiver, Reply, verify
from tests.support.tenants import make_tenant
from tests.support.webhooks import (
    WEBHOOK_VARIABLES,
    WORKER_POLICY,
    add_endpoint,
    add_ping,
    wait_all_final,
)
from tests.support.workers import WorkerEnv, WorkerProcess


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


def test_a_real_redis_restart_loses_no_delivery(
    redis_worker_env: WorkerEnv, private_redis: PrivateRedis, receiver: Receiver
) -> None:
    env = redis_worker_env
    variables = {**env.variables, **WEBHOOK_VARIABLES, "DIFFALL_BROKER_URL": private_redis.url}
    app = make_celery_app(env.settings.model_copy(update={"broker_url": private_redis.url}))
    queue = CeleryDeliveryQueue(app)

    def dispatch() -> object:
        with env.sessions() as session:
            return dispatch_due(session, queue, policy=WORKER_POLICY)

    worker = WorkerProcess(variables, env.log_dir / f"restart-{uuid.uuid4().hex[:6]}.log")
    try:
        tenant = make_tenant(env.sessions)
        receiver.script("/hang", Reply(200, delay_s=10.0), Reply(200))
        busy = add_endpoint(env.sessions, tenant, receiver.url("/hang"))
        lost = add_endpoint(env.sessions, tenant, receiver.url("/lost"))
        hanging = add_ping(env.sessions, tenant, busy)
        dispatch()
        receiver.wait_for("/hang", 1, timeout=20)  # the only pool process is stuck in this POST
        ident = add_ping(env.sessions, tenant, lost)
        dispatch()
        with private_redis.client() as broker:
            queued = redis_messages(broker, QUEUE_MAINTENANCE)
        assert [m.args[0] for m in queued if m.task == WEBHOOK_DELIVER] == [str(ident)]
        private_redis.restart()
        with private_redis.client() as broker:
            assert redis_messages(broker, QUEUE_MAINTENANCE) == []  # the task is gone
        rows = wait_all_final(env, [hanging, ident], worker, dispatch)
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

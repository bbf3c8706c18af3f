"""The thread-pool webhook delivery worker keeps delivering across repeated Redis restarts.

Its broker is a private ``redis-server`` without persistence that the test restarts empty five
times, each time while a delivery is in flight (the worker holds an unacknowledged message: a
POST to a receiver that answers slowly). kombu's Redis transport used to die of
``AttributeError("'NoneType' object has no attribute 'hostname'")`` restoring those messages
on such a restart, and the worker exited. After every restart a new ping must arrive, and the
worker process must still be the one started (it never needed its supervisor).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from core.services.jobqueue import CeleryDeliveryQueue, make_celery_app
from core.services.webhooks.dispatch import dispatch_due
from tests.support.brokers import PrivateRedis
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

pytestmark = pytest.mark.slow

RESTARTS = 5
#: The delivery worker as production runs it (docker-compose ``webhooks``, serve's ``hooks``).
DELIVERY_WORKER = ("--pool", "threads", "-c", "4", "-Q", "maintenance")


def test_the_delivery_worker_survives_five_empty_redis_restarts(
    redis_worker_env: WorkerEnv, tmp_path: Path, receiver: Receiver
) -> None:
    env = redis_worker_env
    server = PrivateRedis(tmp_path)
    variables = {**env.variables, **WEBHOOK_VARIABLES, "DIFFALL_BROKER_URL": server.url}
    app = make_celery_app(env.settings.model_copy(update={"broker_url": server.url}))
    queue = CeleryDeliveryQueue(app)

    def dispatch() -> object:
        with env.sessions() as session:
            return dispatch_due(session, queue, policy=WORKER_POLICY)

    log = env.log_dir / f"hooks-{uuid.uuid4().hex[:6]}.log"
    worker = WorkerProcess(variables, log, *DELIVERY_WORKER)
    first_pid = worker.process.pid
    try:
        tenant = make_tenant(env.sessions)
        receiver.script("/slow", Reply(200, delay_s=1.5))
        slow = add_endpoint(env.sessions, tenant, receiver.url("/slow"))
        for restart in range(1, RESTARTS + 1):
            in_flight = add_ping(env.sessions, tenant, slow)
            dispatch()
            receiver.wait_for("/slow", restart, timeout=30)  # a thread is inside the POST
            server.restart()
            path = f"/after-{restart}"
            after = add_endpoint(env.sessions, tenant, receiver.url(path))
            ident = add_ping(env.sessions, tenant, after)
            wait_all_final(env, [in_flight, ident], worker, dispatch, timeout=60)
            (request,) = receiver.received(path)
            verify(after.secret, request)
            assert worker.process.poll() is None, worker.log_tail()
        assert worker.process.pid == first_pid
        assert "Unrecoverable error" not in log.read_text(errors="replace")
    finally:
        worker.stop()
        app.close()
        server.stop()

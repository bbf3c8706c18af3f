"""Webhook delivery by real worker processes.

A loopback receiver verifies every signature with ``standardwebhooks``. The embedded default
(SQLite, filesystem broker, a worker with its beat, as ``diffall serve`` runs it) delivers
comparison events and retries them on the periodic dispatcher. On PostgreSQL + Redis, with the
dispatcher passes run by the test (so it controls when claims happen), a worker killed
mid-delivery and task messages lost by a Redis restart lose no delivery.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from core.config import LimitsSettings
from core.db.models import (
    ComparisonState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
)
from core.services import comparisons, images, webhooks
from core.services.jobqueue import CeleryDeliveryQueue
from core.services.tasknames import QUEUE_MAINTENANCE, WEBHOOK_DELIVER
from core.services.webhooks.dispatch import dispatch_due
from tests.support.brokers import CLAIM_KEY, redis_messages
from tests.support.images import edited_png, png_bytes
from tests.support.receivers import (
    Receiver,
    Reply,
    verify,
)
from tests.support.tenants import make_tenant
from tests.support.webhooks import (
    LOOPBACK,
    WEBHOOK_VARIABLES,
    WORKER_POLICY,
    add_endpoint,
    add_ping,
)
from tests.support.workers import WorkerEnv, WorkerProcess


def _wait_delivery(
    env: WorkerEnv,
    ident: uuid.UUID,
    worker: WorkerProcess,
    *,
    dispatch: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> WebhookDelivery:
    """Poll the delivery until it is final, running ``dispatch`` (a dispatcher pass) each time."""
    deadline = time.monotonic() + timeout
    while True:
        if dispatch is not None:
            dispatch()
        with env.sessions() as session:
            row = session.get_one(WebhookDelivery, ident)
        if row.state in (WebhookDeliveryState.SUCCEEDED, WebhookDeliveryState.FAILED):
            return row
        if time.monotonic() > deadline or worker.process.poll() is not None:
            pytest.fail(f"delivery {ident} still {row.state.value}\n{worker.log_tail()}")
        time.sleep(0.1)


def _attempts(env: WorkerEnv, ident: uuid.UUID) -> list[WebhookAttempt]:
    with env.sessions() as session:
        return list(
            session.scalars(
                sa.select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == ident)
                .order_by(WebhookAttempt.number)
            )
        )


def test_embedded_worker_delivers_and_retries_with_its_beat(
    embedded_env: WorkerEnv, receiver: Receiver
) -> None:
    env = embedded_env
    tenant = make_tenant(env.sessions)
    endpoint = add_endpoint(env.sessions, tenant, receiver.url("/events"))
    flaky = add_endpoint(env.sessions, tenant, receiver.url("/flaky"))
    receiver.script("/flaky", Reply(500), Reply(200))
    limits = LimitsSettings()
    with env.sessions() as session:
        a, _ = images.store_image(
            session, env.store, tenant_id=tenant.id, data=png_bytes(64, 48, seed=5), limits=limits
        )
        b, _ = images.store_image(
            session,
            env.store,
            tenant_id=tenant.id,
            data=edited_png(64, 48, seed=5),
            limits=limits,
        )
    ping = add_ping(env.sessions, tenant, flaky)  # nothing dispatches it but the beat's dispatcher
    worker = WorkerProcess(
        {**env.variables, **WEBHOOK_VARIABLES}, env.log_dir / "hooks-embedded.log", "-B"
    )
    try:
        with env.sessions() as session:
            comparison = comparisons.create_comparison(
                session,
                env.queue,
                tenant_id=tenant.id,
                image_a_id=a.id,
                image_b_id=b.id,
                options=None,
                metadata={"job": 1},
                webhook_url=receiver.url("/adhoc"),
                allowed_networks=LOOPBACK,
            )
        row = env.wait_for(comparison.id, lambda r: r.state.is_final, worker=worker)
        (event,) = receiver.wait_for("/events", 1, timeout=30)
        (adhoc,) = receiver.wait_for("/adhoc", 1, timeout=30)
        flaky_requests = receiver.wait_for("/flaky", 3, timeout=30)
        assert _wait_delivery(env, ping, worker).state is WebhookDeliveryState.SUCCEEDED
    finally:
        worker.stop()
    assert row.state is ComparisonState.SUCCEEDED and row.result is not None
    payload = verify(endpoint.secret, event)
    assert payload["type"] == "comparison.succeeded"
    assert payload["data"]["id"] == str(comparison.id)
    assert payload["data"]["result"]["verdict"] == row.result["verdict"]
    assert payload["data"]["metadata"] == {"job": 1}
    with env.sessions() as session:
        default = webhooks.get_default_secret(session, tenant_id=tenant.id).secret
    assert verify(default, adhoc)["data"]["id"] == str(comparison.id)
    # /flaky: the comparison event and the ping, one of them retried after a 500.
    types = sorted(verify(flaky.secret, r)["type"] for r in flaky_requests)
    assert types.count("ping") >= 1 and "comparison.succeeded" in types


@pytest.fixture(scope="module")
def hooks_worker(redis_worker_env: WorkerEnv) -> Iterator[WorkerProcess]:
    """A PostgreSQL + Redis worker (one pool process) with compressed webhook settings."""
    worker = WorkerProcess(
        {**redis_worker_env.variables, **WEBHOOK_VARIABLES},
        redis_worker_env.log_dir / "hooks-worker.log",
    )
    try:
        yield worker
    finally:
        worker.stop()


def _dispatcher(env: WorkerEnv) -> Callable[[], object]:
    """One dispatcher pass over the worker's broker (what the beat entry runs)."""
    queue = CeleryDeliveryQueue(env.queue.app)

    def run() -> object:
        with env.sessions() as session:
            return dispatch_due(session, queue, policy=WORKER_POLICY)

    return run


def test_a_worker_killed_mid_delivery_loses_nothing(
    redis_worker_env: WorkerEnv, hooks_worker: WorkerProcess, receiver: Receiver
) -> None:
    env = redis_worker_env
    dispatch = _dispatcher(env)
    tenant = make_tenant(env.sessions)
    receiver.script("/slow", Reply(200, delay_s=30.0), Reply(200))
    endpoint = add_endpoint(env.sessions, tenant, receiver.url("/slow"))
    ident = add_ping(env.sessions, tenant, endpoint)
    dispatch()
    (first,) = receiver.wait_for("/slow", 1, timeout=20)
    hooks_worker.kill_child()  # dies while the receiver holds the request
    row = _wait_delivery(env, ident, hooks_worker, dispatch=dispatch)
    requests = receiver.received("/slow")
    assert row.state is WebhookDeliveryState.SUCCEEDED and len(requests) == 2
    assert requests[1].headers["webhook-id"] == first.headers["webhook-id"]
    for request in requests:
        verify(endpoint.secret, request)
    attempts = _attempts(env, ident)
    assert [(a.number, a.error_code, a.status_code) for a in attempts] == [
        (1, "worker_lost", None),
        (2, None, 200),
    ]


def test_task_messages_lost_by_a_redis_restart_are_sent_again(
    redis_worker_env: WorkerEnv, hooks_worker: WorkerProcess, receiver: Receiver
) -> None:
    # While the worker's only pool process is stuck in a POST to a hanging receiver, a second
    # delivery is claimed and its task queued in Redis; then Redis loses everything (FLUSHDB,
    # as a restart without persistence would). The schedule is in the database: once the
    # claim's lease has ended, a dispatcher pass sends the delivery again; the stuck one times
    # out and is retried. Nothing is lost.
    env = redis_worker_env
    assert env.redis is not None
    dispatch = _dispatcher(env)
    tenant = make_tenant(env.sessions)
    receiver.script("/hang", Reply(200, delay_s=10.0), Reply(200))
    busy = add_endpoint(env.sessions, tenant, receiver.url("/hang"))
    lost = add_endpoint(env.sessions, tenant, receiver.url("/lost"))
    hanging = add_ping(env.sessions, tenant, busy)
    dispatch()
    receiver.wait_for("/hang", 1, timeout=20)  # the pool process is stuck in this POST
    ident = add_ping(env.sessions, tenant, lost)
    dispatch()
    assert any(
        m.task == WEBHOOK_DELIVER and m.args[0] == str(ident)
        for m in redis_messages(env.redis, QUEUE_MAINTENANCE)
    )
    env.redis.flushdb()
    env.redis.set(CLAIM_KEY, "1")  # keep the database claimed by this test run
    started = time.monotonic()
    row = _wait_delivery(env, ident, hooks_worker, dispatch=dispatch)
    assert row.state is WebhookDeliveryState.SUCCEEDED
    assert time.monotonic() - started >= 2.0  # re-sent only once the lease ended
    (request,) = receiver.received("/lost")
    verify(lost.secret, request)
    assert [a.error_code for a in _attempts(env, ident)] == [None]
    hung = _wait_delivery(env, hanging, hooks_worker, dispatch=dispatch)
    assert hung.state is WebhookDeliveryState.SUCCEEDED
    assert [a.error_code for a in _attempts(env, hanging)] == ["timeout", None]

"""Webhook endpoints, pings and their delivery rows for the tests, with the compressed delivery
policies the service tests and the worker tests run on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import (
    Tenant,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
    WebhookEvent,
)
from core.netguard.classify import parse_allowed_networks
from core.services import webhooks
from core.services.webhooks.policy import DeliveryPolicy

if TYPE_CHECKING:
    from tests.support.workers import WorkerEnv, WorkerProcess

_Row = TypeVar("_Row", WebhookEvent, WebhookDelivery)

__all__ = [
    "FAST",
    "HOOK",
    "LOOPBACK",
    "POLICY",
    "WEBHOOK_VARIABLES",
    "WORKER_POLICY",
    "add_endpoint",
    "add_ping",
    "attempts_of",
    "deliveries_where",
    "delivery_is_final",
    "delivery_of",
    "delivery_state",
    "events_where",
    "wait_all_final",
]

SessionFactory = sessionmaker[Session]

LOOPBACK = parse_allowed_networks("127.0.0.0/8")
#: A URL on a loopback port nobody listens on (for tests that send nothing).
HOOK = "http://127.0.0.1:9/hook"
#: The service tests' schedule (0 s, 5 s, 300 s), for tests that move the clock.
POLICY = DeliveryPolicy(
    schedule_s=(0.0, 5.0, 300.0), jitter=0.0, lease_s=60.0, allowed_networks=LOOPBACK
)
#: A compressed schedule for real HTTP deliveries in the test process (50 ms waits).
FAST = DeliveryPolicy(
    schedule_s=(0.0, 0.05, 0.05, 0.05, 0.05),
    jitter=0.0,
    timeout_s=2.0,
    lease_s=5.0,
    base_url="https://diffall.example.com",
    allowed_networks=LOOPBACK,
)
#: Compressed webhook settings for a worker process (the schedule is a setting: no code change).
WEBHOOK_VARIABLES = {
    "DIFFALL_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "DIFFALL_WEBHOOKS__RETRY_SCHEDULE_S": "0,0.2,0.2,0.2",
    "DIFFALL_WEBHOOKS__JITTER": "0",
    "DIFFALL_WEBHOOKS__TIMEOUT_S": "3",
    "DIFFALL_WEBHOOKS__LEASE_S": "4",
    "DIFFALL_WEBHOOKS__DISPATCH_INTERVAL_S": "0.5",
}
#: ``WEBHOOK_VARIABLES`` as a policy (lease 4 s > timeout 3 s), for the test's dispatcher.
WORKER_POLICY = DeliveryPolicy(
    schedule_s=(0.0, 0.2, 0.2, 0.2),
    jitter=0.0,
    timeout_s=3.0,
    lease_s=4.0,
    allowed_networks=LOOPBACK,
)


def add_endpoint(
    sessions: SessionFactory, tenant: Tenant, url: str = HOOK, **kwargs: Any
) -> WebhookEndpoint:
    """A webhook endpoint of the tenant at ``url``, loopback destinations allowed."""
    with sessions() as session:
        return webhooks.create_endpoint(
            session, tenant_id=tenant.id, url=url, allowed_networks=LOOPBACK, **kwargs
        )


def add_ping(sessions: SessionFactory, tenant: Tenant, endpoint: WebhookEndpoint) -> uuid.UUID:
    """A ping to ``endpoint``: the id of its delivery."""
    with sessions() as session:
        return webhooks.create_ping(session, tenant_id=tenant.id, endpoint_id=endpoint.id).id


def delivery_of(sessions: SessionFactory, ident: uuid.UUID) -> WebhookDelivery:
    """The delivery row ``ident``."""
    with sessions() as session:
        return session.get_one(WebhookDelivery, ident)


def attempts_of(sessions: SessionFactory, ident: uuid.UUID) -> list[WebhookAttempt]:
    """The logged attempts of delivery ``ident``, first first."""
    with sessions() as session:
        return list(
            session.scalars(
                sa.select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == ident)
                .order_by(WebhookAttempt.number)
            )
        )


def delivery_state(sessions: SessionFactory, ident: uuid.UUID) -> WebhookDeliveryState:
    """The state of delivery ``ident``."""
    return delivery_of(sessions, ident).state


def delivery_is_final(sessions: SessionFactory, ident: uuid.UUID) -> bool:
    """Whether delivery ``ident`` succeeded or failed."""
    return delivery_state(sessions, ident) in (
        WebhookDeliveryState.SUCCEEDED,
        WebhookDeliveryState.FAILED,
    )


def wait_all_final(
    env: WorkerEnv,
    idents: list[uuid.UUID],
    worker: WorkerProcess,
    dispatch: Callable[[], object],
    *,
    timeout: float = 60.0,
) -> dict[uuid.UUID, WebhookDelivery]:
    """Run dispatcher passes until every delivery is final (``timeout`` seconds, or the
    worker's exit, fail the test with the states and the worker's log)."""
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


def _rows_where(sessions: SessionFactory, model: type[_Row], **where: Any) -> list[_Row]:
    """The rows of ``model`` whose columns equal ``where``, oldest first (``created_at``)."""
    with sessions() as session:
        query = sa.select(model).filter_by(**where).order_by(model.created_at)
        return list(session.scalars(query))


def events_where(sessions: SessionFactory, **where: Any) -> list[WebhookEvent]:
    """The webhook events whose columns equal ``where`` (oldest first)."""
    return _rows_where(sessions, WebhookEvent, **where)


def deliveries_where(sessions: SessionFactory, **where: Any) -> list[WebhookDelivery]:
    """The webhook deliveries whose columns equal ``where`` (oldest first)."""
    return _rows_where(sessions, WebhookDelivery, **where)

"""Delivery throughput: a backlog of pings committed in one transaction, one dispatcher pass
requested, timed from the commit to the last arrival at the receiver."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.lib.hook_receiver import Receiver
from bench.lib.machine import (
    MACHINE_BUSY,
    cpu_delta,
    cpu_snapshot,
    load_average,
    machine_cpus,
)
from bench.lib.stats import summary
from bench.lib.webhook_stack import WebhookStack, wait_for


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
        wait_for(lambda: len(receiver.arrived(msg_ids)) >= deliveries, timeout_s=drain_s)
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

    wait_for(recorded, timeout_s=5.0)
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

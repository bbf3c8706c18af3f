"""Webhook latency at a rate: comparisons submitted by a paced open-loop client, and for each
the delay from its ``finished_at`` to its ``comparison.succeeded`` webhook's arrival."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import httpx

from bench.lib.client import FINAL
from bench.lib.hook_receiver import Receiver, posix_s
from bench.lib.machine import (
    MACHINE_BUSY,
    cpu_delta,
    cpu_snapshot,
    load_average,
    machine_cpus,
)
from bench.lib.stats import percentile, summary
from bench.lib.webhook_stack import WebhookStack, wait_for

#: Missing comparison ids listed in the report (the count is always complete).
MISSING_SHOWN = 20


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

    wait_for(done, timeout_s=drain_s, interval_s=0.5)
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
            posix_s(row.created_at),
            posix_s(row.started_at),
            posix_s(row.finished_at),
        )
        if created is not None and started is not None:
            queue_wait.append((started - created) * 1000)
        if started is not None and finished is not None:
            run.append((finished - started) * 1000)
        arrival = arrivals.get(cid)
        if arrival is None or finished is None:
            continue
        delay.append(arrival.at - finished)
        attempt = posix_s(attempt_starts.get(cid))
        if attempt is not None:
            to_attempt.append((attempt - finished) * 1000)
            post_to_arrival.append((arrival.at - attempt) * 1000)
    finished_times = sorted(
        t for t in (posix_s(rows[c].finished_at) for c in cids if c in rows) if t is not None
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

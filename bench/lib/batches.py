"""Load through the service's batch API: POST a batch of uploaded pairs, poll it until every
comparison is final, the per-job figures of a finished batch, and the timed acceptance of a
big batch with the worker stopped."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import httpx

from bench.lib.client import FINAL
from bench.lib.machine import (
    cpu_delta,
    cpu_snapshot,
    load_average,
    machine_cpus,
)
from bench.lib.stack import ServiceStack
from bench.lib.windows import Window

#: Seconds between two polls of the timed batch.
POLL_S = 0.2


def batch_body(ids: Sequence[tuple[str, str]], pairs: int) -> bytes:
    """JSON body of ``POST /v1/batches`` with ``pairs`` pairs cycling over ``ids``."""
    items = [{"a": ids[i % len(ids)][0], "b": ids[i % len(ids)][1]} for i in range(pairs)]
    return json.dumps({"pairs": items, "metadata": {"bench": "service"}}).encode()


@dataclass
class BatchOutcome:
    """A batch run to completion through the service."""

    batch_id: str
    submit_s: float
    wall_s: float
    polls: int
    counts: dict[str, int]


def run_batch(
    http: httpx.Client,
    ids: Sequence[tuple[str, str]],
    pairs: int,
    *,
    poll_s: float,
    timeout_s: float,
    stack: ServiceStack | None = None,
) -> BatchOutcome:
    """POST a batch of ``pairs`` pairs and poll it every ``poll_s`` s until every comparison is
    final; time from the request to that poll's answer.

    Returns
    -------
    BatchOutcome
        ``submit_s`` (POST to 202) and ``wall_s`` (POST to all final), in seconds.
    """
    body = batch_body(ids, pairs)
    headers = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    response = http.post("/v1/batches", content=body, headers=headers)
    submit = time.perf_counter() - t0
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/batches: {response.status_code} {response.text[:500]}")
    created = response.json()
    if created["accepted"] != pairs:
        raise RuntimeError(f"batch accepted {created['accepted']} of {pairs} pairs")
    batch_id = str(created["id"])
    polls = 0
    deadline = time.monotonic() + timeout_s
    while True:
        time.sleep(poll_s)
        batch = http.get(f"/v1/batches/{batch_id}")
        polls += 1
        batch.raise_for_status()
        counts = batch.json()["counts"]
        if sum(counts.get(state, 0) for state in FINAL) >= pairs:
            wall = time.perf_counter() - t0
            break
        if time.monotonic() > deadline:
            extra = stack.describe_failure() if stack is not None else ""
            raise TimeoutError(
                f"batch {batch_id} not done after {timeout_s:g} s: {counts}\n{extra}"
            )
    return BatchOutcome(batch_id, round(submit, 4), round(wall, 4), polls, counts)


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def batch_job_stats(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    """Per-job figures of a finished batch, from its comparisons (``GET
    /v1/batches/{id}/comparisons``): medians in ms of queue wait (created -> started), run
    (started -> finished: storage reads, the engine, the heatmap write), the engine's own
    total, and run - engine (the per-job overhead inside the worker); the first job's start
    after the batch was created (ms, dispatch latency); the server-side makespan (first
    created -> last finished, s) and the sum of the runs (s); attempts; failures."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        page = http.get(f"/v1/batches/{batch_id}/comparisons", params=params)
        page.raise_for_status()
        body = page.json()
        items.extend(body.get("items", []))
        cursor = body.get("next_cursor")
        if not cursor:
            break
    wait_ms: list[float] = []
    run_ms: list[float] = []
    engine_ms: list[float] = []
    overhead_ms: list[float] = []
    created: list[datetime] = []
    started: list[datetime] = []
    finished: list[datetime] = []
    errors: dict[str, int] = {}
    for item in items:
        c, s, f = (_parse_time(item.get(k)) for k in ("created_at", "started_at", "finished_at"))
        if c is not None:
            created.append(c)
        if s is not None:
            started.append(s)
        if f is not None:
            finished.append(f)
        if c is not None and s is not None:
            wait_ms.append((s - c).total_seconds() * 1000)
        if s is not None and f is not None:
            run = (f - s).total_seconds() * 1000
            run_ms.append(run)
            total = ((item.get("result") or {}).get("timings_ms") or {}).get("total")
            if isinstance(total, int | float):
                engine_ms.append(float(total))
                overhead_ms.append(run - float(total))
        if item.get("error"):
            code = str(item["error"].get("code"))
            errors[code] = errors.get(code, 0) + 1

    def med(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    return {
        "comparisons": len(items),
        "states": _count(item.get("state") for item in items),
        "max_attempts": max((int(item.get("attempts") or 0) for item in items), default=0),
        "errors": errors,
        "queue_wait_ms_median": med(wait_ms),
        "run_ms_median": med(run_ms),
        "run_s_total": round(sum(run_ms) / 1000, 3),
        "engine_ms_median": med(engine_ms),
        "overhead_ms_median": med(overhead_ms),
        "overhead_ms_mean": round(statistics.fmean(overhead_ms), 1) if overhead_ms else None,
        "first_start_ms": (
            round((min(started) - min(created)).total_seconds() * 1000, 1)
            if created and started
            else None
        ),
        "server_makespan_s": (
            round((max(finished) - min(created)).total_seconds(), 3)
            if created and finished
            else None
        ),
    }


def _count(values: Iterator[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return out


@dataclass
class ServiceRun(Window):
    """One timed service batch (see :class:`Window`; ``cpu_s`` has the worker's main and pool
    processes, the API, moto S3, PostgreSQL, Redis and ``bench``, this polling process).

    Attributes
    ----------
    workers : int
        Worker concurrency.
    submit_s : float
        POST /v1/batches to 202, seconds.
    polls : int
        GET /v1/batches/{id} requests made.
    jobs : dict
        :func:`batch_job_stats` of the batch.
    """

    workers: int
    submit_s: float
    polls: int
    jobs: dict[str, Any]


def warm_up(
    stack: ServiceStack,
    ids: Sequence[tuple[str, str]],
    *,
    poll_s: float = POLL_S,
    timeout_s: float = 300.0,
) -> float:
    """Run an untimed batch of 2N pairs so every pool process has done its first job
    (connections, clients, thread pools); return its wall time in seconds."""
    with stack.client() as http:
        outcome = run_batch(
            http, ids, 2 * stack.workers, poll_s=poll_s, timeout_s=timeout_s, stack=stack
        )
    return outcome.wall_s


def run_service(
    stack: ServiceStack,
    ids: Sequence[tuple[str, str]],
    *,
    pairs: int,
    poll_s: float = POLL_S,
    timeout_s: float = 300.0,
) -> ServiceRun:
    """Time one batch of ``pairs`` pairs through the service, from POST to all final.

    Parameters
    ----------
    stack : ServiceStack
        A started stack with its worker running (warmed up with :func:`warm_up`).
    ids : sequence of (str, str)
        Image ids of the uploaded pairs.
    pairs : int
        Comparisons of the batch (>= 1).
    poll_s : float
        Seconds between two polls of ``GET /v1/batches/{id}``.
    timeout_s : float
        Seconds the batch may take.

    Returns
    -------
    ServiceRun
        The figures of the batch, per-job statistics and CPU seconds by component.
    """
    with stack.client() as http:
        groups = stack.groups()
        main_pids = {"worker": stack.procs["worker"].pid}
        load_start = load_average()
        before = cpu_snapshot(groups, main_pids=main_pids)
        bench0 = time.process_time()
        outcome = run_batch(http, ids, pairs, poll_s=poll_s, timeout_s=timeout_s, stack=stack)
        cpu = cpu_delta(cpu_snapshot(groups, main_pids=main_pids), before)
        cpu["bench"] = round(time.process_time() - bench0, 3)
        jobs = batch_job_stats(http, outcome.batch_id)
    return ServiceRun(
        pairs=pairs,
        wall_s=outcome.wall_s,
        cpu_s=cpu,
        cpus=machine_cpus(),
        load_start=load_start,
        workers=stack.workers,
        submit_s=outcome.submit_s,
        polls=outcome.polls,
        jobs=jobs,
    )


@dataclass
class AcceptRun:
    """Batch-acceptance requests: seconds from POST to 202 and pairs accepted, each request."""

    pairs: int
    times_s: list[float]
    accepted: list[int]
    load_start: list[float]

    @property
    def median_s(self) -> float:
        """Median seconds from POST to 202."""
        return float(statistics.median(self.times_s))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (median included)."""
        return {**asdict(self), "median_s": round(self.median_s, 4)}


def run_accept(
    stack: ServiceStack, ids: Sequence[tuple[str, str]], *, pairs: int, repeat: int
) -> AcceptRun:
    """Time ``repeat`` POSTs of a ``pairs``-pair batch, with the worker stopped (the
    comparisons stay ``queued``; dropping the database discards them).

    Parameters
    ----------
    stack : ServiceStack
        The stack, its worker stopped (:meth:`ServiceStack.stop_worker`).
    ids : sequence of (str, str)
        Image ids of the uploaded pairs (the batch cycles over them).
    pairs : int
        Pairs per request (>= 1).
    repeat : int
        Requests (>= 1).

    Returns
    -------
    AcceptRun
        Seconds from POST to 202 of each request.
    """
    if "worker" in stack.procs:
        raise RuntimeError("stop the worker before timing batch acceptance")
    body = batch_body(ids, pairs)
    headers = {"Content-Type": "application/json"}
    load_start = load_average()
    times: list[float] = []
    accepted: list[int] = []
    with stack.client(timeout=120.0) as http:
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = http.post("/v1/batches", content=body, headers=headers)
            elapsed = time.perf_counter() - t0
            if response.status_code != 202:
                raise RuntimeError(
                    f"POST /v1/batches ({pairs} pairs): {response.status_code} "
                    f"{response.text[:500]}"
                )
            times.append(round(elapsed, 4))
            accepted.append(int(response.json()["accepted"]))
    return AcceptRun(pairs=pairs, times_s=times, accepted=accepted, load_start=load_start)

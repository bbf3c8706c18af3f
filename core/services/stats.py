"""Job statistics read from the database, for monitoring (Prometheus gauges at scrape time).

Postgres is the source of truth for job state, so queue depth, running jobs, recent failures and
per-stage durations are read from it rather than counted in one process's memory.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.db.models import Comparison, ComparisonQueue, ComparisonState, utcnow

#: How many recently finished comparisons the per-stage durations are computed over.
RECENT_JOBS = 200


@dataclass(frozen=True)
class JobStats:
    """A snapshot of the job queue.

    Attributes
    ----------
    queued
        Comparisons ``queued``, by queue name.
    running
        Comparisons ``running`` now.
    failures
        Comparisons that ended ``failed`` within the window, by error code.
    stage_seconds
        For the last ``RECENT_JOBS`` succeeded comparisons: per engine stage (``decode``,
        ``metrics``, ``align``, ..., ``total``), the median and 95th percentile in seconds.
    """

    queued: dict[str, int]
    running: int
    failures: dict[str, int]
    stage_seconds: dict[str, dict[str, float]] = field(default_factory=dict)


def job_stats(session: Session, *, failure_window_s: int) -> JobStats:
    """Read the queue snapshot (a few indexed queries); ``failure_window_s`` in seconds."""
    queued_rows = session.execute(
        sa.select(Comparison.queue, sa.func.count())
        .where(Comparison.state == ComparisonState.QUEUED)
        .group_by(Comparison.queue)
    ).all()
    queued = {queue.value: 0 for queue in ComparisonQueue}
    queued.update({str(ComparisonQueue(q).value): int(n) for q, n in queued_rows})
    running = session.scalar(
        sa.select(sa.func.count()).where(Comparison.state == ComparisonState.RUNNING)
    )
    since = utcnow() - timedelta(seconds=failure_window_s)
    failures = session.execute(
        sa.select(Comparison.error_code, sa.func.count())
        .where(Comparison.state == ComparisonState.FAILED, Comparison.updated_at >= since)
        .group_by(Comparison.error_code)
    ).all()
    results = session.scalars(
        sa.select(Comparison.result)
        .where(Comparison.state == ComparisonState.SUCCEEDED)
        .order_by(Comparison.finished_at.desc())
        .limit(RECENT_JOBS)
    ).all()
    return JobStats(
        queued=queued,
        running=int(running or 0),
        failures={code or "unknown": int(n) for code, n in failures},
        stage_seconds=_stage_quantiles(results),
    )


def _stage_quantiles(results: Sequence[dict[str, object] | None]) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {}
    for result in results:
        timings = (result or {}).get("timings_ms")
        if not isinstance(timings, dict):
            continue
        for stage, ms in timings.items():
            if isinstance(ms, int | float):
                samples.setdefault(str(stage), []).append(float(ms) / 1000.0)
    out: dict[str, dict[str, float]] = {}
    for stage, values in samples.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        out[stage] = {"0.5": statistics.median(values), "0.95": p95}
    return out

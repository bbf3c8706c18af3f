"""Prometheus metrics of one API app, served at ``GET /metrics``.

Exposed (per API process; each app has its own registry):

``diffall_http_requests_total{method, route, status}``
    Counter of answered requests, by route template (``/v1/comparisons/{comparison_id}``;
    ``<unmatched>`` for unknown paths) and status code.
``diffall_http_request_duration_seconds{method, route}``
    Histogram of request latency in seconds.
``diffall_queue_depth{queue}``
    Gauge, read from the database at scrape time: comparisons ``queued`` on each queue
    (``interactive``, ``batch``).
``diffall_comparisons_running``
    Gauge, read from the database at scrape time: comparisons ``running`` now.
``diffall_comparison_failures_recent{code}``
    Gauge, read from the database at scrape time: comparisons that ended ``failed`` in the last
    :data:`FAILURE_WINDOW_S` seconds, by error code.
``diffall_job_stage_duration_seconds{stage, quantile}``
    Gauge, read from the database at scrape time: median (0.5) and 95th percentile (0.95) of
    each engine stage (decode, metrics, align, regions, heatmap, total) over the last
    ``RECENT_JOBS`` succeeded comparisons (from their results' ``timings_ms``).
``diffall_metrics_database_up``
    1 when the scrape-time database queries succeeded, else 0 (and the gauges above are absent).

The scrape-time figures come from ``core.services.stats`` (PostgreSQL is the source of truth
for job state, so every API process reports the same numbers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from core.services.stats import RECENT_JOBS, job_stats

__all__ = ["FAILURE_WINDOW_S", "ApiMetrics", "DatabaseCollector"]

log = structlog.get_logger("api.metrics")

#: Window of ``diffall_comparison_failures_recent``, in seconds.
FAILURE_WINDOW_S: Final = 3600

#: Latency histogram buckets, in seconds.
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DatabaseCollector(Collector):
    """Gauges read from the database when Prometheus scrapes (cheap, indexed queries).

    Parameters
    ----------
    sessions
        Session factory of the app's database; None until the app started.
    """

    def __init__(self) -> None:
        self.sessions: sessionmaker[Session] | None = None

    def collect(self) -> Iterable[Metric]:
        """Yield the queue depth, running count and recent failures (see the module doc)."""
        up = GaugeMetricFamily(
            "diffall_metrics_database_up", "1 if the scrape-time database queries succeeded"
        )
        if self.sessions is None:
            up.add_metric([], 0.0)
            yield up
            return
        try:
            with self.sessions() as session, session.begin():
                stats = job_stats(session, failure_window_s=FAILURE_WINDOW_S)
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("metrics_database_query_failed", error=type(exc).__name__)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        depth = GaugeMetricFamily(
            "diffall_queue_depth", "Comparisons queued, by queue", labels=["queue"]
        )
        for queue, count in sorted(stats.queued.items()):
            depth.add_metric([queue], float(count))
        yield depth
        yield GaugeMetricFamily(
            "diffall_comparisons_running", "Comparisons running now", value=float(stats.running)
        )
        recent = GaugeMetricFamily(
            "diffall_comparison_failures_recent",
            f"Comparisons failed in the last {FAILURE_WINDOW_S} s, by error code",
            labels=["code"],
        )
        for code, count in sorted(stats.failures.items()):
            recent.add_metric([code], float(count))
        yield recent
        stages = GaugeMetricFamily(
            "diffall_job_stage_duration_seconds",
            f"Engine stage durations of the last {RECENT_JOBS} succeeded comparisons",
            labels=["stage", "quantile"],
        )
        for stage, quantiles in sorted(stats.stage_seconds.items()):
            for quantile, seconds in quantiles.items():
                stages.add_metric([stage, quantile], seconds)
        yield stages


class ApiMetrics:
    """The metrics of one app: a private registry (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "diffall_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "diffall_http_request_duration_seconds",
            "HTTP request latency in seconds, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.database = DatabaseCollector()
        self.registry.register(self.database)

    def observe_request(self, *, method: str, route: str, status: int, duration_s: float) -> None:
        """Record one answered request.

        Parameters
        ----------
        method
            HTTP method.
        route
            Route template, or ``<unmatched>``.
        status
            HTTP status code sent.
        duration_s
            Time from the first byte received to the end of the response, in seconds (>= 0).
        """
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.latency.labels(method=method, route=route).observe(duration_s)

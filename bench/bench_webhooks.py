"""Webhook benchmark: delivery throughput, and the delay from a comparison ending to its webhook.

Run it from the repository root (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 must be
up)::

    .venv/bin/python -m bench.bench_webhooks [--rate 50] [--seconds 10] [--workers N]
                                             [--deliveries 500] [--json OUT]

Set-up (untimed): the real stack of :mod:`bench.lib.stack` (a fresh PostgreSQL database, an
empty Redis database, moto's S3 server, the API under uvicorn) with the normal worker set-up:
ONE Celery worker with ``--concurrency N`` (default: the service's default,
``WorkerSettings.processes``: the CPUs + 1) consuming
``interactive,batch,maintenance`` with its beat embedded (``--beat``, which sends the webhook
dispatcher every ``webhooks.dispatch_interval_s``), as ``diffall serve`` runs it; every service
setting at its default but ``DIFFALL_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32``. A receiver on
loopback (a threaded ``http.server`` in this process) verifies every delivery's signature with
``standardwebhooks`` and records its arrival time per ``webhook-id``; an endpoint for
``comparison.succeeded`` is registered through ``POST /v1/webhooks``.

1. **Delivery throughput**: ``--deliveries`` ping events are written through the service
   function the API uses (:func:`core.services.webhooks.endpoints.create_ping`), all in one
   transaction, so the backlog appears at once when it commits; then one dispatcher pass is
   requested (:meth:`core.services.jobqueue.CeleryDeliveryQueue.kick`). Timed from the commit to
   the last arrival: deliveries per second with the normal worker count.
2. **Latency at ``--rate`` comparisons per second**: tiny PNG pairs (``--size``, 32x32 by
   default: the engine takes about 1 ms) are submitted through ``POST /v1/comparisons`` by a
   paced client (open loop: request i is sent at t0 + i / rate by a pool of sender threads) for
   ``--seconds`` seconds. For each comparison, the delay from its ``finished_at`` (read from the
   database) to the arrival of its ``comparison.succeeded`` webhook at the receiver. Median and
   p99 are judged (targets < 1 s and < 3 s); every webhook must arrive.

Everything started is stopped, the database dropped and the Redis database flushed in a
``finally``. The script exits 0 whatever the figures: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.table import Table

from bench.images import noise_png_pairs
from bench.lib.client import fmt, upload_pairs
from bench.lib.hook_receiver import Receiver
from bench.lib.machine import (
    MACHINE_BUSY,
    load_average,
    machine_info,
    progress,
)
from bench.lib.stats import summary
from bench.lib.webhook_latency import LatencyRun, run_latency
from bench.lib.webhook_stack import (
    ALLOWED_NETWORKS,
    WebhookStack,
    database,
    register_endpoint,
    warm_up,
)
from bench.lib.webhook_throughput import ThroughputRun, run_throughput
from core.config import WorkerSettings

#: Comparisons submitted per second in the latency window.
DEFAULT_RATE = 50.0
#: Seconds the paced submission lasts.
DEFAULT_SECONDS = 10.0
#: Ping deliveries of the throughput backlog.
DEFAULT_DELIVERIES = 500
#: Side of the square test images, in pixels.
DEFAULT_SIZE = 32
#: Distinct image pairs, reused cyclically.
DEFAULT_DISTINCT = 4
#: Seed of the first image pair (pair i uses seed + i).
DEFAULT_SEED = 2024
#: Client threads sending the paced requests (an open loop: a slow answer delays no later
#: request while a thread is free).
DEFAULT_SENDERS = 16
#: Target: median seconds from a comparison's ``finished_at`` to its webhook's arrival, below.
TARGET_MEDIAN_S = 1.0
#: Target: 99th percentile of that delay, below (seconds).
TARGET_P99_S = 3.0
#: Share of ``--rate`` the comparisons must actually finish at for the latency to count as
#: measured "at that rate".
RATE_TOLERANCE = 0.95
# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WebhookBenchConfig:
    """What one run does.

    Attributes
    ----------
    workers : int
        Celery worker concurrency (prefork pool processes, >= 1).
    rate : float
        Comparisons submitted per second in the latency window (> 0).
    seconds : float
        Length of the paced submission, seconds (> 0); ``round(rate * seconds)`` comparisons.
    deliveries : int
        Ping deliveries of the throughput backlog (>= 0; 0 skips that step).
    size : int
        Side of the square PNG test images, pixels (8..512).
    distinct : int
        Distinct image pairs, reused cyclically (>= 1).
    seed : int
        Seed of the first image pair.
    senders : int
        Client threads sending the paced requests (>= 1).
    drain_s : float
        Seconds to wait, after the last submission or the backlog's commit, for every
        comparison to end and every webhook to arrive (> 0).
    timeout_s : float
        Seconds a process may take to start (> 0).
    webhook_workers : int
        Threads of the delivery worker consuming only the ``maintenance`` queue (>= 0; 0: none,
        the set-up before ``diffall serve`` and compose ran one; see
        :func:`webhook_worker_argv`).
    """

    workers: int
    rate: float = DEFAULT_RATE
    seconds: float = DEFAULT_SECONDS
    deliveries: int = DEFAULT_DELIVERIES
    size: int = DEFAULT_SIZE
    distinct: int = DEFAULT_DISTINCT
    seed: int = DEFAULT_SEED
    senders: int = DEFAULT_SENDERS
    drain_s: float = 60.0
    timeout_s: float = 60.0
    webhook_workers: int = 0

    def __post_init__(self) -> None:
        if min(self.workers, self.distinct, self.senders) < 1:
            raise ValueError("workers, distinct and senders must be >= 1")
        if self.deliveries < 0 or self.webhook_workers < 0:
            raise ValueError("deliveries and webhook_workers must be >= 0")
        if not (self.rate > 0 and self.seconds > 0 and self.drain_s > 0 and self.timeout_s > 0):
            raise ValueError("rate, seconds, drain_s and timeout_s must be > 0")
        if not 8 <= self.size <= 512:
            raise ValueError("size must be within 8..512 pixels")
        if round(self.rate * self.seconds) < 1:
            raise ValueError("rate * seconds must make at least one comparison")

    @property
    def comparisons(self) -> int:
        """Comparisons of the latency window: ``round(rate * seconds)``."""
        return round(self.rate * self.seconds)


# --------------------------------------------------------------------------------------------
# The whole run, targets, output
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run measured."""

    config: WebhookBenchConfig
    machine: dict[str, Any]
    throughput: ThroughputRun | None = None
    latency: LatencyRun | None = None
    warmup_s: float | None = None
    bad_signatures: int = 0
    duplicates: int = 0
    requests: int = 0
    stack: dict[str, Any] = field(default_factory=dict)

    def targets(self) -> list[dict[str, Any]]:
        """The judged rows: name, measured value, limit, status (PASS, FAIL, info or n/a).

        The latency targets hold "at ``rate`` comparisons per second": the rate row says
        whether the comparisons really ended that fast (if not, the delays were measured at a
        lower rate, which it shows).
        """
        lat = self.latency
        rows: list[dict[str, Any]] = []
        median = None if lat is None else lat.delay_median_s
        p99 = None if lat is None else lat.delay_p99_s

        def status(ok: bool | None) -> str:
            return "n/a" if ok is None else ("PASS" if ok else "FAIL")

        rows.append(
            {
                "target": "delay finished -> webhook arrived, median (s)",
                "measured": None if median is None else round(median, 3),
                "limit": f"< {TARGET_MEDIAN_S:g} s",
                "status": status(None if median is None else median < TARGET_MEDIAN_S),
            }
        )
        rows.append(
            {
                "target": "delay finished -> webhook arrived, p99 (s)",
                "measured": None if p99 is None else round(p99, 3),
                "limit": f"< {TARGET_P99_S:g} s",
                "status": status(None if p99 is None else p99 < TARGET_P99_S),
            }
        )
        finish = None if lat is None else lat.finish_rate
        want = self.config.rate * RATE_TOLERANCE
        rows.append(
            {
                "target": "comparisons finished per second (the delays' condition)",
                "measured": finish,
                "limit": f">= {want:g} ({RATE_TOLERANCE:.0%} of {self.config.rate:g})",
                "status": status(None if finish is None else finish >= want),
            }
        )
        tp = self.throughput
        if lat is not None or tp is not None:
            lost = self.bad_signatures
            if lat is not None:
                lost += lat.missing + sum(v for k, v in lat.states.items() if k != "succeeded")
            if tp is not None:
                lost += tp.deliveries - tp.arrived
            rows.append(
                {
                    "target": "webhooks arrived, correctly signed (missing, not succeeded, "
                    "bad signatures)",
                    "measured": lost,
                    "limit": "0",
                    "status": status(lost == 0),
                }
            )
        rows.append(
            {
                "target": "deliveries per second (backlog, commit -> last arrival)",
                "measured": None if tp is None or tp.rate is None else round(tp.rate, 2),
                "limit": "no target",
                "status": "n/a" if tp is None or tp.rate is None else "info",
            }
        )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "config": asdict(self.config),
            "machine": self.machine,
            "throughput": None if self.throughput is None else self.throughput.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
            "warmup_s": self.warmup_s,
            "receiver": {
                "requests": self.requests,
                "bad_signatures": self.bad_signatures,
                "duplicates": self.duplicates,
            },
            "targets": self.targets(),
            "stack": self.stack,
        }


def run(config: WebhookBenchConfig, *, console: Console | None = None) -> Report:
    """Run the whole benchmark: the stack, the throughput backlog, the paced latency window;
    every subprocess, the database and the Redis database are cleaned up whatever happens.

    Parameters
    ----------
    config : WebhookBenchConfig
        What to run.
    console : rich.console.Console, optional
        Where to print progress lines (none when omitted).

    Returns
    -------
    Report
        The figures; :func:`render` prints them.
    """

    say = progress(console)

    report = Report(config=config, machine=machine_info(pipeline=True))
    pngs = noise_png_pairs(config.distinct, config.size, seed=config.seed)
    receiver = Receiver()
    try:
        say(
            "starting the stack: PostgreSQL database, Redis database, moto S3, worker "
            f"(concurrency {config.workers}, embedded beat"
            + (
                f"; a delivery worker of {config.webhook_workers} threads on maintenance"
                if config.webhook_workers
                else ""
            )
            + "), API"
        )
        stack = WebhookStack(
            workers=config.workers,
            timeout_s=config.timeout_s,
            webhook_workers=config.webhook_workers,
        )
        with stack:
            report.stack = {
                "database": stack.database_name,
                "redis_db": stack.redis_db,
                "base_url": stack.base_url,
                "pids": {name: proc.pid for name, proc in stack.procs.items()},
            }
            try:
                with database(stack.database_url) as engine, stack.client() as http:
                    endpoint_id, receiver.secret = register_endpoint(http, receiver.url())
                    ids = upload_pairs(http, pngs)
                    say(f"warm-up: {2 * config.workers} pings and comparisons")
                    report.warmup_s = warm_up(
                        stack,
                        receiver,
                        ids,
                        endpoint_id=endpoint_id,
                        count=2 * config.workers,
                        timeout_s=config.drain_s,
                    )
                    if config.deliveries:
                        say(f"throughput: a backlog of {config.deliveries} ping deliveries")
                        report.throughput = run_throughput(
                            stack,
                            receiver,
                            engine,
                            endpoint_id=endpoint_id,
                            deliveries=config.deliveries,
                            drain_s=config.drain_s,
                        )
                    say(
                        f"latency: {config.comparisons} comparisons of {config.size}x"
                        f"{config.size} PNGs at {config.rate:g}/s for {config.seconds:g} s"
                    )
                    report.latency = run_latency(
                        stack,
                        receiver,
                        engine,
                        ids,
                        rate=config.rate,
                        count=config.comparisons,
                        senders=config.senders,
                        drain_s=config.drain_s,
                    )
            except Exception as exc:
                raise RuntimeError(f"{exc}\n{stack.describe_failure()}") from exc
            say("cleaning up: processes, database, Redis database")
    finally:
        receiver.close()
    report.bad_signatures = receiver.bad_signatures
    report.duplicates = receiver.duplicates()
    report.requests = receiver.requests
    report.machine["load_average_end"] = load_average()
    return report


def _cpu_table(title: str, cpu_s: dict[str, float], per: int, unit: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column(f"CPU ms / {unit}", justify="right")
    table.add_column("CPU s", justify="right")
    ours = {k: v for k, v in cpu_s.items() if k != MACHINE_BUSY}
    for name, value in sorted(ours.items(), key=lambda kv: -kv[1]):
        table.add_row(name, fmt(value / max(1, per) * 1000, 1), fmt(value, 2))
    total = sum(ours.values())
    table.add_row("[bold]ours, total[/bold]", fmt(total / max(1, per) * 1000, 1), fmt(total))
    foreign = max(0.0, cpu_s.get(MACHINE_BUSY, 0.0) - total)
    table.add_row("other processes", fmt(foreign / max(1, per) * 1000, 1), fmt(foreign))
    return table


def render(console: Console, report: Report) -> None:
    """Print the report's tables.

    Parameters
    ----------
    console : rich.console.Console
        Where to print.
    report : Report
        What :func:`run` measured.
    """
    m, c = report.machine, report.config
    console.print(
        f"[bold]DiffALL webhook benchmark[/bold] on {m.get('cpu_model')}: {m.get('cpu_count')} "
        f"cores ({m.get('cpu_affinity')} usable); ONE worker, concurrency {c.workers}, queues "
        f"interactive,batch,maintenance, beat embedded (dispatcher every 1 s)"
        + (
            f", plus a delivery worker of {c.webhook_workers} threads on maintenance only "
            "(the normal set-up of diffall serve and compose)"
            if c.webhook_workers
            else ", [yellow]no delivery worker (not the normal set-up)[/yellow]"
        )
        + f"; allow-list {ALLOWED_NETWORKS}"
    )
    end = m.get("load_average_end")
    console.print(
        "load average (1, 5, 15 min): at start "
        + " ".join(str(v) for v in m.get("load_average", []))
        + ("" if end is None else "; at end " + " ".join(str(v) for v in end))
    )
    console.print(
        f"python {m.get('python')}; receiver: {report.requests} requests, "
        f"{report.bad_signatures} bad signatures, {report.duplicates} duplicates "
        f"(standardwebhooks verification); warm-up {fmt(report.warmup_s)} s"
    )

    tp = report.throughput
    if tp is not None:
        table = Table(
            title=f"1. Delivery throughput: backlog of {tp.deliveries} pings committed at once",
            title_justify="left",
        )
        for name in (
            "arrived",
            "commit -> first s",
            "commit -> last s",
            "deliveries / s",
            "steady / s",
            "POST ms (median, p99)",
            "attempts",
            "states",
            "load 1 min",
        ):
            table.add_column(name, justify="right")
        table.add_row(
            f"{tp.arrived}/{tp.deliveries}",
            fmt(tp.first_arrival_s),
            fmt(tp.wall_s),
            fmt(tp.rate, 1),
            fmt(tp.steady_rate, 1),
            f"{fmt(tp.attempt_ms.get('median'), 0)}, {fmt(tp.attempt_ms.get('p99'), 0)}",
            str(tp.attempts),
            ", ".join(f"{k} {v}" for k, v in sorted(tp.states.items())),
            fmt(tp.load_start[0]),
        )
        console.print(table)
        console.print(
            _cpu_table(
                "CPU per delivery by component (throughput window)",
                tp.cpu_s,
                tp.deliveries,
                "delivery",
            )
        )

    lat = report.latency
    if lat is not None:
        table = Table(
            title=f"2. Latency: {lat.planned} comparisons at {lat.rate:g}/s "
            f"({c.size}x{c.size} PNGs), one webhook each",
            title_justify="left",
        )
        table.add_column("figure")
        table.add_column("value", justify="right")
        rejected = ", ".join(f"{k}: {v}" for k, v in lat.rejected.items()) or "none"
        table.add_row("accepted (202) / planned", f"{lat.accepted} / {lat.planned}")
        table.add_row("rejected", rejected)
        table.add_row("submitted per s", fmt(lat.submit_rate, 1))
        table.add_row(
            "send lag ms (median, p99)",
            f"{fmt(lat.send_lag_ms['median'], 0)}, {fmt(lat.send_lag_ms['p99'], 0)}",
        )
        table.add_row(
            "POST to 202 ms (median, p99)",
            f"{fmt(lat.post_ms['median'], 0)}, {fmt(lat.post_ms['p99'], 0)}",
        )
        table.add_row("finished per s", fmt(lat.finish_rate, 1))
        table.add_row("states", ", ".join(f"{k} {v}" for k, v in sorted(lat.states.items())))
        table.add_row("webhooks arrived", str(lat.arrived))
        shown = (": " + ", ".join(lat.missing_ids)) if lat.missing_ids else ""
        table.add_row("webhooks missing", f"{lat.missing}{shown}")
        table.add_row("deliveries retried", str(lat.retried))
        table.add_row("first submission -> last event s", fmt(lat.wall_s))
        console.print(table)

        stages = Table(title="Where the time goes (per comparison)", title_justify="left")
        stages.add_column("stage")
        for name in ("median", "p99", "max", "n"):
            stages.add_column(name, justify="right")
        for label, values, scale in (
            ("comparison queue wait (created -> started) ms", lat.queue_wait_ms, 1.0),
            ("comparison run (started -> finished) ms", lat.run_ms, 1.0),
            ("finished -> delivery attempt started ms", lat.to_attempt_ms, 1.0),
            ("attempt started -> arrival ms", lat.post_to_arrival_ms, 1.0),
            ("[bold]finished -> webhook arrived ms[/bold]", lat.delay_s, 1000.0),
        ):
            s = summary([v * scale for v in values])
            stages.add_row(
                label, fmt(s["median"], 0), fmt(s["p99"], 0), fmt(s["max"], 0), str(s["n"])
            )
        console.print(stages)
        console.print(
            _cpu_table(
                "CPU per comparison by component (latency window, webhook included)",
                lat.cpu_s,
                max(1, lat.accepted),
                "comparison",
            )
        )

    targets = Table(title="Targets", title_justify="left")
    for name in ("target", "measured", "limit", "status"):
        targets.add_column(name, justify="right" if name == "measured" else "left")
    colours = {"PASS": "green", "FAIL": "red"}
    for t in report.targets():
        colour = colours.get(t["status"], "dim")
        measured = t["measured"]
        targets.add_row(
            t["target"],
            str(measured) if isinstance(measured, int) else fmt(measured, 3),
            t["limit"],
            f"[{colour}]{t['status']}[/{colour}]",
        )
    console.print(targets)


def parse_args(argv: Sequence[str] | None = None) -> tuple[WebhookBenchConfig, Path | None]:
    """Parse the command line into a :class:`WebhookBenchConfig` and the JSON path (or None)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_webhooks",
        description="Webhook delivery throughput and the delay from a comparison ending to its "
        "webhook arriving, on the real stack.",
    )
    add = parser.add_argument
    add("--rate", type=float, default=DEFAULT_RATE, help="comparisons submitted per second")
    add("--seconds", type=float, default=DEFAULT_SECONDS, help="seconds of paced submission")
    add(
        "--workers",
        type=int,
        default=WorkerSettings().processes,
        help="worker concurrency (default: the service's, the CPUs + 1)",
    )
    add("--deliveries", type=int, default=DEFAULT_DELIVERIES, help="backlog (0: skip)")
    add("--size", type=int, default=DEFAULT_SIZE, help="side of the square test PNGs")
    add("--distinct", type=int, default=DEFAULT_DISTINCT, help="distinct image pairs")
    add("--senders", type=int, default=DEFAULT_SENDERS, help="client threads")
    add("--drain", type=float, default=60.0, help="seconds to wait for stragglers")
    add("--seed", type=int, default=DEFAULT_SEED, help="seed of the first image pair")
    add(
        "--webhook-worker",
        type=int,
        default=4,
        metavar="THREADS",
        help="the delivery worker on the maintenance queue only, with this many threads "
        "(default 4, as `diffall serve` and compose run it; 0: none, the old set-up)",
    )
    add("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        config = WebhookBenchConfig(
            workers=args.workers,
            rate=args.rate,
            seconds=args.seconds,
            deliveries=args.deliveries,
            size=args.size,
            distinct=args.distinct,
            senders=args.senders,
            drain_s=args.drain,
            seed=args.seed,
            webhook_workers=args.webhook_worker,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: it reports, it does not gate)."""
    config, json_out = parse_args(argv)
    # The services called in this process (the throughput backlog) log at info: keep the
    # output to the benchmark's own lines.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    report = run(config, console=console)
    render(console, report)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
        console.print(f"JSON written to {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Service benchmark: the whole stack's throughput against the bare engine's, in one run.

Run it from the repository root (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 must be
up)::

    .venv/bin/python -m bench.bench_service [--workers N] [--pairs P] [--distinct D]
                                            [--batch-accept 10000] [--rounds 3] [--json OUT]
                                            [--max-rounds 8] [--concurrency C]

Set-up (untimed): D distinct 1920x1080 PNG pairs from :func:`bench.images.photographic_pair`
(seeds ``seed + i``); a fresh PostgreSQL database migrated with
:func:`core.db.session.upgrade_database`, an empty Redis database, moto's S3 server, ONE Celery
worker (``--concurrency N``) and the API (uvicorn), as subprocesses; a key from
``diffall keys create``; the 2D images uploaded once; a warm-up batch of 2N pairs.

Then ``--rounds`` rounds (default 3), each of two timed windows, in alternating order
(bare, service; service, bare; ...), plus extra rounds (up to ``--max-rounds``, default 8, in
all) while there is no quiet window of each kind:

- **bare engine**: N processes (``spawn``, each warmed up by one comparison) loop
  ``core.imaging.compare(a, b)`` (default options: auto mode) over P pairs (the D pairs reused
  cyclically), handed out one at a time from a shared counter; rate = P / wall time from the
  start signal to the last result.
- **service**: ``POST /v1/batches`` of the same P pairs (image ids) until
  ``GET /v1/batches/{id}``, polled every 0.2 s, reports every comparison final; rate = P / that
  time.

Each window shows the CPU seconds other processes used meanwhile (``/proc/stat`` minus ours); it
is noisy above 3 % of the machine. The judged ratio is best service rate / best bare rate over
the quiet windows (other processes only ever slow a window down, so the fastest quiet window of
each kind is the least disturbed); target >= 0.85; without a quiet window of each kind it is
shown but not judged. Beside it: the ratio of medians, and a CPU-bound estimate that depends
little on the load (bare engine CPU per comparison / all our components' CPU per comparison
through the service).

Last, **batch acceptance**: the worker stopped (nothing runs), ``POST /v1/batches`` of 10,000
pairs, timed from the request to the 202 answer, median of 3; target < 2 s. Every subprocess is
stopped, the database dropped and the Redis database flushed in any case. The script exits 0
either way: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.images import photographic_png_pairs
from bench.lib.bare import ENGINE_PROCESSES, BareRun, run_bare_engine
from bench.lib.batches import POLL_S, AcceptRun, ServiceRun, run_accept, run_service, warm_up
from bench.lib.client import fmt, upload_pairs
from bench.lib.machine import (
    MACHINE_BUSY,
    default_workers,
    load_average,
    machine_info,
    progress,
)
from bench.lib.stack import ServiceStack
from bench.lib.windows import NOISY_SHARE, Window, foreign_cell, median_or_none

#: Size of the benchmark's images, in pixels.
DEFAULT_WIDTH, DEFAULT_HEIGHT = 1920, 1080
#: Comparisons of the timed service batch (and of each bare engine run).
DEFAULT_PAIRS = 40
#: Distinct image pairs, reused cyclically.
DEFAULT_DISTINCT = 4
#: Pairs of the batch-acceptance request.
DEFAULT_BATCH_ACCEPT = 10_000
#: Seed of the first image pair (pair i uses seed + i).
DEFAULT_SEED = 2024
#: Timed acceptance requests (the median is judged).
ACCEPT_REPEAT = 3
#: Rounds of (bare engine run, service batch), in alternating order.
ROUNDS = 3
#: Rounds in all at most, extra rounds being run while no window of a kind was quiet.
MAX_ROUNDS = 8
#: Target: service throughput / bare engine throughput, at least.
TARGET_RATIO = 0.85
#: Target: seconds from POST to 202 for a batch of ``DEFAULT_BATCH_ACCEPT`` pairs, below.
TARGET_ACCEPT_S = 2.0

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What one benchmark run does.

    Attributes
    ----------
    workers : int
        N: bare engine processes, and the Celery worker's concurrency unless ``concurrency``
        is set (>= 1).
    pairs : int
        Comparisons timed, bare and through the service (>= 1).
    distinct : int
        Distinct image pairs, reused cyclically (>= 1).
    batch_accept : int
        Pairs of each batch-acceptance request (>= 1; 0 skips that step).
    width, height : int
        Image size in pixels (>= 16 each).
    seed : int
        Seed of the first image pair.
    rounds : int
        Rounds of one bare engine run and one service batch each (>= 1).
    max_rounds : int
        Extra rounds are run, up to this many in all, while there is no quiet window (see
        :data:`NOISY_SHARE`) of each kind.
    accept_repeat : int
        Timed batch-acceptance requests (>= 1).
    poll_s : float
        Seconds between two polls of the timed batch (> 0).
    timeout_s : float
        Seconds any single step (a batch draining, a process starting) may take.
    concurrency : int or None
        Celery worker concurrency when it should differ from ``workers`` (an experiment: the
        issue's target is judged with ``concurrency == workers``); None means ``workers``.
    """

    workers: int
    pairs: int = DEFAULT_PAIRS
    distinct: int = DEFAULT_DISTINCT
    batch_accept: int = DEFAULT_BATCH_ACCEPT
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    seed: int = DEFAULT_SEED
    rounds: int = ROUNDS
    max_rounds: int = MAX_ROUNDS
    accept_repeat: int = ACCEPT_REPEAT
    poll_s: float = POLL_S
    timeout_s: float = 300.0
    concurrency: int | None = None

    @property
    def worker_concurrency(self) -> int:
        """The Celery worker's ``--concurrency``."""
        return self.workers if self.concurrency is None else self.concurrency

    def __post_init__(self) -> None:
        if min(self.workers, self.pairs, self.distinct, self.rounds, self.accept_repeat) < 1:
            raise ValueError("workers, pairs, distinct, rounds and accept_repeat must be >= 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.batch_accept < 0 or self.poll_s <= 0 or self.timeout_s <= 0:
            raise ValueError("batch_accept must be >= 0, poll_s and timeout_s > 0")


# --------------------------------------------------------------------------------------------
# The whole run, targets, output
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run measured.

    The judged ratio is best service rate / best bare rate over the *quiet* windows (other
    processes took at most ``NOISY_SHARE`` of the machine): other processes on a shared machine
    only ever slow a window down, so the fastest quiet window of each kind is the least
    disturbed estimate of what it can do. Without a quiet window of each kind the ratio of the
    best windows is shown but not judged (status ``noisy``). The ratio of medians and a
    CPU-bound estimate (bare engine CPU per comparison / all our components' CPU per comparison
    through the service), which depends little on the load, are shown beside it.
    """

    config: BenchConfig
    machine: dict[str, Any]
    bare: list[BareRun] = field(default_factory=list)
    service: list[ServiceRun] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    warmup_s: float | None = None
    accept: AcceptRun | None = None
    stack: dict[str, Any] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        """Whether there is at least one quiet window of each kind (the ratio is judged)."""
        return any(not r.noisy for r in self.bare) and any(not r.noisy for r in self.service)

    @property
    def ratio(self) -> float | None:
        """Best service rate / best bare engine rate, over the quiet windows when each kind
        has one (then the figure is judged), else over all windows."""
        if not self.bare or not self.service:
            return None
        bare: Sequence[Window] = self.bare
        service: Sequence[Window] = self.service
        if self.quiet:
            bare = [r for r in self.bare if not r.noisy]
            service = [r for r in self.service if not r.noisy]
        return max(r.rate for r in service) / max(r.rate for r in bare)

    @property
    def ratio_of_medians(self) -> float | None:
        """Median service rate / median bare engine rate."""
        bare = median_or_none([r.rate for r in self.bare])
        service = median_or_none([r.rate for r in self.service])
        return None if not bare or service is None else service / bare

    @property
    def cpu_ratio(self) -> float | None:
        """Median bare engine CPU ms per comparison / median service CPU ms per comparison
        (worker, API, S3, PostgreSQL, Redis, polling client): the ratio a CPU-bound machine
        reaches whatever the load of other processes."""
        bare = median_or_none([r.cpu_s[ENGINE_PROCESSES] / r.pairs for r in self.bare])
        service = median_or_none([r.ours_cpu_s / r.pairs for r in self.service])
        return None if bare is None or not service else bare / service

    @property
    def cpu_ratio_without_s3(self) -> float | None:
        """:attr:`cpu_ratio` leaving out moto's S3 server, a test double sharing the machine
        here (in production the object store runs elsewhere)."""
        bare = median_or_none([r.cpu_s[ENGINE_PROCESSES] / r.pairs for r in self.bare])
        service = median_or_none(
            [(r.ours_cpu_s - r.cpu_s.get("s3", 0.0)) / r.pairs for r in self.service]
        )
        return None if bare is None or not service else bare / service

    def targets(self) -> list[dict[str, Any]]:
        """The two targets: name, measured value, limit, status (PASS, FAIL, info or n/a)."""
        ratio = self.ratio
        accept = self.accept.median_s if self.accept is not None else None
        full = self.config.batch_accept >= DEFAULT_BATCH_ACCEPT
        same_n = self.config.worker_concurrency == self.config.workers
        ratio_status = "n/a"
        if ratio is not None:
            ratio_status = "PASS" if ratio >= TARGET_RATIO else "FAIL"
            if not same_n:
                ratio_status = "info"
            elif not self.quiet:
                ratio_status = "noisy"
        return [
            {
                "target": "service / bare engine throughput (best quiet windows)",
                "measured": None if ratio is None else round(ratio, 3),
                "limit": f">= {TARGET_RATIO:g}" + ("" if same_n else " (judged at concurrency N)"),
                "status": ratio_status,
            },
            {
                "target": (
                    f"batch of {self.config.batch_accept:,} pairs accepted (median s)"
                    if self.config.batch_accept
                    else "batch acceptance (skipped)"
                ),
                "measured": None if accept is None else round(accept, 3),
                "limit": f"< {TARGET_ACCEPT_S:g} s"
                + ("" if full else f" (judged at {DEFAULT_BATCH_ACCEPT:,})"),
                "status": (
                    "n/a"
                    if accept is None
                    else ("info" if not full else ("PASS" if accept < TARGET_ACCEPT_S else "FAIL"))
                ),
            },
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""

        def rnd(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "config": asdict(self.config),
            "machine": self.machine,
            "order": self.order,
            "bare": [r.to_dict() for r in self.bare],
            "service": [r.to_dict() for r in self.service],
            "warmup_s": self.warmup_s,
            "ratio_best": rnd(self.ratio),
            "ratio_judged_on_quiet_windows": self.quiet,
            "ratio_of_medians": rnd(self.ratio_of_medians),
            "cpu_ratio": rnd(self.cpu_ratio),
            "cpu_ratio_without_s3": rnd(self.cpu_ratio_without_s3),
            "accept": None if self.accept is None else self.accept.to_dict(),
            "targets": self.targets(),
            "stack": self.stack,
        }


def run(config: BenchConfig, *, console: Console | None = None) -> Report:
    """Run the whole benchmark (rounds of bare engine and service, then batch acceptance);
    every subprocess, the database and the Redis database are cleaned up whatever happens.

    Round i runs the bare engine then the service batch when i is odd, the other way round
    when it is even, so a slow drift of the machine's load falls on both alike.

    Parameters
    ----------
    config : BenchConfig
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
    say(f"generating {config.distinct} pairs of {config.width}x{config.height} PNGs")
    pngs = photographic_png_pairs(config.distinct, config.width, config.height, seed=config.seed)
    report.machine["png_mb"] = round(statistics.fmean(len(x) for p in pngs for x in p) / 1e6, 2)
    say("starting the stack: PostgreSQL database, Redis database, moto S3, worker, API")
    with ServiceStack(
        workers=config.worker_concurrency, timeout_s=min(config.timeout_s, 120.0)
    ) as stack:
        report.stack = {
            "database": stack.database_name,
            "redis_db": stack.redis_db,
            "base_url": stack.base_url,
            "pids": {name: proc.pid for name, proc in stack.procs.items()},
        }
        say(
            f"uploading {2 * config.distinct} images; warm-up batch of "
            f"{2 * config.worker_concurrency}"
        )
        with stack.client() as http:
            ids = upload_pairs(http, pngs)
        try:
            report.warmup_s = warm_up(stack, ids, poll_s=config.poll_s, timeout_s=config.timeout_s)
            index = 0
            while index < config.rounds or (not report.quiet and index < config.max_rounds):
                if index == config.rounds:
                    say("no quiet window of each kind yet: extra rounds (up to --max-rounds)")
                steps = ("bare", "service") if index % 2 == 0 else ("service", "bare")
                index += 1
                for step in steps:
                    say(f"round {index}: {step}, {config.pairs} comparisons")
                    report.order.append(step)
                    if step == "bare":
                        report.bare.append(
                            run_bare_engine(
                                pngs,
                                workers=config.workers,
                                pairs=config.pairs,
                                timeout_s=config.timeout_s,
                            )
                        )
                    else:
                        report.service.append(
                            run_service(
                                stack,
                                ids,
                                pairs=config.pairs,
                                poll_s=config.poll_s,
                                timeout_s=config.timeout_s,
                            )
                        )
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{stack.describe_failure()}") from exc
        stack.stop_worker()
        if config.batch_accept:
            say(
                f"batch acceptance: {config.accept_repeat} x {config.batch_accept:,} pairs "
                "(worker stopped)"
            )
            report.accept = run_accept(
                stack, ids, pairs=config.batch_accept, repeat=config.accept_repeat
            )
        say("cleaning up: processes, database, Redis database")
    report.machine["load_average_end"] = load_average()
    return report


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
        f"[bold]DiffALL service benchmark[/bold] on {m['cpu_model']}: {m['cpu_count']} cores "
        f"({m['cpu_affinity']} usable), cv2 threads {m['cv2_threads']}, pipeline threads "
        f"{m['pipeline_threads']} per process"
    )
    end = m.get("load_average_end")
    console.print(
        "load average (1, 5, 15 min): at start "
        + " ".join(str(v) for v in m["load_average"])
        + ("" if end is None else "; at end " + " ".join(str(v) for v in end))
    )
    console.print(
        f"python {m['python']}, numpy {m['numpy']}, opencv {m['opencv']}; N = {c.workers} "
        f"processes, P = {c.pairs} comparisons per window over D = {c.distinct} distinct pairs "
        f"of {c.width}x{c.height} PNGs (mean {m.get('png_mb', 0):.1f} MB), auto mode, "
        f"{len(report.order) // 2} rounds"
        + (
            ""
            if c.concurrency is None
            else f"; [yellow]worker concurrency {c.concurrency} (not N: an experiment)[/yellow]"
        )
    )

    table = Table(title="Throughput, every timed window in order", title_justify="left")
    table.add_column("window")
    for name in (
        "wall s",
        "per s",
        "engine ms (median)",
        "CPU ms / comparison",
        "other processes CPU-s (share)",
        "load 1 min",
    ):
        table.add_column(name, justify="right")
    bare_iter, service_iter = iter(report.bare), iter(report.service)
    for position, step in enumerate(report.order):
        round_no = position // 2 + 1
        window: Window
        if step == "bare":
            window = bare = next(bare_iter)
            label = f"{round_no} bare engine"
            engine = median_or_none(bare.engine_ms)
        else:
            window = service = next(service_iter)
            label = f"{round_no} service (POST to all final)"
            engine = service.jobs.get("engine_ms_median")
        table.add_row(
            label,
            fmt(window.wall_s),
            fmt(window.rate),
            fmt(engine, 0),
            fmt(window.ours_cpu_s / window.pairs * 1000, 0),
            foreign_cell(window),
            fmt(window.load_start[0]),
        )
    console.print(table)
    if report.bare and report.service:

        def best(windows: Sequence[Window]) -> str:
            quiet = [w.rate for w in windows if not w.noisy]
            text = f"{max(quiet):.2f}/s (best of {len(quiet)} quiet)" if quiet else "-"
            return text + f", {max(w.rate for w in windows):.2f}/s (best of all)"

        bare_rates = [r.rate for r in report.bare]
        service_rates = [r.rate for r in report.service]
        basis = "quiet windows" if report.quiet else "all windows: NOT JUDGED"
        console.print(
            f"  bare engine {best(report.bare)}; service {best(report.service)}; ratio "
            f"{fmt(report.ratio, 3)} ({basis})"
        )
        console.print(
            f"  medians: bare {fmt(median_or_none(bare_rates))}/s, service "
            f"{fmt(median_or_none(service_rates))}/s, ratio {fmt(report.ratio_of_medians, 3)}; "
            f"CPU-bound estimate (engine CPU / service CPU per comparison) "
            f"{fmt(report.cpu_ratio, 3)}, {fmt(report.cpu_ratio_without_s3, 3)} without the "
            "S3 test server's CPU"
        )
        if not report.quiet:
            console.print(
                f"  [yellow]no quiet window (other processes <= {NOISY_SHARE:.0%} of the "
                "machine) of each kind: the throughput ratio is not judged; run again when the "
                "machine is quieter[/yellow]"
            )

    if report.service:
        jobs = Table(title="Service batches, per job (ms, medians)", title_justify="left")
        jobs.add_column("round")
        for name in (
            "POST to 202",
            "first start",
            "queue wait",
            "started -> finished",
            "engine",
            "overhead (run - engine)",
            "idle slot / job",
            "server makespan s",
            "polled wall s",
            "states",
        ):
            jobs.add_column(name, justify="right")
        for index, s in enumerate(report.service):
            j = s.jobs
            makespan, busy = j.get("server_makespan_s"), j.get("run_s_total")
            idle = None
            if makespan is not None and busy is not None:
                idle = (makespan * s.workers - busy) / s.pairs * 1000
            states = ", ".join(f"{k} {v}" for k, v in sorted(j.get("states", {}).items()))
            if j.get("errors"):
                states += f"; errors {j['errors']}"
            jobs.add_row(
                str(index + 1),
                fmt(s.submit_s * 1000, 0),
                fmt(j.get("first_start_ms"), 0),
                fmt(j.get("queue_wait_ms_median"), 0),
                fmt(j.get("run_ms_median"), 0),
                fmt(j.get("engine_ms_median"), 0),
                fmt(j.get("overhead_ms_median"), 0),
                fmt(idle, 0),
                fmt(j.get("server_makespan_s")),
                fmt(s.wall_s),
                states,
            )
        console.print(jobs)
        if report.warmup_s is not None:
            console.print(
                f"  warm-up batch of {2 * c.worker_concurrency} (untimed): "
                f"{report.warmup_s:.2f} s; polled "
                f"every {c.poll_s:g} s"
            )

        cpu = Table(
            title="CPU per comparison by component (ms; sum over the windows / comparisons)",
            title_justify="left",
        )
        cpu.add_column("component")
        cpu.add_column("bare engine", justify="right")
        cpu.add_column("service", justify="right")
        bare_pairs = sum(r.pairs for r in report.bare)
        service_pairs = sum(r.pairs for r in report.service)
        names: list[str] = []
        for window in (*report.bare, *report.service):
            names += [k for k in window.cpu_s if k not in names and k != MACHINE_BUSY]

        def per_cmp(windows: Sequence[Window], name: str, pairs: int) -> str:
            if not windows or not any(name in w.cpu_s for w in windows):
                return "-"
            return fmt(sum(w.cpu_s.get(name, 0.0) for w in windows) / pairs * 1000, 0)

        totals = {name: sum(s.cpu_s.get(name, 0.0) for s in report.service) for name in names}
        for name in sorted(names, key=lambda n: -totals.get(n, 0.0)):
            cpu.add_row(
                name,
                per_cmp(report.bare, name, bare_pairs),
                per_cmp(report.service, name, service_pairs),
            )
        cpu.add_row(
            "[bold]ours, total[/bold]",
            fmt(sum(r.ours_cpu_s for r in report.bare) / max(1, bare_pairs) * 1000, 0),
            fmt(sum(s.ours_cpu_s for s in report.service) / service_pairs * 1000, 0),
        )
        cpu.add_row(
            "other processes",
            fmt(sum(r.foreign_cpu_s for r in report.bare) / max(1, bare_pairs) * 1000, 0),
            fmt(sum(s.foreign_cpu_s for s in report.service) / service_pairs * 1000, 0),
        )
        console.print(cpu)
        console.print(
            "  postgres and redis count every process of those servers (other clients' too); "
            "'worker pool' includes the engine."
        )

    a = report.accept
    if a is not None:
        console.print(
            f"  batch acceptance ({a.pairs:,} pairs, worker stopped): "
            + ", ".join(f"{t:.3f}" for t in a.times_s)
            + f" s; median {a.median_s:.3f} s; accepted {a.accepted}"
        )

    targets = Table(title="Targets", title_justify="left")
    for name in ("target", "measured", "limit", "status"):
        targets.add_column(name, justify="right" if name == "measured" else "left")
    colours = {"PASS": "green", "FAIL": "red"}
    for t in report.targets():
        colour = colours.get(t["status"], "dim")
        targets.add_row(
            t["target"],
            fmt(t["measured"], 3),
            t["limit"],
            f"[{colour}]{t['status']}[/{colour}]",
        )
    console.print(targets)


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, Path | None]:
    """Parse the command line into a :class:`BenchConfig` and the JSON output path (or None)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_service",
        description="Service throughput against the bare engine's, and batch acceptance time.",
    )
    add = parser.add_argument
    add("--workers", type=int, default=default_workers(), help="N processes (default: CPUs)")
    add("--pairs", type=int, default=DEFAULT_PAIRS, help="P comparisons per timed window")
    add("--distinct", type=int, default=DEFAULT_DISTINCT, help="D distinct image pairs")
    add("--batch-accept", type=int, default=DEFAULT_BATCH_ACCEPT, help="pairs (0: skip)")
    add("--size", default=f"{DEFAULT_WIDTH}x{DEFAULT_HEIGHT}", help="image size WxH")
    add("--seed", type=int, default=DEFAULT_SEED, help="seed of the first image pair")
    add("--rounds", type=int, default=ROUNDS, help="rounds of (bare engine, service)")
    add("--max-rounds", type=int, default=MAX_ROUNDS, help="rounds at most, if noisy")
    add("--concurrency", type=int, default=None, help="worker concurrency if not N (experiment)")
    add("--accept-repeat", type=int, default=ACCEPT_REPEAT, help="timed acceptance requests")
    add("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WxH, got {args.size!r}")
    try:
        config = BenchConfig(
            workers=args.workers,
            pairs=args.pairs,
            distinct=args.distinct,
            batch_accept=args.batch_accept,
            width=width,
            height=height,
            seed=args.seed,
            rounds=args.rounds,
            max_rounds=args.max_rounds,
            accept_repeat=args.accept_repeat,
            concurrency=args.concurrency,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: it reports, it does not gate)."""
    config, json_out = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    report = run(config, console=console)
    render(console, report)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
        console.print(f"JSON written to {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

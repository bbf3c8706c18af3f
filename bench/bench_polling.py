"""Polling benchmark: poll latency under 50 concurrent pollers while a batch runs, and the job
throughput with and without them, in one run.

Run it from the repository root (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 must be
up)::

    .venv/bin/python -m bench.bench_polling [--workers 2] [--pairs 1000] [--pollers 50]
                                            [--interval 1.0] [--rounds 1] [--json OUT]

Set-up (untimed): the production topology of :class:`bench.lib.stack.ServiceStack` (a fresh
PostgreSQL database, an empty Redis database, moto's S3 server, one Celery worker with
``--workers`` prefork processes and the API under uvicorn, as subprocesses); ``--distinct``
small photographic PNG pairs (``--size`` pixels square) uploaded once; a warm-up batch.

Then, per round, one batch of ``--pairs`` pairs (the uploaded pairs reused cyclically) in each
of three modes, in rotating order:

- **reference**: no pollers; the driver alone looks at ``GET /v1/batches/{id}`` every 0.5 s.
- **conditional**: ``--pollers`` threads poll the batch's comparisons the way
  ``DiffallClient.wait`` does: poller k waits for comparisons k, k + N, k + 2N, ... in turn
  (then keeps polling its last one until the batch is done), one ``GET /v1/comparisons/{id}``
  every ``--interval`` seconds (the API's ``Retry-After``) stretched by the SDK's jitter (up to
  20 %), sending ``If-None-Match`` with the ETag it holds; a 304 answers "unchanged".
- **unconditional**: the same pollers without ``If-None-Match`` (every answer a full 200).

Throughput of a batch = pairs / (POST to the driver's poll that saw every comparison final).
Poll latency = wall time of one GET as a poller saw it (its own keep-alive connection); the
same polls as the API measured them come from its Prometheus histogram (``/metrics``, scraped
before and after each batch: the share answered within 100 ms and the bucket of the 99th
percentile), which tells the server's time from the queueing in the 50-thread client. Judged:
p99 of the conditional mode <= :data:`TARGET_P99_MS` ms, and its throughput >= half the
reference's (median over rounds). The script exits 0 either way: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bench.images import photographic_png_pairs
from bench.lib.client import upload_pairs
from bench.lib.machine import load_average
from bench.lib.stack import ServiceStack
from bench.lib.stats import percentile
from diffall.polling import POLL_JITTER, Backoff

#: Target: p99 latency of a conditional poll, in milliseconds, at most.
TARGET_P99_MS = 100.0
#: Target: throughput with pollers / throughput without, at least ("not halved").
TARGET_THROUGHPUT_RATIO = 0.5
#: Seconds between two looks of the driver at the batch.
DRIVER_POLL_S = 0.5
#: The modes of a round.
MODES = ("reference", "conditional", "unconditional")
FINAL = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True, kw_only=True)
class PollingBenchConfig:
    """What to run (see the module docstring)."""

    workers: int = 2
    pairs: int = 1000
    pollers: int = 50
    interval_s: float = 1.0
    distinct: int = 8
    size: int = 64
    rounds: int = 1
    seed: int = 2024
    timeout_s: float = 900.0
    modes: tuple[str, ...] = MODES


@dataclass
class PollerStats:
    """What the pollers of one batch saw."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, latency_ms: float, status: int) -> None:
        """Record one poll."""
        self.latencies_ms.append(latency_ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1


@dataclass
class BatchRun:
    """One batch in one mode."""

    mode: str
    round: int
    pairs: int
    wall_s: float
    rate: float
    counts: dict[str, int]
    polls: int
    not_modified: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    load: list[float]
    #: The same polls as the API measured them (its ``diffall_http_request_duration_seconds``
    #: histogram, scraped before and after): how many, the share answered within 100 ms, and
    #: the upper bound of the histogram bucket holding the 99th percentile, in ms.
    server_polls: int = 0
    server_within_100ms: float | None = None
    server_p99_le_ms: float | None = None


def _poller(
    base_url: str,
    key: str,
    ids: Sequence[str],
    *,
    interval_s: float,
    conditional: bool,
    stop: threading.Event,
    stats: PollerStats,
    lock: threading.Lock,
) -> None:
    """Wait for each of ``ids`` in turn as the SDK does (each delay stretched by up to
    ``diffall.polling.POLL_JITTER``), then keep polling the last one."""
    backoff = Backoff(interval_s, max_s=interval_s, factor=1.0, jitter=POLL_JITTER)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
        index, etag = 0, None
        while not stop.is_set():
            comparison = ids[min(index, len(ids) - 1)]
            extra: dict[str, str] = {"If-None-Match": etag} if conditional and etag else {}
            started = time.perf_counter()
            try:
                response = http.get(f"/v1/comparisons/{comparison}", headers=extra)
            except httpx.HTTPError:
                with lock:
                    stats.errors += 1
                stop.wait(backoff.next_delay())
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            with lock:
                stats.add(latency_ms, response.status_code)
            if response.status_code == 200:
                etag = response.headers.get("ETag")
                if response.json()["state"] in FINAL and index < len(ids) - 1:
                    index, etag = index + 1, None  # the next job: no copy of it yet
                    continue  # look at it at once, as a client waiting for several would
            elif response.status_code != 304:
                with lock:
                    stats.errors += 1
            stop.wait(backoff.next_delay())


def _submit(http: httpx.Client, ids: Sequence[tuple[str, str]], pairs: int) -> dict[str, Any]:
    body = {
        "pairs": [{"a": ids[i % len(ids)][0], "b": ids[i % len(ids)][1]} for i in range(pairs)],
        "metadata": {"bench": "polling"},
    }
    response = http.post("/v1/batches", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/batches: {response.status_code} {response.text[:300]}")
    created: dict[str, Any] = response.json()
    if created["accepted"] != pairs:
        raise RuntimeError(f"the batch accepted {created['accepted']} of {pairs} pairs")
    return created


def run_batch(
    stack: ServiceStack,
    ids: Sequence[tuple[str, str]],
    config: PollingBenchConfig,
    *,
    mode: str,
    round_: int,
) -> BatchRun:
    """One batch of ``config.pairs`` pairs, with the pollers of ``mode`` while it runs."""
    stats, lock, stop = PollerStats(), threading.Lock(), threading.Event()
    threads: list[threading.Thread] = []
    with stack.client() as http:
        before = server_poll_histogram(http)
        started = time.perf_counter()
        created = _submit(http, ids, config.pairs)
        comparison_ids = [str(item["comparison_id"]) for item in created["items"]]
        if mode != "reference":
            for k in range(config.pollers):
                mine = comparison_ids[k :: config.pollers] or comparison_ids[-1:]
                thread = threading.Thread(
                    target=_poller,
                    args=(stack.base_url, stack.key, mine),
                    kwargs={
                        "interval_s": config.interval_s,
                        "conditional": mode == "conditional",
                        "stop": stop,
                        "stats": stats,
                        "lock": lock,
                    },
                    daemon=True,
                )
                thread.start()
                threads.append(thread)
        deadline = time.monotonic() + config.timeout_s
        try:
            while True:
                time.sleep(DRIVER_POLL_S)
                batch = http.get(f"/v1/batches/{created['id']}")
                batch.raise_for_status()
                counts: dict[str, int] = batch.json()["counts"]
                if sum(counts.get(state, 0) for state in FINAL) >= config.pairs:
                    wall = time.perf_counter() - started
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"batch not done after {config.timeout_s:g} s: {counts}\n"
                        + stack.describe_failure()
                    )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        server = _histogram_delta(before, server_poll_histogram(http))
    latencies = stats.latencies_ms
    return BatchRun(
        mode=mode,
        round=round_,
        pairs=config.pairs,
        wall_s=round(wall, 3),
        rate=round(config.pairs / wall, 2),
        counts=counts,
        polls=len(latencies),
        not_modified=stats.statuses.get(304, 0),
        errors=stats.errors,
        p50_ms=_round(percentile(latencies, 50)),
        p95_ms=_round(percentile(latencies, 95)),
        p99_ms=_round(percentile(latencies, 99)),
        max_ms=_round(max(latencies) if latencies else None),
        load=load_average(),
        server_polls=int(server.get(math.inf, 0)),
        server_within_100ms=_share_within(server, 0.1),
        server_p99_le_ms=_bucket_of(server, 0.99),
    )


#: The route template of a poll, as the API's metrics name it.
POLL_ROUTE = "/v1/comparisons/{comparison_id}"


def server_poll_histogram(http: httpx.Client) -> dict[float, float]:
    """The API's cumulative latency histogram of ``GET`` polls: bucket bound (s) -> count."""
    response = http.get("/metrics")
    response.raise_for_status()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name != "diffall_http_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_bucket")
                and labels.get("method") == "GET"
                and labels.get("route") == POLL_ROUTE
            ):
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def _histogram_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def _share_within(buckets: dict[float, float], bound_s: float) -> float | None:
    total = buckets.get(math.inf, 0.0)
    return None if not total else round(buckets.get(bound_s, 0.0) / total, 4)


def _bucket_of(buckets: dict[float, float], quantile: float) -> float | None:
    """Upper bound (ms) of the first bucket holding ``quantile`` of the observations."""
    total = buckets.get(math.inf, 0.0)
    if not total:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= quantile * total:
            return None if math.isinf(bound) else round(bound * 1000, 1)
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Report:
    """Every batch run, the configuration and the verdicts."""

    config: dict[str, Any]
    runs: list[BatchRun]

    def median(self, mode: str, attribute: str) -> float | None:
        """The median of ``attribute`` over the runs of ``mode`` (None without one)."""
        values = [getattr(r, attribute) for r in self.runs if r.mode == mode]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def throughput_ratio(self, mode: str) -> float | None:
        """Median throughput of ``mode`` / median throughput of the reference."""
        ours, reference = self.median(mode, "rate"), self.median("reference", "rate")
        if ours is None or not reference:
            return None
        return round(ours / reference, 3)

    def verdicts(self) -> dict[str, bool | None]:
        """Whether each target was met (None: not measured)."""
        p99 = self.median("conditional", "p99_ms")
        ratio = self.throughput_ratio("conditional")
        return {
            "p99_ok": None if p99 is None else p99 <= TARGET_P99_MS,
            "throughput_ok": None if ratio is None else ratio >= TARGET_THROUGHPUT_RATIO,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-ready data."""
        return {
            "config": self.config,
            "runs": [asdict(r) for r in self.runs],
            "ratios": {m: self.throughput_ratio(m) for m in MODES if m != "reference"},
            "verdicts": self.verdicts(),
        }


def _order(round_: int, modes: Sequence[str]) -> list[str]:
    """The modes of round ``round_``, rotated so none always runs first."""
    shift = round_ % len(modes)
    return [*modes[shift:], *modes[:shift]]


def run(config: PollingBenchConfig, *, console: Console | None = None) -> Report:
    """Start the stack, run every round, stop everything; return the report."""

    def say(message: str) -> None:
        if console is not None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")

    runs: list[BatchRun] = []
    pngs = photographic_png_pairs(config.distinct, config.size, config.size, seed=config.seed)
    say(f"starting the stack ({config.workers} worker processes)")
    with ServiceStack(workers=config.workers) as stack:
        with stack.client() as http:
            ids = upload_pairs(http, pngs)
        say("warm-up batch")
        warm = PollingBenchConfig(**{**asdict(config), "pairs": max(2 * config.workers, 4)})
        run_batch(stack, ids, warm, mode="reference", round_=-1)
        for round_ in range(config.rounds):
            for mode in _order(round_, config.modes):
                say(f"round {round_ + 1}: {mode}")
                result = run_batch(stack, ids, config, mode=mode, round_=round_)
                say(
                    f"  {result.rate} jobs/s, {result.polls} polls, p99 {result.p99_ms} ms, "
                    f"counts {result.counts}"
                )
                runs.append(result)
    return Report(config=asdict(config), runs=runs)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(console: Console, report: Report) -> None:
    """Print the table, the ratios and the verdicts."""
    config = report.config
    table = Table(
        title=(
            f"Polling: {config['pairs']} pairs of {config['size']}x{config['size']} PNGs, "
            f"{config['workers']} worker processes, {config['pollers']} pollers every "
            f"{config['interval_s']:g} s"
        )
    )
    for name in (
        "round",
        "mode",
        "wall s",
        "jobs/s",
        "vs ref",
        "polls",
        "304",
        "errors",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "srv <=100ms",
        "srv p99 <= ms",
        "load 1m",
    ):
        table.add_column(name, justify="right")
    by_round = {(r.round, "reference"): r.rate for r in report.runs if r.mode == "reference"}
    for r in report.runs:
        reference = by_round.get((r.round, "reference"))
        ratio = None if not reference else r.rate / reference
        table.add_row(
            str(r.round + 1),
            r.mode,
            _fmt(r.wall_s, 2),
            _fmt(r.rate, 1),
            _fmt(ratio, 2),
            str(r.polls),
            str(r.not_modified),
            str(r.errors),
            _fmt(r.p50_ms),
            _fmt(r.p95_ms),
            _fmt(r.p99_ms),
            _fmt(r.max_ms),
            "-" if r.server_within_100ms is None else f"{r.server_within_100ms * 100:.1f} %",
            _fmt(r.server_p99_le_ms, 0),
            _fmt(r.load[0], 2),
        )
    console.print(table)
    verdicts = report.verdicts()
    p99 = report.median("conditional", "p99_ms")
    ratio = report.throughput_ratio("conditional")
    plain = report.throughput_ratio("unconditional")

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("[green]met[/green]" if ok else "[red]missed[/red]")

    console.print(
        f"conditional polls p99 {_fmt(p99)} ms (target <= {TARGET_P99_MS:g}): "
        f"{mark(verdicts['p99_ok'])}"
    )
    console.print(
        f"throughput with conditional pollers / without: {_fmt(ratio, 3)} "
        f"(target >= {TARGET_THROUGHPUT_RATIO:g}): {mark(verdicts['throughput_ok'])}; "
        f"with unconditional pollers: {_fmt(plain, 3)}"
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[PollingBenchConfig, Path | None]:
    """The configuration and the JSON output path from the command line."""
    defaults = PollingBenchConfig()
    parser = argparse.ArgumentParser(prog="bench.bench_polling", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--pairs", type=int, default=defaults.pairs)
    parser.add_argument("--pollers", type=int, default=defaults.pollers)
    parser.add_argument("--interval", type=float, default=defaults.interval_s)
    parser.add_argument("--distinct", type=int, default=defaults.distinct)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        parser.error(f"--modes: choose among {', '.join(MODES)}")
    for name in ("workers", "pairs", "pollers", "distinct", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.interval <= 0 or args.size < 16:
        parser.error("--interval must be > 0 and --size >= 16")
    config = PollingBenchConfig(
        workers=args.workers,
        pairs=args.pairs,
        pollers=args.pollers,
        interval_s=args.interval,
        distinct=args.distinct,
        size=args.size,
        rounds=args.rounds,
        timeout_s=args.timeout,
        modes=modes,
    )
    return config, args.json


@contextlib.contextmanager
def _console() -> Iterator[Console]:
    console = Console()
    if console.width < 140:  # a pipe or a narrow terminal: keep the table readable
        console = Console(width=140)
    yield console


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table (exit 0 either way)."""
    config, json_path = parse_args(argv)
    with _console() as console:
        report = run(config, console=console)
        render(console, report)
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

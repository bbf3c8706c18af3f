"""Fault injection against the production topology: is anything lost, doubled or miscounted?

``python -m bench.chaos`` starts :class:`bench.lib.chaos_stack.ChaosStack` (private PostgreSQL,
Redis and S3; the API, a prefork worker, a beat and a delivery worker), registers a webhook
receiver, and then, for each fault and each round, submits pairs steadily
(``POST /v1/comparisons``, ``--rate`` per second) while it injects the fault:

========================  ==========================================================
``worker_child``          SIGKILL one pool process of the worker while jobs run
``worker_parent``         SIGKILL the worker's parent and pool at once; start it again
                          after ``--restart-after`` s (what a supervisor does)
``redis_restart``         restart Redis empty (every queued message is gone)
``postgres_stop``         stop PostgreSQL for ``--outage`` s, then start it
``s3_unreachable``        freeze the S3 server (SIGSTOP) for ``--outage`` s
``receiver``              the webhook receiver answers 500 for ``--outage`` s, then is down
                          (connection refused) for ``--outage`` s, then healthy
========================  ==========================================================

After each fault it waits until every accepted job is final and every final event reached the
receiver (at most ``--max-wait`` s after the fault ended), then reads the database and prints a
row: jobs submitted and accepted, the API's other answers during the phase (503 counted apart,
with whether each carried Retry-After and a problem+json body), succeeded, failed by code,
**lost** (accepted, never final), **late** (final more than 60 s after the fault ended),
**duplicated results** (more than one final event for a job), **duplicated webhook ids**
(one ``webhook-id`` answered 2xx twice), **missing webhooks**, **false crash counts** (crashes
counted beyond the processes the fault killed) and the time to recover (fault end to the last
job final). ``--serve-idle-min N`` also runs the embedded default (``diffall serve``) idle for N
minutes and reports its stops. Targets: 0 lost, 0 late, 0 duplicated, 0 false crash counts,
0 missing webhooks, only 503 + Retry-After problem+json refusals, 0 stops of ``serve``.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bench.images import photographic_png_pairs
from bench.lib.chaos_phase import FINAL_EVENTS, PhaseResult, Submitter, run_phase
from bench.lib.chaos_stack import ChaosStack
from bench.lib.client import upload_pairs
from bench.lib.faults import FAULTS, Context
from bench.lib.hook_receiver import Receiver
from bench.lib.machine import load_average, machine_info, progress
from bench.lib.serve_idle import run_serve_idle

__all__ = ["FAULTS", "PhaseResult", "main", "run_chaos"]


def _table(results: Sequence[PhaseResult], title: str) -> Table:
    table = Table(title=title)
    for name in (
        "fault",
        "round",
        "submitted",
        "accepted",
        "503 (well formed)",
        "other answers",
        "succeeded",
        "failed by code",
        "lost",
        "late",
        "dup results",
        "dup webhook ids",
        "missing webhooks",
        "crashes counted",
        "false crashes",
        "max attempt",
        "recover s",
    ):
        table.add_column(
            name,
            justify="left" if name in ("fault", "other answers", "failed by code") else "right",
            no_wrap=name == "fault",
        )
    for r in results:
        table.add_row(
            r.fault,
            str(r.round),
            str(r.submitted),
            str(r.accepted),
            f"{r.refused_503} ({r.refused_503_well_formed})",
            ", ".join(f"{k}: {v}" for k, v in sorted(r.other_answers.items())) or "-",
            str(r.succeeded),
            ", ".join(f"{k}: {v}" for k, v in sorted(r.failed.items())) or "-",
            str(r.lost),
            str(r.late),
            str(r.duplicated_results),
            str(r.duplicated_webhook_ids),
            str(r.missing_webhooks),
            str(r.crashes_counted),
            str(r.false_crash_counts),
            str(r.max_attempt),
            "-" if r.recover_s is None else f"{r.recover_s:.1f}",
        )
    return table


def run_chaos(
    faults: Sequence[str],
    *,
    rounds: int,
    rate: float,
    outage_s: float,
    restart_after_s: float,
    size: int,
    workers: int,
    lead_s: float,
    tail_s: float,
    max_wait_s: float,
    say: Callable[[str], None],
    logs_to: Path | None = None,
) -> list[PhaseResult]:
    """Every fault of ``faults``, ``rounds`` times each (round-robin), on one stack."""
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {sorted(FAULTS)}")
    results: list[PhaseResult] = []
    receiver = Receiver()
    try:
        with ChaosStack(workers=workers) as stack:
            with stack.client() as http:
                ids = upload_pairs(http, photographic_png_pairs(4, size, size, seed=11))
                response = http.post(
                    "/v1/webhooks", json={"url": receiver.url(), "events": list(FINAL_EVENTS)}
                )
                if response.status_code != 201:
                    raise RuntimeError(
                        f"POST /v1/webhooks: {response.status_code} {response.text[:300]}"
                    )
                receiver.secret = str(response.json()["secret"])
            submitter = Submitter(stack, ids, rate)
            ctx = Context(stack, receiver, outage_s, restart_after_s, say)
            try:
                for round_ in range(1, rounds + 1):
                    for fault in faults:
                        results.append(
                            run_phase(
                                ctx,
                                submitter,
                                fault,
                                round_,
                                lead_s=lead_s,
                                tail_s=tail_s,
                                max_wait_s=max_wait_s,
                            )
                        )
            finally:
                submitter.close()
                if logs_to is not None:
                    logs_to.mkdir(parents=True, exist_ok=True)
                    for name, text in stack.logs().items():
                        (logs_to / name).write_text(text)
    finally:
        receiver.close()
    return results


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(
    faults: Annotated[
        str,
        typer.Option(help="Comma-separated faults (default: all; `none`: only --serve-idle-min)."),
    ] = ",".join(FAULTS),
    rounds: Annotated[int, typer.Option(min=1, help="Times each fault is injected.")] = 2,
    rate: Annotated[float, typer.Option(min=0.1, help="Submissions per second.")] = 3.0,
    outage: Annotated[float, typer.Option(min=0.5, help="Seconds of each outage.")] = 15.0,
    restart_after: Annotated[
        float, typer.Option(min=0.0, help="Seconds before a killed worker is started again.")
    ] = 2.0,
    size: Annotated[int, typer.Option(min=16, help="Side of the test images, pixels.")] = 768,
    workers: Annotated[int, typer.Option(min=1, help="Prefork processes of the worker.")] = 2,
    lead: Annotated[float, typer.Option(min=0.0, help="Seconds of load before each fault.")] = 5.0,
    tail: Annotated[float, typer.Option(min=0.0, help="Seconds of load after each fault.")] = 5.0,
    max_wait: Annotated[
        float,
        typer.Option(min=1.0, help="Seconds after a fault to wait for every job and webhook."),
    ] = 180.0,
    serve_idle_min: Annotated[
        float, typer.Option(min=0.0, help="Minutes to leave `diffall serve` idle (0: skip).")
    ] = 0.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here.")
    ] = None,
    logs_to: Annotated[
        Path | None, typer.Option(help="Copy every process's log into this folder at the end.")
    ] = None,
) -> None:
    """Inject faults into the production topology under steady load and print what was lost."""
    console = Console(width=200)
    say = progress(console)
    # SIGTERM (a time-out, a CI cancel) unwinds like Ctrl+C: every server and process stops.
    signal.signal(signal.SIGTERM, _interrupt)
    names = [f.strip() for f in faults.split(",") if f.strip() and f.strip() != "none"]
    results = (
        []
        if not names
        else run_chaos(
            names,
            rounds=rounds,
            rate=rate,
            outage_s=outage,
            restart_after_s=restart_after,
            size=size,
            workers=workers,
            lead_s=lead,
            tail_s=tail,
            max_wait_s=max_wait,
            say=say,
            logs_to=logs_to,
        )
    )
    idle = run_serve_idle(serve_idle_min, say) if serve_idle_min > 0 else None
    title = (
        f"Chaos: {rate:g} submissions/s, {outage:g} s outages, {workers} worker processes, "
        f"{size}x{size} pairs, load {load_average()[0]:.2f}"
    )
    if results:
        console.print(_table(results, title))
    missed = [
        f"{r.fault} round {r.round}: {', '.join(r.problems())}" for r in results if r.problems()
    ]
    if idle is not None:
        console.print(
            f"diffall serve idle {idle.minutes:g} min: "
            f"{'STOPPED' if idle.stopped else 'kept running'}, {idle.restarts} component restarts, "
            f"{idle.failed_health_checks} failed health checks"
        )
        if idle.stopped:
            missed.append("diffall serve stopped by itself")
    console.print("every target met" if not missed else "targets missed:\n  " + "\n  ".join(missed))
    if json_out is not None:
        payload = {
            "machine": machine_info(),
            "results": [asdict(r) for r in results],
            "serve_idle": asdict(idle) if idle is not None else None,
        }
        json_out.write_text(json.dumps(payload, indent=2, default=str))
    if missed:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)

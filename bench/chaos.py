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
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bench.images import photographic_png_pairs
from bench.lib.chaos_stack import ChaosStack
from bench.lib.client import upload_pairs
from bench.lib.hook_receiver import Receiver
from bench.lib.machine import load_average, machine_info, progress
from core.services.webhooks.outbox import webhook_id

__all__ = ["FAULTS", "PhaseResult", "main", "run_chaos"]

#: Seconds after a fault ends within which every job must be final.
RECOVERY_TARGET_S = 60.0
#: Final webhook events (one per final job).
FINAL_EVENTS = ("comparison.succeeded", "comparison.failed")


@dataclass
class Submission:
    """One ``POST /v1/comparisons`` of the steady load."""

    at: float
    status: int
    """HTTP status; 0 when no answer came (a transport error or time-out)."""
    comparison_id: str | None
    retry_after: bool
    problem: bool


class Submitter:
    """Posts comparisons of the uploaded pairs at ``rate`` per second, on a thread, while
    :meth:`running` is on; every answer is recorded."""

    def __init__(self, stack: ChaosStack, ids: Sequence[tuple[str, str]], rate: float) -> None:
        self.stack, self.ids, self.interval = stack, list(ids), 1.0 / rate
        self.records: list[Submission] = []
        self._on = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="submitter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.stack.client(timeout=10.0) as http:
            index = 0
            while not self._stop.is_set():
                if not self._on.wait(timeout=0.1):
                    continue
                started = time.monotonic()
                a, b = self.ids[index % len(self.ids)]
                index += 1
                self._post(http, a, b)
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _post(self, http: httpx.Client, a: str, b: str) -> None:
        at = time.time()
        try:
            response = http.post("/v1/comparisons", json={"a": a, "b": b})
        except httpx.HTTPError:
            record = Submission(at, 0, None, False, False)
        else:
            ident = None
            if response.status_code == 202:
                ident = str(response.json()["id"])
            record = Submission(
                at,
                response.status_code,
                ident,
                "retry-after" in response.headers,
                response.headers.get("content-type", "").startswith("application/problem+json"),
            )
        with self._lock:
            self.records.append(record)

    def between(self, t0: float, t1: float) -> list[Submission]:
        """The submissions sent in ``[t0, t1)``."""
        with self._lock:
            return [r for r in self.records if t0 <= r.at < t1]

    def running(self, on: bool) -> None:
        """Start or pause the load."""
        (self._on.set if on else self._on.clear)()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._on.set()
        self._thread.join(timeout=15)


@dataclass
class Context:
    """What a fault acts on."""

    stack: ChaosStack
    receiver: Receiver
    outage_s: float
    restart_after_s: float
    say: Callable[[str], None]


@dataclass
class Injected:
    """What a fault did: the jobs it could rightly count as crashed."""

    killed_processes: int = 0
    notes: list[str] = field(default_factory=list)


def _running_jobs(stack: ChaosStack) -> int:
    import sqlalchemy as sa

    engine = stack.engine()
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text("SELECT count(*) FROM comparisons WHERE state = 'running'")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _wait_for_running_job(ctx: Context, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _running_jobs(ctx.stack) > 0:
            return True
        time.sleep(0.05)
    return False


def fault_worker_child(ctx: Context) -> Injected:
    """SIGKILL one pool process while a job runs."""
    busy = _wait_for_running_job(ctx)
    pid = random.choice(ctx.stack.worker_children())
    ctx.stack.kill_worker_child(pid)
    return Injected(1, [f"killed pool process {pid}" + ("" if busy else " (no job seen running)")])


def fault_worker_parent(ctx: Context) -> Injected:
    """SIGKILL the worker's process group; start it again after ``restart_after_s``."""
    busy = _wait_for_running_job(ctx)
    ctx.stack.kill_worker()
    time.sleep(ctx.restart_after_s)
    ctx.stack.start_worker()
    note = "killed the worker" + ("" if busy else " (no job seen running)")
    return Injected(ctx.stack.workers, [note])


def fault_redis_restart(ctx: Context) -> Injected:
    """Restart Redis empty."""
    assert ctx.stack.redis is not None
    ctx.stack.redis.restart()
    return Injected()


def fault_postgres_stop(ctx: Context) -> Injected:
    """Stop PostgreSQL for the outage, then start it."""
    assert ctx.stack.postgres is not None
    ctx.stack.postgres.stop(mode="fast")
    time.sleep(ctx.outage_s)
    ctx.stack.postgres.start()
    return Injected()


def fault_s3_unreachable(ctx: Context) -> Injected:
    """Freeze the S3 server for the outage."""
    ctx.stack.freeze("s3")
    try:
        time.sleep(ctx.outage_s)
    finally:
        ctx.stack.thaw("s3")
    return Injected()


def fault_receiver(ctx: Context) -> Injected:
    """The receiver answers 500, then is down, then healthy (``outage_s`` each)."""
    ctx.receiver.answer = 500
    time.sleep(ctx.outage_s)
    ctx.receiver.go_down()
    try:
        time.sleep(ctx.outage_s)
    finally:
        ctx.receiver.answer = 200
        ctx.receiver.come_up()
    return Injected()


#: Fault name -> injector (it returns once the fault is healed).
FAULTS: dict[str, Callable[[Context], Injected]] = {
    "worker_child": fault_worker_child,
    "worker_parent": fault_worker_parent,
    "redis_restart": fault_redis_restart,
    "postgres_stop": fault_postgres_stop,
    "s3_unreachable": fault_s3_unreachable,
    "receiver": fault_receiver,
}


@dataclass
class PhaseResult:
    """One fault, one round: the row of the table."""

    fault: str
    round: int
    submitted: int
    accepted: int
    refused_503: int
    refused_503_well_formed: int
    other_answers: dict[str, int]
    succeeded: int
    failed: dict[str, int]
    lost: int
    late: int
    duplicated_results: int
    duplicated_webhook_ids: int
    missing_webhooks: int
    crashes_counted: int
    false_crash_counts: int
    max_attempt: int
    recover_s: float | None
    notes: list[str]
    crashed_jobs: list[str] = field(default_factory=list)
    """Ids of the jobs that counted a crash (to look up in the logs)."""

    def problems(self) -> list[str]:
        """The targets this row misses (empty: all met)."""
        out = []
        for name in ("lost", "late", "duplicated_results", "duplicated_webhook_ids"):
            if getattr(self, name):
                out.append(f"{name} {getattr(self, name)}")
        if self.missing_webhooks:
            out.append(f"missing_webhooks {self.missing_webhooks}")
        if self.false_crash_counts:
            out.append(f"false_crash_counts {self.false_crash_counts}")
        if self.refused_503 != self.refused_503_well_formed:
            out.append("a 503 without Retry-After or problem+json")
        if self.other_answers:
            out.append(f"other answers {self.other_answers}")
        return out


@dataclass
class JobRow:
    state: str
    error_code: str | None
    attempt: int
    crash_count: int
    finished_at: float | None


def _read_jobs(stack: ChaosStack, ids: Sequence[str]) -> dict[str, JobRow]:
    import sqlalchemy as sa

    if not ids:
        return {}
    engine = stack.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT id::text, state, error_code, attempt, crash_count, finished_at "
                    "FROM comparisons WHERE id::text IN :ids"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": list(ids)},
            ).all()
    finally:
        engine.dispose()
    return {
        row[0]: JobRow(
            str(row[1]),
            row[2],
            int(row[3]),
            int(row[4]),
            row[5].timestamp() if row[5] is not None else None,
        )
        for row in rows
    }


def _final_events(stack: ChaosStack, ids: Sequence[str]) -> dict[str, list[str]]:
    """Comparison id -> the ``webhook-id`` of each of its final events."""
    import sqlalchemy as sa

    if not ids:
        return {}
    engine = stack.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT subject_id::text, id::text FROM webhook_events "
                    "WHERE type::text IN :types AND subject_id::text IN :ids"
                ).bindparams(
                    sa.bindparam("types", expanding=True), sa.bindparam("ids", expanding=True)
                ),
                {"types": list(FINAL_EVENTS), "ids": list(ids)},
            ).all()
    finally:
        engine.dispose()
    out: dict[str, list[str]] = {}
    for subject, event in rows:
        out.setdefault(subject, []).append(webhook_id(uuid.UUID(event)))
    return out


def _settled(stack: ChaosStack, receiver: Receiver, ids: Sequence[str]) -> bool:
    """Every job final and each one's final event arrived (answered 2xx)."""
    jobs = _read_jobs(stack, ids)
    if len(jobs) < len(ids) or any(
        j.state not in ("succeeded", "failed", "canceled") for j in jobs.values()
    ):
        return False
    events = _final_events(stack, ids)
    wanted = [e for evs in events.values() for e in evs]
    return len(events) == len(ids) and len(receiver.arrived(wanted)) == len(wanted)


def run_phase(
    ctx: Context,
    submitter: Submitter,
    fault: str,
    round_: int,
    *,
    lead_s: float,
    tail_s: float,
    max_wait_s: float,
) -> PhaseResult:
    """Steady load for ``lead_s``, the fault, ``tail_s`` more load; then wait and measure."""
    t0 = time.time()
    submitter.running(True)
    time.sleep(lead_s)
    ctx.say(f"{fault} (round {round_}): injecting")
    injected = FAULTS[fault](ctx)
    fault_end = time.time()
    time.sleep(tail_s)
    submitter.running(False)
    time.sleep(0.5)  # the request in flight
    t1 = time.time()
    sent = submitter.between(t0, t1)
    ids = [s.comparison_id for s in sent if s.comparison_id is not None]
    deadline = fault_end + max_wait_s
    next_note = time.time() + 15
    while time.time() < deadline and not _settled(ctx.stack, ctx.receiver, ids):
        if time.time() > next_note:
            states = Counter(j.state for j in _read_jobs(ctx.stack, ids).values())
            ctx.say(f"{fault} (round {round_}): waiting, {len(ids)} accepted: {dict(states)}")
            next_note = time.time() + 15
        time.sleep(0.5)
    jobs = _read_jobs(ctx.stack, ids)
    events = _final_events(ctx.stack, ids)
    final = {i: j for i, j in jobs.items() if j.state in ("succeeded", "failed", "canceled")}
    finished = [j.finished_at for j in final.values() if j.finished_at is not None]
    wanted = [e for evs in events.values() for e in evs]
    arrivals = ctx.receiver.arrived(wanted)
    crashes = sum(j.crash_count for j in jobs.values())
    answers = Counter(str(s.status) for s in sent if s.status not in (202, 503))
    refused = [s for s in sent if s.status == 503]
    result = PhaseResult(
        fault=fault,
        round=round_,
        submitted=len(sent),
        accepted=len(ids),
        refused_503=len(refused),
        refused_503_well_formed=sum(1 for s in refused if s.retry_after and s.problem),
        other_answers=dict(answers),
        succeeded=sum(1 for j in final.values() if j.state == "succeeded"),
        failed=dict(Counter(str(j.error_code) for j in final.values() if j.state == "failed")),
        lost=len(ids) - len(final),
        late=sum(1 for t in finished if t > fault_end + RECOVERY_TARGET_S),
        duplicated_results=sum(1 for evs in events.values() if len(evs) > 1),
        duplicated_webhook_ids=sum(1 for a in arrivals if a.count > 1),
        missing_webhooks=len(wanted) - len(arrivals) + (len(final) - len(events)),
        crashes_counted=crashes,
        false_crash_counts=max(0, crashes - injected.killed_processes),
        max_attempt=max((j.attempt for j in jobs.values()), default=0),
        recover_s=round(max(finished) - fault_end, 1) if finished else None,
        notes=injected.notes,
        crashed_jobs=sorted(i for i, j in jobs.items() if j.crash_count),
    )
    ctx.say(f"{fault} (round {round_}): {result.problems() or 'all targets met'}")
    return result


@dataclass
class ServeIdle:
    """The embedded default left idle: did it stop by itself?"""

    minutes: float
    stopped: bool
    failed_health_checks: int
    restarts: int
    log_tail: str


def run_serve_idle(minutes: float, say: Callable[[str], None]) -> ServeIdle:
    """Run ``diffall serve`` on a fresh data dir for ``minutes``, checking ``/healthz`` every
    5 s; count its component restarts (``restarted`` lines) and whether it exited."""
    import sys
    import tempfile

    from tests.support.processes import free_port, http_ok, service_env, start, wait_until

    root = Path(tempfile.mkdtemp(prefix="diffall-chaos-serve-"))
    port = free_port()
    env = service_env({"DIFFALL_DATA_DIR": str(root / "data")})
    serve = start(
        "serve",
        [sys.executable, "-m", "diffall.cli", "serve", "--port", str(port)],
        env=env,
        cwd=root,
        log_dir=root / "logs",
        capture_stdout=True,
    )
    failed = 0
    try:
        wait_until(
            http_ok(f"http://127.0.0.1:{port}/healthz"),
            what="diffall serve",
            timeout_s=120,
            services=[serve],
        )
        say(f"diffall serve idle for {minutes:g} min")
        end = time.monotonic() + minutes * 60
        check = http_ok(f"http://127.0.0.1:{port}/healthz")
        while time.monotonic() < end and serve.alive():
            if not check():
                failed += 1
            time.sleep(5)
        stopped = not serve.alive()
        text = serve.log() + "".join(serve.stdout_lines)
        return ServeIdle(
            minutes, stopped, failed, text.count(" restarted"), text[-2000:] if stopped else ""
        )
    finally:
        serve.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _table(results: Sequence[PhaseResult], title: str) -> Table:
    table = Table(title=title)
    for name in (
        "fault",
        "round",
        "submitted",
        "accepted",
        "503 (RA+problem)",
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
    faults: Annotated[str, typer.Option(help="Comma-separated faults (default: all).")] = ",".join(
        FAULTS
    ),
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
    names = [f.strip() for f in faults.split(",") if f.strip()]
    results = run_chaos(
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
    idle = run_serve_idle(serve_idle_min, say) if serve_idle_min > 0 else None
    title = (
        f"Chaos: {rate:g} submissions/s, {outage:g} s outages, {workers} worker processes, "
        f"{size}x{size} pairs, load {load_average()[0]:.2f}"
    )
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

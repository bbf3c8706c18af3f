"""One phase of ``bench/chaos.py``: steady submissions, a fault, the wait for every job and
webhook, and the row of figures read from the database and the receiver."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from bench.lib.chaos_stack import ChaosStack
from bench.lib.faults import FAULTS, Context
from bench.lib.hook_receiver import Receiver
from core.services.webhooks.outbox import webhook_id

__all__ = ["FINAL_EVENTS", "RECOVERY_TARGET_S", "PhaseResult", "Submitter", "run_phase"]

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
    rows = stack.rows(
        sa.text(
            "SELECT id::text, state, error_code, attempt, crash_count, finished_at "
            "FROM comparisons WHERE id::text IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True)),
        {"ids": list(ids)},
    )
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
    rows = stack.rows(
        sa.text(
            "SELECT subject_id::text, id::text FROM webhook_events "
            "WHERE type::text IN :types AND subject_id::text IN :ids"
        ).bindparams(sa.bindparam("types", expanding=True), sa.bindparam("ids", expanding=True)),
        {"types": list(FINAL_EVENTS), "ids": list(ids)},
    )
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

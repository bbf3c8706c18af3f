"""The fault-injection suite in a bounded form: every fault of ``bench/chaos.py`` once, with
short outages, on a production topology of its own (private PostgreSQL and Redis, moto S3, the
API, a worker, a beat and a delivery worker), under steady submissions.

Targets, not timings, are asserted: no job lost, none final late, no result or webhook
doubled, no crash counted that the fault did not cause, every final event delivered, and while
PostgreSQL is down only 503 + Retry-After problem+json answers. The full run (15 s outages,
two rounds, the embedded default idle 30 minutes) is ``python -m bench.chaos``; see
bench/README.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

from bench import chaos
from bench.lib.hook_receiver import Receiver
from tests.support.processes import RUNNING

#: Names of the chaos stack's processes (a restart adds ``-2``, ``-3``...).
STACK_PROCESSES = ("s3", "worker", "beat", "deliveries", "api")


def test_every_fault_once_loses_nothing_and_doubles_nothing() -> None:
    notes: list[str] = []
    before = set(Path(tempfile.gettempdir()).glob("diffall-chaos-*"))
    results = chaos.run_chaos(
        list(chaos.FAULTS),
        rounds=1,
        rate=2.0,
        outage_s=3.0,
        restart_after_s=1.0,
        size=256,
        workers=2,
        lead_s=2.0,
        tail_s=2.0,
        max_wait_s=90.0,
        say=notes.append,
    )
    assert [r.fault for r in results] == list(chaos.FAULTS)
    assert any("worker_child (round 1): injecting" in n for n in notes)
    for result in results:
        assert result.problems() == [], (result, notes)
        assert result.submitted >= 4 and result.accepted > 0, result
        assert result.succeeded == result.accepted, result  # small valid pairs: all succeed
    by_fault = {r.fault: r for r in results}
    # Jobs were sent while PostgreSQL was away: each was refused with a proper 503 or
    # accepted after it came back, never accepted and lost.
    outage = by_fault["postgres_stop"]
    assert outage.refused_503 + outage.accepted == outage.submitted
    # A crash is counted only where a worker process was really killed.
    for name in ("redis_restart", "postgres_stop", "s3_unreachable", "receiver"):
        assert by_fault[name].crashes_counted == 0, by_fault[name]
    # Everything it started is stopped and its files are gone.
    assert not [p for p in RUNNING if p.name.split("-")[0] in STACK_PROCESSES]
    assert set(Path(tempfile.gettempdir()).glob("diffall-chaos-*")) <= before


def test_the_receiver_answers_500_goes_down_and_comes_back_on_its_port() -> None:
    receiver = Receiver()
    try:
        url = receiver.url()
        receiver.answer = 500
        assert httpx.post(url, content=b"{}", timeout=5).status_code == 500
        assert (receiver.refused, receiver.arrivals) == (1, {})
        receiver.go_down()
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, content=b"{}", timeout=5)
        receiver.come_up()
        receiver.answer = 200
        assert receiver.url() == url
        assert httpx.post(url, content=b"{}", timeout=5).status_code == 200
    finally:
        receiver.close()


def test_an_unknown_fault_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        chaos.run_chaos(
            ["disk_full"],
            rounds=1,
            rate=1.0,
            outage_s=1.0,
            restart_after_s=0.0,
            size=64,
            workers=1,
            lead_s=0.0,
            tail_s=0.0,
            max_wait_s=1.0,
            say=print,
        )

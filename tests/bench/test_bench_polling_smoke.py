"""Smoke tests of the polling benchmark: it runs end to end on a tiny configuration.

Speed is never asserted (the machine is shared and timings are noisy). The end-to-end test starts
the real stack (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379, moto S3, the API and a
Celery worker) through the benchmark's own functions and checks every mode ran its batch to the
end, that conditional pollers got 304s and unconditional ones none, and that the table prints.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from bench import bench_polling as bp

#: Enough pairs that every poller's later jobs stay ``queued`` across several of its polls
#: (a conditional poll of an unchanged job is a 304), however fast the worker runs: with 6
#: pairs a quick worker moved every job on between two polls and no 304 was ever seen.
TINY = bp.PollingBenchConfig(
    workers=1, pairs=48, pollers=3, interval_s=0.05, distinct=2, size=32, timeout_s=180.0
)


@pytest.mark.slow
def test_the_benchmark_runs_every_mode_on_a_tiny_configuration(tmp_path: Path) -> None:
    report = bp.run(TINY)

    assert [r.mode for r in report.runs] == list(bp.MODES)
    for run in report.runs:
        assert run.counts["succeeded"] == TINY.pairs and run.rate > 0 and run.errors == 0
    reference, conditional, unconditional = report.runs
    assert reference.polls == 0 and reference.p99_ms is None
    assert conditional.polls > 0 and conditional.not_modified > 0
    assert conditional.p50_ms is not None and conditional.p99_ms is not None
    assert conditional.p50_ms <= conditional.p99_ms <= (conditional.max_ms or 0)
    assert unconditional.polls > 0 and unconditional.not_modified == 0
    assert set(report.verdicts()) == {"p99_ok", "throughput_ok"}

    out = io.StringIO()
    bp.render(Console(file=out, width=160), report)
    text = out.getvalue()
    assert "conditional polls p99" in text and "unconditional" in text
    data = report.to_json()
    json.dumps(data)
    assert set(data["ratios"]) == {"conditional", "unconditional"}


def test_modes_rotate_between_rounds() -> None:
    assert bp._order(0, bp.MODES) == list(bp.MODES)
    assert bp._order(1, bp.MODES) == [*bp.MODES[1:], bp.MODES[0]]


def test_the_command_line() -> None:
    config, path = bp.parse_args(["--pairs", "10", "--pollers", "4", "--modes", "reference"])
    assert config.pairs == 10 and config.pollers == 4 and config.modes == ("reference",)
    assert path is None
    with pytest.raises(SystemExit):
        bp.parse_args(["--modes", "sometimes"])
    with pytest.raises(SystemExit):
        bp.parse_args(["--pollers", "0"])

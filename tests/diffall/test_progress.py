"""The batch progress bar (diffall/progress.py) drawn on a terminal console into a buffer, with
a fake clock so that the rate and the ETA are known."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from diffall.progress import BatchProgress, batch_counts, should_show


def _batch(succeeded: int, failed: int = 0, canceled: int = 0, total: int = 10) -> dict[str, Any]:
    done = succeeded + failed + canceled
    counts = {"queued": total - done, "running": 0, "succeeded": succeeded}
    counts.update({"failed": failed, "canceled": canceled})
    return {"id": "5b1c7e2a-0000-4000-8000-000000000000", "total": total, "counts": counts}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system="truecolor")
    return console, buffer


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_counts_rate_and_eta_on_a_terminal() -> None:
    console, buffer = _terminal()
    clock = Clock()
    with BatchProgress("5b1c7e2a-0000", console=console, get_time=clock) as bar:
        bar.update(_batch(0))
        clock.now += 2.0
        bar.update(_batch(3, failed=1))  # 4 of 10 final after 2 s: 2/s, 6 left -> 3 s
    out = _plain(buffer.getvalue())
    last = [line for line in out.splitlines() if "batch 5b1c7e2a" in line][-1]
    assert "4/10 done, 1 failed" in last
    assert "2.0/s" in last
    assert "ETA 0:00:03" in last
    assert "\x1b[" in buffer.getvalue()  # drawn with terminal control codes (a live bar)


def test_a_finished_batch_shows_every_comparison_done() -> None:
    console, buffer = _terminal()
    clock = Clock()
    with BatchProgress("b", console=console, get_time=clock) as bar:
        bar.update(_batch(0, total=4))
        clock.now += 4.0
        bar.update(_batch(3, canceled=1, total=4))
    last = _plain(buffer.getvalue()).splitlines()[-1]
    assert "4/4 done, 1 failed" in last and "1.0/s" in last and "ETA 0:00:00" in last


def test_no_failures_no_failed_label_and_no_rate_before_a_second_sample() -> None:
    console, buffer = _terminal()
    with BatchProgress("b", console=console, get_time=Clock()) as bar:
        bar.update(_batch(0))
    last = _plain(buffer.getvalue()).splitlines()[-1]
    assert "0/10 done" in last and "failed" not in last
    assert "-/s" in last and "ETA -:--:--" in last


def test_batch_counts_and_when_to_show() -> None:
    assert batch_counts(_batch(5, failed=2, canceled=1)) == (8, 3, 10)
    assert batch_counts({"counts": {"queued": 2, "succeeded": 1}}) == (1, 0, 3)
    console, _ = _terminal()
    assert should_show(None, console) is True
    assert should_show(None, Console(file=io.StringIO())) is False  # not a terminal
    assert should_show(False, console) is False and should_show(True) is True

"""Timing for the benchmarks: a row's runs (median, minimum), one timed call, and the
round-robin schedule that makes a load spike on a shared machine hit every row alike."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Timing", "time_once", "time_round_robin"]


@dataclass
class Timing:
    """Wall-clock runs of one benchmark row, in milliseconds."""

    runs_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        """Median of the runs in milliseconds (NaN when there are none)."""
        return statistics.median(self.runs_ms) if self.runs_ms else float("nan")

    @property
    def min_ms(self) -> float:
        """Fastest run in milliseconds (NaN when there are none)."""
        return min(self.runs_ms) if self.runs_ms else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Median, minimum and every run, in milliseconds, rounded to 0.01 ms."""
        return {
            "median_ms": round(self.median_ms, 2),
            "min_ms": round(self.min_ms, 2),
            "runs_ms": [round(v, 2) for v in self.runs_ms],
        }


def time_once(fn: Callable[[], object]) -> float:
    """Run ``fn`` once and return its wall-clock duration in milliseconds."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def time_round_robin(
    rows: dict[str, Callable[[], object]], *, repeat: int, warmup: int = 1
) -> dict[str, Timing]:
    """Time several rows, interleaved.

    Parameters
    ----------
    rows
        Row name -> a call to time.
    repeat
        Timed runs per row, >= 1.
    warmup
        Untimed runs per row first, >= 0.

    Returns
    -------
    dict
        Row name -> its :class:`Timing` (``repeat`` runs in ms). Rounds run every row in turn,
        so load from other processes falls on every row alike.
    """
    for _ in range(warmup):
        for fn in rows.values():
            fn()
    timings = {name: Timing() for name in rows}
    for _ in range(repeat):
        for name, fn in rows.items():
            gc.collect()
            timings[name].runs_ms.append(time_once(fn))
    return timings

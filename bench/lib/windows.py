"""Timed windows of a benchmark and the CPU they used: our components' CPU seconds, the machine's,
and the share other processes took (a window above ``NOISY_SHARE`` is noisy)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.lib.machine import (
    MACHINE_BUSY,
)

#: Windows where other processes took more than this share of the machine are marked noisy.
NOISY_SHARE = 0.03


@dataclass
class Window:
    """One timed window (a bare engine run or a service batch) and the CPU it used.

    Attributes
    ----------
    pairs : int
        Comparisons done in the window.
    wall_s : float
        Its wall time, seconds.
    cpu_s : dict of str to float
        CPU seconds used during the window by each of our components, plus ``machine busy``
        (every CPU of the machine, whoever used it).
    cpus : int
        CPUs of the machine (the capacity is ``cpus * wall_s`` CPU seconds).
    load_start : list of float
        Load averages (1, 5, 15 min) when the window opened.
    """

    pairs: int
    wall_s: float
    cpu_s: dict[str, float]
    cpus: int
    load_start: list[float]

    @property
    def rate(self) -> float:
        """Comparisons per second (``pairs / wall_s``)."""
        return self.pairs / self.wall_s

    @property
    def ours_cpu_s(self) -> float:
        """CPU seconds of our components (everything in ``cpu_s`` but ``machine busy``)."""
        return sum(v for k, v in self.cpu_s.items() if k != MACHINE_BUSY)

    @property
    def foreign_cpu_s(self) -> float:
        """CPU seconds other processes used during the window (machine busy - ours, >= 0)."""
        return max(0.0, self.cpu_s.get(MACHINE_BUSY, 0.0) - self.ours_cpu_s)

    @property
    def foreign_share(self) -> float:
        """``foreign_cpu_s`` as a share of the machine's capacity in the window (0..1)."""
        return self.foreign_cpu_s / (self.cpus * self.wall_s)

    @property
    def noisy(self) -> bool:
        """Whether other processes took more than ``NOISY_SHARE`` of the machine."""
        return self.foreign_share > NOISY_SHARE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (rate and foreign load included)."""
        return {
            **asdict(self),
            "rate_per_s": round(self.rate, 4),
            "foreign_cpu_s": round(self.foreign_cpu_s, 3),
            "foreign_share": round(self.foreign_share, 4),
        }


def median_or_none(values: Sequence[float]) -> float | None:
    """The median of ``values``; None when there are none."""
    return float(statistics.median(values)) if values else None


def foreign_cell(window: Window) -> str:
    """The table cell of a window's foreign CPU: seconds and share, marked noisy in yellow."""
    text = f"{window.foreign_cpu_s:.1f} ({window.foreign_share:.0%})"
    return f"[yellow]{text} noisy[/yellow]" if window.noisy else text

"""The machine a benchmark runs on: CPUs, load, CPU seconds per process group, a progress line.

Every benchmark that judges a ratio reports how busy the machine was (figures taken while other
processes use the cores are noisy); these are the shared measurements.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = [
    "MACHINE_BUSY",
    "cpu_delta",
    "cpu_snapshot",
    "default_workers",
    "load_average",
    "machine_busy_cpu_s",
    "machine_cpus",
    "machine_info",
    "progress",
]

#: Key of the machine's busy CPU seconds in the ``cpu_s`` dictionaries.
MACHINE_BUSY = "machine busy"

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def default_workers() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine_cpus() -> int:
    """CPUs of the machine (``os.cpu_count()``), at least 1."""
    return os.cpu_count() or 1


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs; ``/proc/stat``: user,
    nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / _CLK_TCK


def proc_stats() -> Iterator[tuple[int, str, int, float]]:
    """Every live process: (pid, comm, process group, CPU seconds user + system)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, tail = stat.rpartition(")")
        comm = head.split("(", 1)[1] if "(" in head else ""
        fields = tail.split()
        if len(fields) < 13 or fields[0] == "Z":
            continue
        yield int(entry.name), comm, int(fields[2]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_snapshot(
    groups: dict[str, int], *, main_pids: dict[str, int] | None = None
) -> dict[str, float]:
    """CPU seconds (user + system, since each process started) used so far by named groups.

    Parameters
    ----------
    groups : dict of str to int
        Name -> process group id (each subprocess runs in its own group, so this includes its
        children, e.g. Celery's pool processes).
    main_pids : dict of str to int, optional
        Name -> pid of a group's leader to count apart: its CPU goes to ``"<name> main"`` and
        the rest of its group to ``"<name> pool"``.

    Returns
    -------
    dict of str to float
        Seconds per name, plus ``postgres`` (every process named ``postgres``, any client's) and
        ``redis`` (every ``redis-server``), and ``machine busy`` (:func:`machine_busy_cpu_s`).
    """
    main_pids = main_pids or {}
    by_group = {pgid: name for name, pgid in groups.items()}
    out: dict[str, float] = {}
    for name in groups:
        if name in main_pids:
            out[f"{name} main"] = 0.0
            out[f"{name} pool"] = 0.0
        else:
            out[name] = 0.0
    out["postgres"] = 0.0
    out["redis"] = 0.0
    for pid, comm, pgrp, cpu in proc_stats():
        group = by_group.get(pgrp)
        if group is not None:
            if group in main_pids:
                out[f"{group} {'main' if pid == main_pids[group] else 'pool'}"] += cpu
            else:
                out[group] += cpu
        elif comm == "postgres":
            out["postgres"] += cpu
        elif comm == "redis-server":
            out["redis"] += cpu
    out[MACHINE_BUSY] = machine_busy_cpu_s()
    return out


def cpu_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds used between two :func:`cpu_snapshot` calls, per name (>= 0, 1 ms steps)."""
    return {k: round(max(0.0, v - before.get(k, 0.0)), 3) for k, v in after.items()}


def machine_info(*, pipeline: bool = False) -> dict[str, Any]:
    """CPU model, core counts, library versions, OpenCV's thread count and the load average now.

    With ``pipeline`` also the engine pipeline's thread count (``pipeline_threads``).
    """
    import cv2
    import numpy as np

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cv2_threads": cv2.getNumThreads(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit_image": metadata.version("scikit-image"),
        "pillow": metadata.version("pillow"),
    }
    if pipeline:
        from core.imaging.parallel import thread_count

        info["pipeline_threads"] = thread_count()
    return info


def progress(console: Console | None) -> Callable[[str], None]:
    """A function printing timestamped progress lines on ``console`` (none when omitted)."""

    def say(text: str) -> None:
        if console is not None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')} {text}[/dim]")

    return say

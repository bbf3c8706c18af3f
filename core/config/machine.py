"""What the machine offers the service: its memory (cgroup limit included), the CPUs this process
may use (affinity and cgroup quota), and the per-job memory share computed from them."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["JOB_MEMORY_FRACTION", "MIB", "job_memory_share", "machine_memory_bytes", "usable_cpus"]

#: Bytes in a mebibyte.
MIB = 1024 * 1024
#: Share of the machine's memory the comparison processes may use together (the default per-job
#: budget); the rest is left to the worker parents, the API, the database and the page cache.
JOB_MEMORY_FRACTION = 0.75


def machine_memory_bytes(cgroup_memory_max: Path = Path("/sys/fs/cgroup/memory.max")) -> int:
    """Memory this process's machine or container has, in bytes: the physical memory, capped
    by a cgroup v2 memory limit."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on Linux
        memory = 8 * 1024 * MIB
    try:
        limit = cgroup_memory_max.read_text().strip()
        if limit != "max":
            memory = min(memory, int(limit))
    except (OSError, ValueError):
        pass
    return max(memory, 64 * MIB)


def job_memory_share(
    memory_bytes: int, processes: int, *, fraction: float = JOB_MEMORY_FRACTION
) -> int:
    """Per-job memory budget: ``fraction`` of the machine's memory shared by the processes that
    may each run one comparison at the same time.

    Parameters
    ----------
    memory_bytes
        Memory of the machine or container, in bytes (> 0).
    processes
        Comparison processes that may run at once on it (>= 1).
    fraction
        Share of the memory given to comparisons, in (0, 1].

    Returns
    -------
    int
        Bytes one comparison may use at its peak (>= 1 MiB).
    """
    if memory_bytes <= 0 or processes < 1 or not 0.0 < fraction <= 1.0:
        raise ValueError("memory_bytes > 0, processes >= 1 and 0 < fraction <= 1 are required")
    return max(MIB, int(memory_bytes * fraction) // processes)


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use (>= 1): its affinity mask, capped by a cgroup v2 CPU quota
    (a container started with ``--cpus=2`` on a 64-core host gets 2, not 64)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask alone
    return max(1, cpus)

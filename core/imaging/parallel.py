"""One process-wide thread pool for the pipeline's parallel stages (fork-safe).

OpenCV, zlib and most NumPy kernels release the GIL, so decoding the two images, SSIM bands and
heatmap strips run truly in parallel on threads. The pool is created on first use; a forked
child (Celery's prefork pool) starts its own, since threads do not survive ``fork``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Upper bound on pipeline threads, whatever the CPU count.
MAX_THREADS = 4

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask on Linux), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_count() -> int:
    """Threads the pool runs: ``min(cpu_count(), MAX_THREADS)``."""
    return max(1, min(cpu_count(), MAX_THREADS))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="diffall")
        return _POOL


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, spread over the pool; order kept; the first error re-raised.

    Runs inline when there is one CPU or one item. ``fn`` must not itself call
    ``parallel_map`` (the pool is bounded; nested waits could starve it).
    """
    work = list(items)
    if (
        len(work) <= 1
        or thread_count() == 1
        or threading.current_thread().name.startswith("diffall")
    ):
        return [fn(x) for x in work]
    return list(_pool().map(fn, work))


def _forget_pool_after_fork() -> None:
    global _POOL, _POOL_LOCK
    _POOL = None
    _POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)

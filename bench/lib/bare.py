"""The bare engine's throughput: N ``spawn`` processes looping ``core.imaging.compare`` over the
same pairs as the service, handed out one at a time (the reference the service is measured
against)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.lib.machine import (
    MACHINE_BUSY,
    load_average,
    machine_busy_cpu_s,
    machine_cpus,
)
from bench.lib.windows import Window

#: Key of the bare engine processes' CPU seconds.
ENGINE_PROCESSES = "engine processes"


@dataclass
class BareRun(Window):
    """One bare engine run (see :class:`Window`).

    Attributes
    ----------
    workers : int
        Engine processes.
    per_worker : list of int
        Comparisons each process did.
    engine_ms : list of float
        Each comparison's duration (the ``compare`` call, ms).
    """

    workers: int
    per_worker: list[int]
    engine_ms: list[float]


def _bare_worker(
    pngs: list[tuple[bytes, bytes]],
    pairs: int,
    counter: Any,
    start: Any,
    results: Any,
) -> None:
    """Body of one bare engine process (module level so that ``spawn`` can import it)."""
    try:
        from core.imaging import compare

        compare(*pngs[0])  # warm-up: imports, thread pool, first-use costs
        results.put(("ready", os.getpid()))
        start.wait()
        cpu0 = time.process_time()
        durations: list[float] = []
        while True:
            with counter.get_lock():
                index = counter.value
                if index >= pairs:
                    break
                counter.value = index + 1
            a, b = pngs[index % len(pngs)]
            t0 = time.perf_counter()
            compare(a, b)
            durations.append((time.perf_counter() - t0) * 1000)
        results.put(("done", os.getpid(), durations, time.process_time() - cpu0))
    except BaseException:  # report anything, the parent raises it
        results.put(("error", os.getpid(), traceback.format_exc()))


def _get_message(results: Any, processes: Sequence[Any], deadline: float) -> tuple[Any, ...]:
    while True:
        try:
            message: tuple[Any, ...] = results.get(timeout=0.5)
            return message
        except queue_mod.Empty:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("bare engine processes did not answer in time")
        dead = [p for p in processes if not p.is_alive() and p.exitcode not in (0, None)]
        if dead:
            raise RuntimeError(f"a bare engine process died (exit code {dead[0].exitcode})")


def run_bare_engine(
    pngs: list[tuple[bytes, bytes]], *, workers: int, pairs: int, timeout_s: float = 300.0
) -> BareRun:
    """Time ``workers`` processes comparing ``pairs`` pairs (cycling over ``pngs``).

    Parameters
    ----------
    pngs : list of tuple of bytes
        The distinct pairs (PNG bytes of A and B).
    workers : int
        Processes (>= 1), started with ``spawn`` and warmed up before the clock starts.
    pairs : int
        Comparisons in all (>= 1), handed out one at a time.
    timeout_s : float
        Seconds the whole run may take.

    Returns
    -------
    BareRun
        Wall time, per-comparison durations and CPU seconds.
    """
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    start = ctx.Event()
    results = ctx.Queue()
    processes = [
        ctx.Process(
            target=_bare_worker,
            args=(pngs, pairs, counter, start, results),
            name=f"bench-engine-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    deadline = time.monotonic() + timeout_s
    try:
        for process in processes:
            process.start()
        for _ in range(workers):
            message = _get_message(results, processes, deadline)
            if message[0] == "error":
                raise RuntimeError(f"bare engine process failed:\n{message[2]}")
        load_start = load_average()
        busy0, bench0 = machine_busy_cpu_s(), time.process_time()
        t0 = time.perf_counter()
        start.set()
        durations: list[float] = []
        per_worker: list[int] = []
        cpu = 0.0
        for _ in range(workers):
            message = _get_message(results, processes, deadline)
            if message[0] == "error":
                raise RuntimeError(f"bare engine process failed:\n{message[2]}")
            durations.extend(message[2])
            per_worker.append(len(message[2]))
            cpu += message[3]
        wall = time.perf_counter() - t0
        busy, bench = machine_busy_cpu_s() - busy0, time.process_time() - bench0
    finally:
        for process in processes:
            if process.pid is None:  # never started
                continue
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        results.close()
    return BareRun(
        pairs=pairs,
        wall_s=round(wall, 4),
        cpu_s={
            ENGINE_PROCESSES: round(cpu, 3),
            "bench": round(bench, 3),
            MACHINE_BUSY: round(busy, 3),
        },
        cpus=machine_cpus(),
        load_start=load_start,
        workers=workers,
        per_worker=per_worker,
        engine_ms=[round(d, 2) for d in durations],
    )

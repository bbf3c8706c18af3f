"""A progress bar for a batch being waited on (rich): done/failed/total, rate and ETA.

Used by :meth:`diffall.client.DiffallClient.wait_batch` and ``diffall batch wait``. It reads
the batch resource (``GET /v1/batches/{id}``): ``total`` and ``counts`` by state.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from diffall.client import FINAL_STATES

__all__ = ["BatchProgress", "batch_counts", "should_show"]


def should_show(progress: bool | None, console: Console | None = None) -> bool:
    """Whether to draw a bar: ``progress`` when given, else (None: auto) whether the console
    (default: stderr) is a terminal."""
    if progress is not None:
        return progress
    if console is not None:
        return console.is_terminal
    return sys.stderr.isatty()


def batch_counts(batch: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(done, failed, total)`` of a batch resource: comparisons in a final state, those
    ``failed`` or ``canceled``, and all of them (counts >= 0)."""
    counts = batch.get("counts") or {}
    done = sum(int(counts.get(state, 0)) for state in FINAL_STATES)
    failed = int(counts.get("failed", 0)) + int(counts.get("canceled", 0))
    total = int(batch.get("total", sum(int(v) for v in counts.values())))
    return done, failed, total


class _CountsColumn(ProgressColumn):
    """``done/total`` and, when any, ``N failed`` in red."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("waiting for the first answer")
        text = Text(f"{int(task.completed)}/{int(task.total)} done")
        failed = int(task.fields.get("failed", 0))
        if failed:
            text.append(f", {failed} failed", style="red")
        return text


class _RateColumn(ProgressColumn):
    """Comparisons finished per second since the wait began (``-/s`` until one finished)."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("-/s" if rate is None else f"{rate:.1f}/s", style="progress.data.speed")


class _EtaColumn(ProgressColumn):
    """``ETA h:mm:ss`` at that rate (``ETA -:--:--`` while unknown, ``0:00:00`` when done)."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta_s")
        shown = "-:--:--" if eta is None else str(timedelta(seconds=round(eta)))
        return Text(f"ETA {shown}", style="progress.remaining")


class BatchProgress:
    """A live bar for one batch, on stderr (or ``console``); a context manager.

    Parameters
    ----------
    batch_id
        Shown as the bar's label.
    console
        Where to draw (default: a console on stderr).
    get_time
        Clock in seconds for the rate and the ETA (default: rich's monotonic clock; tests
        pass a fake one).
    """

    def __init__(
        self,
        batch_id: str,
        *,
        console: Console | None = None,
        get_time: Callable[[], float] | None = None,
    ) -> None:
        self._progress = Progress(
            TextColumn("batch {task.description}"),
            BarColumn(),
            _CountsColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            _EtaColumn(),
            console=console or Console(stderr=True),
            get_time=get_time,
            transient=False,
        )
        self._clock = get_time or time.monotonic
        self._first: tuple[float, int] | None = None  # (when, done) at the first update
        self._task = self._progress.add_task(
            str(batch_id)[:8], total=None, failed=0, rate=None, eta_s=None
        )

    def update(self, batch: Mapping[str, Any]) -> None:
        """Show the batch resource's counts, and the rate and ETA since the first update."""
        done, failed, total = batch_counts(batch)
        now = self._clock()
        if self._first is None:
            self._first = (now, done)
        since, done_then = self._first
        rate = (done - done_then) / (now - since) if now > since and done > done_then else None
        if done >= total:
            eta_s: float | None = 0.0
        else:
            eta_s = None if rate is None else (total - done) / rate
        self._progress.update(
            self._task, completed=done, total=total, failed=failed, rate=rate, eta_s=eta_s
        )

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

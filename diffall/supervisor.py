"""``diffall serve``'s supervisor: it starts the service's processes (broker, workers, beat,
API), announces the service once every one is up, restarts any that dies with a doubling
backoff, and gives up (so ``serve`` exits 1) after :data:`MAX_QUICK_FAILURES` quick deaths in
a row. A child runs in its own process group and, on Linux, gets SIGTERM when ``serve`` dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

__all__ = [
    "MAX_QUICK_FAILURES",
    "READY_FILE_ENV",
    "STOP_GRACE_S",
    "Child",
    "Signals",
    "http_ok",
    "note",
    "port_is_free",
    "restart_delay_s",
    "stop_children",
    "supervise",
    "warn",
]

#: Seconds children get to stop after SIGTERM before they are killed.
STOP_GRACE_S = 30.0
#: Seconds the API gets to answer ``/healthz`` after it was started.
STARTUP_TIMEOUT_S = 60.0
#: First restart delay of a child that died, in seconds (doubled per quick failure).
RESTART_BACKOFF_S = 0.5
#: Longest restart delay, in seconds.
RESTART_BACKOFF_MAX_S = 30.0
#: A child that ran this long (seconds) before dying starts a fresh count of failures.
STABLE_RUN_S = 60.0
#: Quick failures in a row after which serve gives up and stops (exit 1).
MAX_QUICK_FAILURES = 5
#: Environment variable of the ready file (``worker.celery_app.READY_FILE_ENV``).
READY_FILE_ENV = "DIFFALL_SERVE_READY_FILE"


def note(message: str) -> None:
    """Print a progress line on stderr."""
    print(f"diffall: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Print a warning line on stderr."""
    print(f"diffall: warning: {message}", file=sys.stderr, flush=True)


def _child_setup(parent_pid: int) -> None:  # pragma: no cover - runs in the child
    """In the child before exec: own process group; on Linux, SIGTERM when the parent dies."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


@dataclass
class Child:
    """One supervised child process and its restart state."""

    name: str
    argv: list[str]
    #: Whether the started child is up (API answers, broker pings, worker created its file).
    ready: Callable[[], bool] = lambda: True
    #: File a Celery child creates once up (``worker.celery_app.READY_FILE_ENV``).
    ready_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: Consecutive runs shorter than :data:`STABLE_RUN_S`.
    failures: int = 0
    #: When a dead child is due to be started again (None: not waiting).
    restart_at: float | None = None

    def start(self, env: dict[str, str]) -> None:
        """Start the child (stdout and stderr go to our stderr)."""
        parent = os.getpid()
        child_env = dict(env)
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
            child_env[READY_FILE_ENV] = str(self.ready_file)
        self.process = subprocess.Popen(
            self.argv,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            stderr=sys.stderr.fileno(),
            preexec_fn=lambda: _child_setup(parent),  # safe: serve starts no threads
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def is_ready(self) -> bool:
        """Whether the child runs and is up."""
        if self.exit_code() is not None or self.process is None:
            return False
        if self.ready_file is not None and not self.ready_file.exists():
            return False
        return self.ready()

    def exit_code(self) -> int | None:
        """The exit code if the child has ended, else None."""
        return None if self.process is None else self.process.poll()

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (it and its own children)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def terminate(self) -> None:
        """Ask the child to stop gracefully (SIGTERM to the child only: it stops its pool)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)


def restart_delay_s(failures: int) -> float:
    """Seconds before starting again a child that died after ``failures`` (>= 0) quick runs in
    a row: :data:`RESTART_BACKOFF_S` doubled per failure, at most :data:`RESTART_BACKOFF_MAX_S`."""
    return float(min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** max(failures - 1, 0)))


class Signals:
    """Record SIGINT/SIGTERM instead of raising, so the supervisor can stop children cleanly."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        """Install the handlers for SIGINT and SIGTERM."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)


def stop_children(children: list[Child], signals: Signals, *, grace_s: float) -> None:
    """SIGTERM every child, wait up to ``grace_s`` seconds (or a further signal), then kill."""
    for child in children:
        child.terminate()
    seen = len(signals.received)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and len(signals.received) == seen:
        if all(child.exit_code() is not None for child in children):
            break
        time.sleep(0.1)
    for child in children:
        if child.exit_code() is None:
            note(f"{child.name} did not stop in time; killing it")
        # Kill the whole group either way: no grandchild (a pool process) outlives serve.
        child.signal_group(signal.SIGKILL)
        if child.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP server could listen on ``host``:``port`` now (nothing listens there).

    The API's uvicorn binds the same way (``SO_REUSEADDR``: a port in TIME_WAIT is free)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # not ours to judge: uvicorn reports a host it cannot resolve
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: ``GET url`` answers 200 within 2 s."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return check


def supervise(
    children: list[Child], env: dict[str, str], signals: Signals, banner: Callable[[], str]
) -> Child | None:
    """Run the children until a signal arrives; restart any that dies, with backoff.

    The banner is made and printed on stdout once every child is up, and again after any
    restart (each time with a fresh one-time sign-in link).

    Returns
    -------
    Child or None
        The child that kept failing (:data:`MAX_QUICK_FAILURES` quick deaths in a row), or
        None after a signal.
    """
    for child in children:
        child.start(env)
    announced = False
    first_start = time.monotonic()
    while not signals.received:
        now = time.monotonic()
        for child in children:
            code = child.exit_code()
            if code is not None and child.restart_at is None:
                ran_s = now - child.started_at
                child.failures = 0 if ran_s >= STABLE_RUN_S else child.failures + 1
                child.signal_group(signal.SIGKILL)  # no orphaned pool process
                if child.failures >= MAX_QUICK_FAILURES:
                    note(
                        f"{child.name} exited with code {code}, {child.failures} quick failures"
                        " in a row; stopping the service"
                    )
                    return child
                delay = restart_delay_s(child.failures)
                warn(
                    f"{child.name} exited with code {code} after {ran_s:.1f} s; restarting it "
                    f"in {delay:.1f} s"
                )
                child.restart_at = now + delay
                announced = False
            elif child.restart_at is not None and now >= child.restart_at:
                child.start(env)
                note(f"{child.name} restarted")
        if not announced and all(child.is_ready() for child in children):
            print(banner(), flush=True)
            announced = True
        elif not announced and now - first_start > STARTUP_TIMEOUT_S:
            warn(f"not every component is up after {STARTUP_TIMEOUT_S:.0f} s; still waiting")
            first_start = now
        time.sleep(0.2 if not announced else 0.5)
    return None

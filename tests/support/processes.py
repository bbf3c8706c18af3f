"""Launch service processes (for the tests and the benchmarks): start, wait, show logs, stop.

Each process runs in its own process group (so stopping it also stops its pool children) with its
output in a log file; every running process is listed in :data:`RUNNING`, whose logs
``tests/e2e/conftest.py`` attaches to the report of a failed test (with those of the processes
the test started and already stopped, from :data:`STARTED`). ``bench/lib/stack.py`` starts its
topology with the same :func:`start` and :func:`wait_until`. Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]

#: Processes started and not stopped yet.
RUNNING: list[Service] = []
#: Every process started in this test session, in order (their logs outlive them).
STARTED: list[Service] = []

#: The API key line of the ``diffall serve`` banner (the embedded default's first key).
KEY_LINE = re.compile(r'^API key \(tenant "local"\): (dfa_\S+)$', re.MULTILINE)
#: The URL line of the ``diffall serve`` banner.
URL_LINE = re.compile(r"^DiffALL is running at (http://\S+)", re.MULTILINE)
#: The banner's one-time sign-in link for the viewer (printed when the viewer is served).
SIGNIN_LINE = re.compile(
    r"^Open the viewer, signed in \(works once, for \d+ min\): (http://\S+/#signin=dfs_\S+)$",
    re.MULTILINE,
)
#: The last line of the ``diffall serve`` banner.
BANNER_END = "Press Ctrl+C to stop."

#: Characters of each log shown with a failed test.
LOG_TAIL_CHARS = 6000


def service_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without any DIFFALL_ variable, the project importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFALL_")}
    paths = [str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Service:
    """A started process, its log file and (optionally) the lines it printed on stdout."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stdout_lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.process.poll() is None

    def tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of its log ("" when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def log(self) -> str:
        """The end of its log (:data:`LOG_TAIL_CHARS` characters)."""
        return self.tail()

    def describe(self) -> str:
        status = "running" if self.alive() else f"exited with {self.process.returncode}"
        out = "".join(self.stdout_lines)
        printed = f"--- stdout ---\n{out}\n" if out else ""
        return f"=== {self.name} ({status}) ===\n{printed}--- log ---\n{self.log()}"

    def stop(self, *, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``grace_s`` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.reader is not None:
            self.reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self in RUNNING:
            RUNNING.remove(self)

    def kill(self) -> None:
        """SIGKILL the process group at once and reap the process."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.stop(grace_s=0)


def start(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_dir: Path,
    capture_stdout: bool = False,
) -> Service:
    """Start ``argv`` in its own process group; stderr (and stdout unless captured) to a log.

    With ``capture_stdout`` the lines printed on stdout are collected by a thread into
    ``Service.stdout_lines``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else log,
            stderr=log,
            start_new_session=True,
        )
    service = Service(name, process, log_path)
    RUNNING.append(service)
    STARTED.append(service)
    if capture_stdout:
        assert process.stdout is not None
        stream = process.stdout

        def read() -> None:
            for line in iter(stream.readline, b""):
                service.stdout_lines.append(line.decode(errors="replace"))

        service.reader = threading.Thread(target=read, name=f"{name}-stdout", daemon=True)
        service.reader.start()
    return service


def python_argv(*args: str) -> list[str]:
    """``python ARGS`` with this interpreter."""
    return [sys.executable, *args]


def api_argv(port: int, *, log_level: str | None = None) -> list[str]:
    """The API (``api.main:create_app``) under uvicorn on ``127.0.0.1:port``."""
    argv = python_argv(
        "-m", "uvicorn", "api.main:create_app", "--factory", "--host=127.0.0.1", f"--port={port}"
    )
    return [*argv, f"--log-level={log_level}"] if log_level else argv


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `diffall ARGS` to completion; return (exit code, stdout, stderr)."""
    done = subprocess.run(
        python_argv("-m", "diffall.cli", *args),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    services: Iterable[Service] = (),
    interval_s: float = 0.2,
) -> None:
    """Poll ``condition`` until true; fail early if one of ``services`` exits."""
    watched = list(services)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        for service in watched:
            if not service.alive():
                raise AssertionError(
                    f"{service.name} exited while waiting for {what}:\n{service.tail(4000)}"
                )
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def http_ok(url: str) -> Callable[[], bool]:
    """A condition: ``GET url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def free_port() -> int:
    """Return a loopback TCP port with nothing listening on it (at the time of the call).

    Returns
    -------
    int
        A port number in 1..65535; connecting to it is refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A condition: a TCP connection to ``host:port`` succeeds."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    return check


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux: read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

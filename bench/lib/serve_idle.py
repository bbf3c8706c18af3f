"""The embedded default left idle (``bench/chaos.py --serve-idle-min``): does ``diffall serve``
stop by itself?"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port, http_ok, service_env, start, wait_until

__all__ = ["ServeIdle", "run_serve_idle"]


@dataclass
class ServeIdle:
    """The embedded default left idle: did it stop by itself?"""

    minutes: float
    stopped: bool
    failed_health_checks: int
    restarts: int
    log_tail: str


def run_serve_idle(minutes: float, say: Callable[[str], None]) -> ServeIdle:
    """Run ``diffall serve`` on a fresh data dir for ``minutes``, checking ``/healthz`` every
    5 s; count its component restarts (``restarted`` lines) and whether it exited."""
    root = Path(tempfile.mkdtemp(prefix="diffall-chaos-serve-"))
    port = free_port()
    env = service_env({"DIFFALL_DATA_DIR": str(root / "data")})
    serve = start(
        "serve",
        [sys.executable, "-m", "diffall.cli", "serve", "--port", str(port)],
        env=env,
        cwd=root,
        log_dir=root / "logs",
        capture_stdout=True,
    )
    failed = 0
    try:
        wait_until(
            http_ok(f"http://127.0.0.1:{port}/healthz"),
            what="diffall serve",
            timeout_s=120,
            services=[serve],
        )
        say(f"diffall serve idle for {minutes:g} min")
        end = time.monotonic() + minutes * 60
        check = http_ok(f"http://127.0.0.1:{port}/healthz")
        while time.monotonic() < end and serve.alive():
            if not check():
                failed += 1
            time.sleep(5)
        stopped = not serve.alive()
        text = serve.log() + "".join(serve.stdout_lines)
        return ServeIdle(
            minutes, stopped, failed, text.count(" restarted"), text[-2000:] if stopped else ""
        )
    finally:
        serve.stop()
        shutil.rmtree(root, ignore_errors=True)

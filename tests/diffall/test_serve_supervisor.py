"""diffall serve's supervisor: a child that keeps dying quickly is restarted with backoff,
then serve gives up; a signal stops the loop; the port check sees a listener."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from diffall import supervisor
from diffall.supervisor import Child, Signals, port_is_free, restart_delay_s, supervise


def test_a_child_that_keeps_dying_is_restarted_with_backoff_then_given_up(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Every real child has a readiness check (an HTTP answer, a ping, a ready file); this one
    # never gets ready, like an API that cannot listen.
    dying = Child("flaky", [sys.executable, "-c", "raise SystemExit(3)"], ready=lambda: False)
    banners: list[str] = []
    started = time.monotonic()
    failed = supervise([dying], {}, Signals(), lambda: banners.append("up") or "up")
    took = time.monotonic() - started
    err = capfd.readouterr().err
    assert failed is dying and dying.failures == supervisor.MAX_QUICK_FAILURES
    restarts = [line for line in err.splitlines() if "flaky exited with code 3 after" in line]
    assert len(restarts) == supervisor.MAX_QUICK_FAILURES - 1, err
    # The waits double: 0.5 s, 1 s, 2 s, 4 s (each line names its own).
    delays = [float(line.rsplit("in ", 1)[1].split(" s")[0]) for line in restarts]
    assert delays == [restart_delay_s(n) for n in range(1, supervisor.MAX_QUICK_FAILURES)]
    assert took >= sum(delays)
    assert "5 quick failures in a row; stopping the service" in err
    assert banners == []  # it was never up: no banner


def test_a_signal_ends_supervision_without_a_failed_child() -> None:
    sleeper = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    signals = Signals()
    banners: list[str] = []

    def banner() -> str:
        banners.append("up")
        signals.received.append(15)  # as the SIGTERM handler records it
        return "up"

    try:
        assert supervise([sleeper], {}, signals, banner) is None
        assert banners == ["up"] and sleeper.exit_code() is None  # running: serve stops it
    finally:
        sleeper.signal_group(9)
        assert sleeper.process is not None
        sleeper.process.wait(timeout=10)


def test_the_port_check_sees_a_listener_and_not_a_closed_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        busy.listen()
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)

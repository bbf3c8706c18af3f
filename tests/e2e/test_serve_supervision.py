"""`diffall serve` keeps running: its private Redis broker survives a beat ticking 20 times a
second with three consumers (kombu's filesystem transport died of JSONDecodeError under this),
a SIGKILLed component is restarted with the banner printed again, and no API key reaches the
log on any error path (401, 404, 422, a query string, an aborted upload)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.s3server import free_port
from tests.support.processes import (
    BANNER_END,
    KEY_LINE,
    Service,
    descendants,
    python_argv,
    service_env,
    start,
    wait_until,
)
from tests.support.stack import JOB_TIMEOUT_S

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
#: Beat sends the webhook dispatcher every this many seconds (the default is 1 s).
DISPATCH_INTERVAL_S = "0.05"


def _banners(serve: Service) -> int:
    return "".join(serve.stdout_lines).count(BANNER_END)


def _child_pid(serve: Service, marker: str) -> int:
    """The pid of serve's direct child whose command line contains ``marker``."""
    for pid in descendants(serve.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if marker in cmdline and parent == serve.process.pid:
            return pid
    raise AssertionError(f"no child of serve matches {marker!r}")


def _compare(base_url: str, key: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    with (SAMPLES / "reference.png").open("rb") as a, (SAMPLES / "candidate.jpg").open("rb") as b:
        response = httpx.post(
            f"{base_url}/v1/comparisons", headers=headers, files={"a": a, "b": b}, timeout=30
        )
    assert response.status_code == 202, response.text
    url = f"{base_url}/v1/comparisons/{response.json()['id']}"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        body = httpx.get(url, headers=headers, timeout=10).json()
        if body["state"] in ("succeeded", "failed"):
            return dict(body)
        time.sleep(0.3)
    raise AssertionError(f"comparison not done after {JOB_TIMEOUT_S} s")


def _aborted_upload(port: int, key: str) -> None:
    """Start a multipart upload announcing 1 MB, send 1 KB of it, and hang up."""
    boundary = "diffallboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    request = (
        f"POST /v1/comparisons HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 1000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request + head + b"\x89PNG" + b"\0" * 1024)
        time.sleep(0.5)


def test_serve_survives_beat_ticks_kills_and_error_paths(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(
        {
            "DIFFALL_DATA_DIR": str(tmp_path / "data"),
            "DIFFALL_WEBHOOKS__DISPATCH_INTERVAL_S": DISPATCH_INTERVAL_S,
        }
    )
    serve = start(
        "serve",
        python_argv("-m", "diffall.cli", "serve", f"--port={port}", "--workers=1"),
        env=env,
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
        capture_stdout=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _banners(serve) == 1, timeout_s=90, what="banner", services=[serve])
        found = KEY_LINE.search("".join(serve.stdout_lines))
        assert found, serve.stdout_lines
        key = found.group(1)
        assert "broker redis+socket" in "".join(serve.stdout_lines)
        first = _compare(base_url, key)
        assert first["state"] == "succeeded", first

        # Each component killed outright comes back; the banner is printed again; jobs run.
        markers = (
            "--hostname=diffall-serve-worker",
            "--hostname=diffall-serve-hooks",  # the webhook delivery worker
            "--hostname=diffall-serve-big",  # the worker of the big queue
            "beat --schedule",
            "redis-server",
            "uvicorn",
        )
        for marker in markers:
            before = _banners(serve)
            os.kill(_child_pid(serve, marker), signal.SIGKILL)
            wait_until(
                lambda before=before: _banners(serve) > before,  # type: ignore[misc]
                timeout_s=90,
                what=f"the banner after killing {marker}",
                services=[serve],
            )
            again = _compare(base_url, key)
            assert again["state"] == "succeeded", (marker, again)
        log = serve.log_path.read_text(errors="replace")
        assert log.count("restarting it") == len(markers), log
        for name in ("worker", "hooks", "big", "beat", "broker", "api"):
            assert f"{name} restarted" in log

        # Error paths, each carrying the real key somewhere a careless log would copy it.
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{base_url}/v1/comparisons/{'0' * 32}", headers=headers).status_code in (
            404,
            422,
        )
        assert (
            httpx.post(f"{base_url}/v1/comparisons", headers=headers, json={"a": 1}).status_code
            == 422
        )
        assert httpx.get(f"{base_url}/v1/comparisons?api_key={key}").status_code == 401
        wrong = {"Authorization": f"Bearer {key[:-4]}xxxx"}
        assert httpx.get(f"{base_url}/v1/comparisons", headers=wrong).status_code == 401
        _aborted_upload(port, key)
        wait_until(
            lambda: "client_disconnected" in serve.log(),
            timeout_s=20,
            what="the disconnect line",
            services=[serve],
        )
        # The API still answers at once after the aborted upload.
        assert httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
        time.sleep(1.0)  # let the background log writer flush
        log = serve.log_path.read_text(errors="replace")
        assert key not in log and key[4:] not in log
        disconnects = [line for line in log.splitlines() if "client_disconnected" in line]
        assert len(disconnects) == 1 and '"info"' in disconnects[0], disconnects
        assert "request_id" in disconnects[0]
        # The API never logged a traceback (beat may, while the killed broker was away).
        assert not [
            line for line in log.splitlines() if '"logger": "api' in line and "Traceback" in line
        ]
        # Under beat's 20 ticks a second nothing died except what the test killed.
        assert log.count("exited with code") == len(markers), log
        assert "Unrecoverable" not in log and "JSONDecodeError" not in log

        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0, serve.describe()
    finally:
        serve.stop()

"""The embedded default end to end: `diffall serve` with no configuration (SQLite, local storage,
a private Redis broker, a real worker process), driven as a newcomer would: read the printed
key, compare two files with the SDK and with the printed curl-style request, stop with SIGTERM.
"""

from __future__ import annotations

import io
import os
import re
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from core.config import Settings
from core.imaging import CompareOptions, compare
from diffall.client import DiffallClient, DiffallError
from diffall.service_cli import LOCAL_KEY_FILE, ensure_local_key
from tests.s3server import free_port
from tests.support.images import edited_pair
from tests.support.processes import (
    KEY_LINE,
    ROOT,
    URL_LINE,
    alive,
    descendants,
    python_argv,
    run_cli,
    service_env,
    start,
    wait_until,
)
from tests.support.results import assert_same_scores, expected_result
from tests.support.stack import JOB_TIMEOUT_S

pytestmark = pytest.mark.slow


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    env = service_env({"DIFFALL_DATA_DIR": str(data_dir)})
    logs = tmp_path / "logs"

    # `keys create` works before the first serve: it creates the embedded database.
    code, out, err = run_cli("keys", "create", "--tenant", "other", env=env, cwd=tmp_path)
    assert code == 0, err
    other_key = out.strip()
    assert re.fullmatch(r"dfa_\S+", other_key) and out.count("\n") == 1, out
    assert (data_dir / "diffall.db").is_file()

    a, b = edited_pair(200, 150, seed=5)
    (tmp_path / "A.png").write_bytes(a)
    (tmp_path / "B.png").write_bytes(b)
    port = free_port()
    serve = start(
        "serve",
        python_argv("-m", "diffall.cli", "serve", f"--port={port}", "--workers=1"),
        env=env,
        cwd=tmp_path,
        log_dir=logs,
        capture_stdout=True,
    )
    try:
        wait_until(
            lambda: (
                KEY_LINE.search("".join(serve.stdout_lines)) is not None
                and "Press Ctrl+C" in "".join(serve.stdout_lines)
            ),
            timeout_s=45,
            what="the start-up banner",
            services=[serve],
        )
        banner = "".join(serve.stdout_lines)
        key_match, url_match = KEY_LINE.search(banner), URL_LINE.search(banner)
        assert key_match and url_match, banner
        key, base_url = key_match.group(1), url_match.group(1)
        assert base_url == f"http://127.0.0.1:{port}"
        samples = ROOT / "samples"
        assert (
            f"-F a=@{samples / 'reference.png'} -F b=@{samples / 'candidate.jpg'} "
            f"{base_url}/v1/comparisons"
        ) in banner
        key_file = data_dir / LOCAL_KEY_FILE
        assert key_file.read_text().strip() == key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

        with DiffallClient(base_url, key, timeout=20.0) as client:
            queued = client.compare(tmp_path / "A.png", tmp_path / "B.png")
            done = client.wait(queued["id"], timeout_s=JOB_TIMEOUT_S, poll_s=0.2)
            assert done["state"] == "succeeded", done
            assert_same_scores(done["result"], expected_result(a, b))
            heatmap = client.heatmap(done["id"])
            assert Image.open(io.BytesIO(heatmap)).size == (200, 150)
            assert heatmap == compare(a, b, CompareOptions()).heatmap_png

            # The printed one-liner: multipart files a and b.
            response = httpx.post(
                f"{base_url}/v1/comparisons",
                headers={"Authorization": f"Bearer {key}"},
                files={"a": ("A.png", a, "image/png"), "b": ("B.png", b, "image/png")},
                timeout=20.0,
            )
            assert response.status_code == 202, response.text
            again = client.wait(response.json()["id"], timeout_s=JOB_TIMEOUT_S, poll_s=0.2)
            assert again["state"] == "succeeded"
            assert again["result"]["ssim"] == done["result"]["ssim"]

        # Another tenant's key sees none of it.
        with DiffallClient(base_url, other_key) as stranger, pytest.raises(DiffallError) as info:
            stranger.get_comparison(done["id"])
        assert (info.value.status, info.value.code) == (404, "not_found")

        # SIGTERM to serve alone: it stops its children and exits 0.
        children = descendants(serve.process.pid)
        assert len(children) >= 6, children  # broker, api, worker + its pool, hooks, beat
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=40) == 0, serve.describe()
        wait_until(
            lambda: not any(alive(pid) for pid in children), timeout_s=5, what="children to end"
        )
    finally:
        serve.stop()

    # A later start prints the same key again (read from the 0600 file).
    for name in [n for n in os.environ if n.startswith("DIFFALL_")]:
        monkeypatch.delenv(name)
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    assert ensure_local_key(settings) == (key, False)


def test_serve_refuses_a_port_in_use_before_starting_anything(tmp_path: Path) -> None:
    # The API could not listen: serve says so at once (exit 2, the port named), instead of
    # starting the worker and watching the API die five times.
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = service_env({"DIFFALL_DATA_DIR": str(tmp_path / "data")})
        code, out, err = run_cli("serve", f"--port={port}", env=env, cwd=tmp_path)
    assert code == 2, err
    assert "port_in_use" in err, err
    assert f"port {port}" in err and out == ""
    assert not (tmp_path / "data" / "run").exists()  # no child was set up


def test_serve_refuses_an_unmigrated_postgres(
    tmp_path: Path, fresh_pg_url: Callable[[], str]
) -> None:
    env = service_env(
        {"DIFFALL_DATA_DIR": str(tmp_path / "data"), "DIFFALL_DATABASE_URL": fresh_pg_url()}
    )
    code, out, err = run_cli("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert code == 2, err
    assert "diffall db upgrade" in err and out == ""
    # After the explicit step, `keys create` works on it.
    code, _, err = run_cli("db", "upgrade", env=env, cwd=tmp_path)
    assert code == 0 and "is at revision" in err, err
    code, out, err = run_cli("keys", "create", "--tenant", "pg", env=env, cwd=tmp_path)
    assert code == 0 and re.fullmatch(r"dfa_\S+\n", out), err

"""The client distribution (diffall/pyproject.toml) installs alone: built from its folder into a
clean virtual environment with the locked client set (requirements/client.txt, from uv's cache:
offline), it pulls in no server library, and its SDK, webhook verification and ``diffall batch``
work there, while the server's commands say what is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")

pytestmark = pytest.mark.slow

#: Distributions of the server that the client must never install.
SERVER_ONLY = {
    "opencv-python-headless",
    "numpy",
    "scikit-image",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "celery",
    "kombu",
    "boto3",
    "fastapi",
    "diffall-server",
}

VERIFY = """
import json, time
from standardwebhooks import Webhook
from diffall.webhooks import WebhookVerificationError, verify_webhook
secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
body = json.dumps({"type": "ping", "data": {"id": "x"}}).encode()
stamp = int(time.time())
import datetime
when = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
signature = Webhook(secret).sign("msg_1", when, body.decode())
headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": signature}
print(json.dumps(verify_webhook(headers, body, secret)))
try:
    verify_webhook(headers, body + b" ", secret)
except WebhookVerificationError:
    print("refused")
"""


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run outside the checkout, with nothing of it on the import path."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "UV_CACHE_DIR": _uv_cache()}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _uv_cache() -> str:
    done = subprocess.run([str(UV), "cache", "dir"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding the client distribution and its locked dependencies only."""
    root = tmp_path_factory.mktemp("client-dist")
    source = root / "src"
    shutil.copytree(ROOT / "diffall", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = root / "venv"
    steps = [
        [UV, "venv", "--quiet", "--python", sys.executable, venv],
        [UV, "pip", "install", "--quiet", "--offline", "--python", venv / "bin" / "python",
         "--require-hashes", "-r", ROOT / "requirements" / "client.txt"],
        [UV, "pip", "install", "--quiet", "--offline", "--python", venv / "bin" / "python",
         "--no-deps", source],
    ]  # fmt: skip
    for step in steps:
        done = _run(step, root)
        assert done.returncode == 0, f"{step}: {done.stderr}"
    return venv


def test_installs_no_server_library(client_venv: Path) -> None:
    python = client_venv / "bin" / "python"
    done = _run([UV, "pip", "list", "--format", "json", "--python", python], client_venv)
    assert done.returncode == 0, done.stderr
    installed = {item["name"].lower() for item in json.loads(done.stdout)}
    assert {"diffall", "httpx", "rich", "typer", "standardwebhooks"} <= installed
    assert not SERVER_ONLY & installed, SERVER_ONLY & installed


def test_sdk_and_webhook_verification_work_alone(client_venv: Path) -> None:
    python = client_venv / "bin" / "python"
    done = _run([python, "-c", VERIFY], client_venv)
    assert done.returncode == 0, done.stderr
    event, refused = done.stdout.splitlines()
    assert json.loads(event)["type"] == "ping" and refused == "refused"
    imports = "import diffall.client, diffall.batch_cli, diffall.progress; print(diffall.__file__)"
    done = _run([python, "-c", imports], client_venv)
    assert done.returncode == 0 and str(client_venv) in done.stdout, done.stderr


def test_the_command_line_has_the_client_commands(client_venv: Path, tmp_path: Path) -> None:
    diffall = client_venv / "bin" / "diffall"
    done = _run([diffall, "batch", "wait", "--help"], tmp_path)
    assert done.returncode == 0 and "--fail-under" in done.stdout, done.stderr
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    done = _run([diffall, "batch", "submit", "a", "b", "--api-key", "k"], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("no_pairs: "), done.stderr
    done = _run(
        [diffall, "batch", "wait", "5b1c7e2a-0000-4000-8000-000000000000", "--api-key", "k",
         "--url", "http://127.0.0.1:9"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 3 and done.stderr.startswith("transport_error: "), done.stderr


@pytest.mark.parametrize(
    "args",
    [["compare", "x.png", "y.png"], ["keys", "create", "--tenant", "t"], ["db", "upgrade"]],
)
def test_server_commands_name_the_missing_distribution(
    client_venv: Path, tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "x.png").write_bytes(b"x"), (tmp_path / "y.png").write_bytes(b"y")
    done = _run([client_venv / "bin" / "diffall", *args], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"server_not_installed: 'diffall {args[0]}' runs"), done.stderr
    assert len(done.stderr.splitlines()) == 1

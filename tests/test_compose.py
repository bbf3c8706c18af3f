"""docker-compose.yml and the Dockerfile: valid for Compose, and shaped as the service needs.

No container engine runs here: the file is validated offline by Debian's ``docker-compose``
(``docker-compose config``), which scripts/test installs when it is missing. The structure is
read from ``docker-compose config``'s own output, i.e. after Compose resolved anchors, merges and
variables, exactly as it would run it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: Services of the Python image that need the DiffALL settings.
DIFFALL_SERVICES = ("migrate", "api", "worker", "worker-big", "webhooks", "scheduler")
#: Services that keep running, so need a health check.
LONG_RUNNING = (
    "postgres",
    "redis",
    "minio",
    "api",
    "worker",
    "worker-big",
    "webhooks",
    "scheduler",
)


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: run ./scripts/test (it installs Debian's "
            "docker-compose package) or `apt-get install --no-install-recommends docker-compose`",
            pytrace=False,
        )
    return binary


def _env() -> dict[str, str]:
    """Our environment without the variables the compose file reads, so defaults are checked."""
    prefixes = ("DIFFALL_", "COMPOSE_", "POSTGRES_", "MINIO_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def run_compose(
    compose_file: Path, *args: str, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose -f FILE [--env-file ENV_FILE] ARGS``."""
    options = ["-f", str(compose_file)]
    if env_file is not None:
        options += ["--env-file", str(env_file)]
    return subprocess.run(
        [_compose_binary(), *options, *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )


@cache
def resolved() -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it, with no .env file (the defaults)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.env"
        empty.write_text("")
        result = run_compose(COMPOSE_FILE, "config", env_file=empty)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def services() -> dict[str, Any]:
    found: dict[str, Any] = resolved()["services"]
    return found


def test_compose_file_is_valid() -> None:
    result = run_compose(COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    # The check above means something: a dependency on a missing service is refused.
    text = COMPOSE_FILE.read_text()
    broken = text.replace(
        "      migrate:\n        condition: service_completed_successfully",
        "      migrat:\n        condition: service_completed_successfully",
        1,
    )
    assert broken != text
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = run_compose(tmp_path / "docker-compose.yml", "config", "-q")
    assert result.returncode != 0
    assert "migrat" in result.stderr


def test_every_part_of_the_service_is_there() -> None:
    assert set(services()) >= {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "migrate",
        "api",
        "worker",
        "worker-big",
        "scheduler",
    }
    assert re.fullmatch(r"postgres:16(\.\d+)*(-\w+)?", services()["postgres"]["image"])
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", services()["redis"]["image"])
    assert services()["minio"]["image"].startswith("minio/minio")
    assert services()["minio-init"]["image"].startswith("minio/mc")
    for name in DIFFALL_SERVICES:
        assert services()[name]["build"]["context"] == str(ROOT), name


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_health_checks(name: str) -> None:
    check = services()[name].get("healthcheck")
    assert check and check.get("test") and not check.get("disable"), name


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_are_restarted_when_they_exit(name: str) -> None:
    # Docker restarts them whatever their exit code, after a delay that doubles from 100 ms up
    # to a minute while they keep failing (reset once one ran 10 s): supervision with backoff.
    assert services()[name]["restart"] == "unless-stopped", name


def test_one_off_services_are_never_restarted() -> None:
    for name in set(services()) - set(LONG_RUNNING):
        assert services()[name]["restart"] == "no", name


def test_api_runs_the_app_factory_on_port_8000() -> None:
    api = services()["api"]
    command = " ".join(api["command"])
    assert "uvicorn api.main:create_app --factory" in command and "--port=8000" in command
    assert any(port["target"] == 8000 for port in api["ports"])
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_worker_scales() -> None:
    # `--scale worker=N` needs no fixed container name and no fixed host port.
    worker = services()["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    assert worker["command"][:3] == ["celery", "--app=worker.celery_app", "worker"]
    queues = next(arg for arg in worker["command"] if arg.startswith("--queues="))
    assert set(queues.split("=", 1)[1].split(",")) == {"interactive", "batch", "maintenance"}
    # The sweeper is scheduled once, by the scheduler, not by every worker replica.
    assert "--beat" not in worker["command"] and "-B" not in worker["command"]
    assert services()["scheduler"]["command"][:3] == ["celery", "--app=worker.celery_app", "beat"]


def test_big_images_have_a_worker_of_their_own() -> None:
    # The big queue is served one job at a time, by this worker only.
    big = services()["worker-big"]
    assert big["command"][:3] == ["celery", "--app=worker.celery_app", "worker"]
    assert "--queues=big" in big["command"] and "--concurrency=1" in big["command"]
    assert "--beat" not in big["command"] and "-B" not in big["command"]
    for name in set(DIFFALL_SERVICES) - {"worker-big"}:
        command = services()[name]["command"]
        queues = [arg.split("=", 1)[1].split(",") for arg in command if arg.startswith("--queues=")]
        assert all("big" not in q for q in queues), name
    assert big["environment"] == services()["worker"]["environment"]


def _depends(name: str) -> dict[str, str]:
    return {dep: spec["condition"] for dep, spec in services()[name]["depends_on"].items()}


def test_start_order() -> None:
    assert _depends("minio-init") == {"minio": "service_healthy"}
    assert _depends("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker", "worker-big"):
        assert _depends(name) == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "minio-init": "service_completed_successfully",
            "migrate": "service_completed_successfully",
        }, name
    assert _depends("scheduler")["migrate"] == "service_completed_successfully"
    assert services()["migrate"]["command"] == ["diffall", "db", "upgrade"]
    assert services()["migrate"]["restart"] == "no"


def _example_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^(DIFFALL_[A-Z0-9_]+)=", text, flags=re.MULTILINE))


@pytest.mark.parametrize("name", DIFFALL_SERVICES)
def test_every_setting_reaches_the_python_services(name: str) -> None:
    environment = services()[name]["environment"]
    assert _example_variables() <= set(environment), name
    assert environment["DIFFALL_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in environment["DIFFALL_DATABASE_URL"]
    assert environment["DIFFALL_BROKER_URL"].startswith("redis://redis:6379/")
    assert environment["DIFFALL_STORAGE__BACKEND"] == "s3"
    # Inside the network the service talks to MinIO; presigned URLs point at the host's port.
    assert environment["DIFFALL_STORAGE__S3_ENDPOINT_URL"] == "http://minio:9000"
    assert environment["DIFFALL_STORAGE__S3_PRESIGN_ENDPOINT_URL"] == "http://localhost:9000"


def test_variables_override_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    (tmp_path / ".env").write_text(
        "DIFFALL_LIMITS__MAX_PIXELS=1234\nPOSTGRES_PASSWORD=s3cret-pw\nDIFFALL_ENV=production\n"
    )
    result = run_compose(tmp_path / "docker-compose.yml", "config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    for name in DIFFALL_SERVICES:
        environment = config["services"][name]["environment"]
        assert environment["DIFFALL_LIMITS__MAX_PIXELS"] == "1234"
        assert environment["DIFFALL_ENV"] == "production"
        assert ":s3cret-pw@postgres:5432/" in environment["DIFFALL_DATABASE_URL"]
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret-pw"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert "[dev]" not in text, "no dev extras in the image"
    assert re.search(r"^CMD \[\"uvicorn\", \"api\.main:create_app\", \"--factory\"", text, re.M)
    # Everything the Dockerfile copies exists and is not excluded by .dockerignore.
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE)
    sources = [s for line in copied for s in line.split()[:-1] if not s.startswith("--")]
    assert {"pyproject.toml", "core", "api", "worker", "diffall", "migrations"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source

"""The lock: every install comes from requirements/*.txt, exported from uv.lock with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    """Package name (normalised) -> pinned version, from an exported requirements file."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def _names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]
        names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def _project(path: str = "pyproject.toml") -> dict:
    return tomllib.loads((ROOT / path).read_text())["project"]


def test_every_pin_is_hashed() -> None:
    for kind in ("runtime", "dev"):
        text = (ROOT / "requirements" / f"{kind}.txt").read_text()
        blocks = re.split(r"\n(?=\S)", text.strip())
        pinned = [block for block in blocks if "==" in block.splitlines()[0]]
        assert pinned, kind
        for block in pinned:
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_runtime_set_has_the_service_and_no_dev_tools() -> None:
    runtime = _pins(ROOT / "requirements" / "runtime.txt")
    dev = _pins(ROOT / "requirements" / "dev.txt")
    project = _project()
    # The workspace's client (diffall/pyproject.toml) is installed from its folder, not pinned.
    assert _names(project["dependencies"]) - {"diffall"} <= set(runtime)
    dev_only = _names(project["optional-dependencies"]["dev"])
    assert dev_only <= set(dev)
    tools = {"pytest", "mypy", "ruff", "moto", "hypothesis", "import-linter", "playwright", "uv"}
    assert tools <= dev_only
    assert not tools & set(runtime), tools & set(runtime)
    # One resolution: what both sets hold is pinned to the same version.
    assert all(dev[name] == version for name, version in runtime.items())


#: Server-side libraries the client distribution must never pull in.
SERVER_ONLY = {"opencv-python-headless", "numpy", "sqlalchemy", "celery", "boto3", "alembic"}


def test_client_set_is_the_client_distribution_alone() -> None:
    client_pins = _pins(ROOT / "requirements" / "client.txt")
    runtime = _pins(ROOT / "requirements" / "runtime.txt")
    client = _project("diffall/pyproject.toml")
    server = _project()
    assert client["name"] == "diffall" and server["name"] == "diffall-server"
    assert _names(client["dependencies"]) <= set(client_pins)
    assert not SERVER_ONLY & set(client_pins), SERVER_ONLY & set(client_pins)
    # One resolution, and one version for client and server (the API's).
    assert all(runtime[name] == version for name, version in client_pins.items())
    assert client["version"] == server["version"]
    assert f"diffall=={client['version']}" in server["dependencies"]

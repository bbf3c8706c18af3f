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


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


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
    assert _names(project["dependencies"]) <= set(runtime)
    dev_only = _names(project["optional-dependencies"]["dev"])
    assert dev_only <= set(dev)
    tools = {"pytest", "mypy", "ruff", "moto", "hypothesis", "import-linter", "playwright", "uv"}
    assert tools <= dev_only
    assert not tools & set(runtime), tools & set(runtime)
    # One resolution: what both sets hold is pinned to the same version.
    assert all(dev[name] == version for name, version in runtime.items())

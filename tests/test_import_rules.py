"""The import rules of ../shared/DESIGN.md, section 2, checked by import-linter's contracts
(pyproject.toml, [tool.importlinter]) plus a direct scan of core/imaging's imports."""

from __future__ import annotations

import ast
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
OURS = ("core", "api", "worker", "diffall", "migrations", "bench", "tests")


def test_import_linter_contracts_hold(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_core_imaging_imports_only_itself_and_libraries() -> None:
    offenders: list[str] = []
    for path in sorted((ROOT / "core" / "imaging").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # relative imports stay inside core.imaging
            for name in names:
                top = name.split(".")[0]
                if top in OURS and not name.startswith("core.imaging"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_layers_contract_states_the_design_direction() -> None:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    layers = [c["layers"] for c in contracts if c["type"] == "layers"]
    assert layers == [
        ["diffall", "api | worker", "core.services", "core.db | core.storage", "core.config"]
    ]


def test_only_the_job_queue_module_and_the_worker_import_celery_or_kombu() -> None:
    # Read the sources themselves (the contract above could be loosened by accident).
    offenders = []
    for package in ("core", "api", "diffall"):
        for path in (ROOT / package).rglob("*.py"):
            if "build" in path.relative_to(ROOT).parts:
                continue
            if path.relative_to(ROOT).as_posix() == "core/services/jobqueue.py":
                continue
            for line in path.read_text().splitlines():
                words = line.split()
                is_import = len(words) >= 2 and words[0] in ("import", "from")
                if is_import and words[1].split(".")[0] in ("celery", "kombu"):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


def test_core_netguard_imports_only_itself_and_libraries() -> None:
    # The SSRF guard sits below the use cases and the settings: callers pass plain values.
    offenders: list[str] = []
    for path in sorted((ROOT / "core" / "netguard").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in OURS and not name.startswith("core.netguard"):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


#: What a test module may import of the test tree: the shared support, the root conftest and
#: the S3 server (tests/support/ is where helpers shared by test packages and bench/ live).
TEST_TREE_ALLOWED = ("tests.support", "tests.conftest", "tests.s3server")


def _imported_modules(path: Path) -> list[str]:
    """The absolute module names ``path`` imports (``from x import y`` gives x and x.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _allowed_test_import(name: str) -> bool:
    if name == "tests":
        return True  # ``from tests import support`` is checked as tests.support
    return any(name == ok or name.startswith(ok + ".") for ok in TEST_TREE_ALLOWED)


def test_no_test_module_imports_another_test_module() -> None:
    # A helper two test modules share belongs in tests/support/ (and is imported from there by
    # the tests and by bench/), never in one test module imported by another.
    offenders: list[str] = []
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _imported_modules(path):
                if name.split(".")[0] == "tests" and not _allowed_test_import(name):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_test_import_rule_sees_what_it_forbids(tmp_path: Path) -> None:
    # The scan above must catch the forms a shared helper was imported by before.
    module = tmp_path / "test_example.py"
    module.write_text(
        "from tests.e2e.helpers import JOB_TIMEOUT_S\n"
        "from tests.api.conftest import Api\n"
        "import tests.worker.test_webhook_delivery\n"
        "from tests import core\n"
        "from tests.support.images import png\n"
        "from tests.s3server import free_port\n"
    )
    forbidden = [n for n in _imported_modules(module) if not _allowed_test_import(n)]
    assert forbidden == [
        "tests.e2e.helpers",
        "tests.e2e.helpers.JOB_TIMEOUT_S",
        "tests.api.conftest",
        "tests.api.conftest.Api",
        "tests.worker.test_webhook_delivery",
        "tests.core",
    ]


def test_no_benchmark_imports_another_benchmark() -> None:
    # What benchmarks share is in bench/lib/ (and bench/images.py, bench/chromium_pages.py,
    # bench/verdict_corpus.py); a benchmark script (bench/bench_*.py) is imported by its smoke
    # test only.
    offenders: list[str] = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for name in _imported_modules(path):
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == "bench" and parts[1].startswith("bench_"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []

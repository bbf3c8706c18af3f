"""README.md's table of limits is the one the code prints (``python -m core.config
--limits-table``, generated from ``LimitsSettings``): a limit changed in the code and not in the
README (or the reverse) fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from core.config import LimitsSettings
from core.config.limits_table import limits_table

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- limits-table:start -->", "<!-- limits-table:end -->"


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, flags=re.DOTALL)
    assert match, f"README.md has no {START} ... {END} section"
    return match.group(1)


def test_readme_limits_equal_the_code() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "core.config", "--limits-table"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == limits_table()
    assert _readme_table() == printed, (
        "README.md's limits table differs from the code: replace it with the output of "
        "`python -m core.config --limits-table`"
    )


def test_the_table_has_every_limit_with_its_default() -> None:
    table = limits_table()
    for name, field in LimitsSettings.model_fields.items():
        (row,) = [line for line in table.splitlines() if f"DIFFALL_LIMITS__{name.upper()}`" in line]
        default = field.get_default()
        if isinstance(default, int):
            assert f"`{default:,}`" in row
        assert field.description and len(row) > 40
    assert "`52,428,800`" in table  # 50 MiB, what the service enforces

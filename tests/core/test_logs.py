"""core.logs: one set-up for every process; routine lines demoted, secrets never written.

Each case runs in a process of its own, as the set-up does in production (one call per
process): the test process's logging has been touched by every test before it (pytest's
capture handlers, Alembic's file config, in-process apps), which is not what is under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_LOG_LINES = """
import logging
import structlog
from core import logs

logs.configure_logging(level={level!r}, json=True, background={background!r})
logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate")
logging.getLogger("alembic.runtime.migration").info("Running upgrade 0005 -> 0006")
structlog.get_logger("api").info("signed_in", note="Bearer dfa_abcdefghijklmnop")
"""


def _stderr_lines(*, level: str, background: bool) -> list[dict[str, str]]:
    script = textwrap.dedent(_LOG_LINES).format(level=level, background=background)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stderr.splitlines()]


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_routine_lines_are_demoted_and_secrets_masked(background: bool) -> None:
    lines = _stderr_lines(level="INFO", background=background)
    assert [line["event"] for line in lines] == ["Running upgrade 0005 -> 0006", "signed_in"]
    assert "dfa_" not in lines[1]["note"] and "[redacted]" in lines[1]["note"]


def test_debug_shows_the_routine_lines_at_debug() -> None:
    lines = _stderr_lines(level="DEBUG", background=False)
    assert [(line["event"], line["level"]) for line in lines] == [
        ("setup plugin alembic.autogenerate", "debug"),
        ("Running upgrade 0005 -> 0006", "info"),
        ("signed_in", "info"),
    ]

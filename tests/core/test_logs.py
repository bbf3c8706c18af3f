"""core.logs: one set-up for every process; routine lines demoted, secrets never written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from core import logs


@pytest.fixture
def configured() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # An earlier test of this process may have configured the same set-up, whose handler has
    # since been replaced: configure afresh, not "unchanged, nothing to do".
    logs._configured = None
    logs.configure_logging(level="INFO", json=True)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logs._configured = None  # the next test configures afresh
    structlog.reset_defaults()


def test_routine_lines_are_demoted_and_secrets_masked(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0005 -> 0006")
    structlog.get_logger("api").info("signed_in", note="Bearer dfa_abcdefghijklmnop")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["Running upgrade 0005 -> 0006", "signed_in"]
    assert "dfa_" not in lines[1]["note"] and "[redacted]" in lines[1]["note"]

"""Settings for in-process tests (no environment, no ``.env`` file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Settings

__all__ = ["settings_for"]


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: everything under ``tmp_path``, no ``.env`` file read."""
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "env": "test"}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]

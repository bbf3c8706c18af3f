"""README.md's table of the ``DIFFALL_LIMITS__*`` settings, generated from :class:`LimitsSettings`
(``python -m core.config --limits-table`` prints it; a test compares it with the README)."""

from __future__ import annotations

import re
from typing import Any

from core.config import LimitsSettings

__all__ = ["limits_table"]


def _markdown_default(value: Any) -> str:
    """A field default as README text: ``None`` as "computed", numbers with thousands commas."""
    if value is None:
        return "computed"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:,}`"
    return f"`{value}`"


def limits_table() -> str:
    """The Markdown table of every ``DIFFALL_LIMITS__*`` setting: variable, default, meaning.

    Generated from :class:`LimitsSettings` (field defaults and docstrings), so README.md's copy
    can be checked against the code (``python -m core.config --limits-table`` prints it).

    Returns
    -------
    str
        The table, one row per setting, ending with a newline.
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in LimitsSettings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        meaning = re.sub(r":\w+:`", "`", meaning.replace("``", "`"))  # reST to Markdown
        default = _markdown_default(field.get_default(call_default_factory=True))
        rows.append(f"| `DIFFALL_LIMITS__{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"

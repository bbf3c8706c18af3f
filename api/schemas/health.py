"""Health bodies: liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "Health",
    "Readiness",
]


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: every dependency answered."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(
        description="Per dependency (`database`, `broker`, `storage`): `ok` or `error: ...`."
    )

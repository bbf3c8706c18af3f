"""``/problems``: the documented problem types (the ``type`` URI of every error points here)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.errors import CODE_STATUS, ApiProblem
from core.services.errors import NotFound

router = APIRouter(tags=["operations"])


class ProblemType(BaseModel):
    """One error code: its HTTP status and title."""

    code: str
    status: int
    title: str


def _describe(code: str, status: int) -> ProblemType:
    return ProblemType(code=code, status=status, title=ApiProblem(status, code, "").title)


@router.get("/problems", response_model=list[ProblemType], summary="Error codes")
async def list_problem_types() -> list[ProblemType]:
    """Every stable error ``code`` the API answers with, and its HTTP status."""
    return [_describe(code, status) for code, status in sorted(CODE_STATUS.items())]


@router.get(
    "/problems/{code}",
    response_model=ProblemType,
    summary="One error code",
    responses={404: {"description": "No such code (`not_found`)."}},
)
async def get_problem_type(code: str) -> ProblemType:
    """The status and title of one error ``code``."""
    if code not in CODE_STATUS:
        raise NotFound(f"no problem type {code!r}")
    return _describe(code, CODE_STATUS[code])

"""``/v1/sessions``: the web viewer's sign-in, its current session, and sign-out.

See :mod:`api.sessions` for the cookie and the CSRF rules. The /v1 API itself is unchanged:
Bearer keys work everywhere; the cookie is another way to present the same key's tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api import sessions as cookies
from api.deps import SessionDep, TenantDep, counting_failed_logins
from api.routes import problem_responses
from core.services import sessions
from core.services.errors import InvalidRequest, Unauthorized

router = APIRouter(tags=["sessions"])


class SessionCreate(BaseModel):
    """Sign in with exactly one of a one-time sign-in token or an API key."""

    model_config = ConfigDict(extra="forbid")

    signin_token: Annotated[str | None, Field(max_length=sessions.MAX_TOKEN_LENGTH)] = None
    """The token in the link ``diffall serve`` prints (``#signin=dfs_...``)."""
    api_key: Annotated[str | None, Field(max_length=256)] = None
    """An API key (``dfa_...``)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SessionCreate:
        if (self.signin_token is None) == (self.api_key is None):
            raise ValueError("send exactly one of signin_token or api_key")
        return self


class SessionOut(BaseModel):
    """The session the cookie carries (its secret is only in the HttpOnly cookie)."""

    tenant: str
    csrf_token: str = Field(description="Send it as X-CSRF-Token on POST/PUT/PATCH/DELETE.")
    expires_in_s: int | None = Field(None, description="Seconds the session lasts (sign-in).")


@router.post(
    "/v1/sessions",
    status_code=201,
    summary="Sign the viewer in: exchange a sign-in token or an API key for a session cookie",
    responses=problem_responses(401, 403, 422),
)
def create_session(
    body: SessionCreate, request: Request, response: Response, session: SessionDep
) -> SessionOut:
    """Open a browser session (``Set-Cookie: diffall_session=...; HttpOnly; SameSite=Strict``)."""
    cookies.check_origin(request)  # no signing a victim's browser in from another site
    with counting_failed_logins(request):  # a guessed key or token counts as a failed login
        if body.signin_token is not None:
            opened = sessions.open_session_with_signin_token(session, body.signin_token)
        else:
            assert body.api_key is not None
            opened = sessions.open_session_with_key(session, body.api_key.strip())
    cookies.set_session_cookie(request, response, opened)
    response.headers["Cache-Control"] = "no-store"
    return SessionOut(
        tenant=opened.tenant.name, csrf_token=opened.csrf_token, expires_in_s=opened.expires_in_s
    )


@router.get(
    "/v1/sessions/current",
    summary="The viewer's session: its tenant and CSRF token",
    responses=problem_responses(401),
)
def current_session(request: Request, response: Response, tenant: TenantDep) -> SessionOut:
    """The cookie's session (401 without one; a Bearer key is not a session)."""
    if not cookies.uses_cookie(request):
        raise Unauthorized("no viewer session: sign in at POST /v1/sessions")
    response.headers["Cache-Control"] = "no-store"
    token = request.cookies[cookies.SESSION_COOKIE]
    return SessionOut(
        tenant=tenant.name, csrf_token=sessions.csrf_token_for(token), expires_in_s=None
    )


@router.delete(
    "/v1/sessions/current",
    status_code=204,
    response_class=Response,
    summary="Sign out: end the viewer's session and clear its cookie",
    description="422 `invalid_request` when the request authenticates with a Bearer key: only "
    "a cookie session can be ended.",
    responses=problem_responses(401, 403, 422),
)
def delete_session(request: Request, tenant: TenantDep, session: SessionDep) -> Response:
    """End the session (CSRF-checked like every state change) and expire the cookie."""
    del tenant  # authenticated (and CSRF-checked) by the dependency
    if not cookies.uses_cookie(request):
        raise InvalidRequest("sign-out ends a cookie session; this request sent a Bearer key")
    sessions.end_session(session, request.cookies[cookies.SESSION_COOKIE])
    response = Response(status_code=204)
    cookies.clear_session_cookie(request, response)
    return response

"""The viewer's cookie sessions at the HTTP edge: the cookie, CSRF and Origin checks.

A browser signs in at ``POST /v1/sessions`` (with the one-time token of the link ``diffall
serve`` prints, or with a pasted API key) and gets the cookie :data:`SESSION_COOKIE`
(``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` over https). A request carrying that
cookie and no ``Authorization`` header acts as the tenant of the key the session came from;
Bearer keys work exactly as before and win when both are sent.

CSRF: every state-changing request (POST, PUT, PATCH, DELETE) made with the cookie must send
the session's CSRF token in :data:`CSRF_HEADER` (a synchronizer token: derived from the
session's secret, handed to the page by ``POST /v1/sessions`` and ``GET /v1/sessions/current``,
which another origin cannot read), and an ``Origin`` header, when sent, must be this server's.
``SameSite=Strict`` is a third layer. Refusals are HTTP 403 ``csrf_failed``.
"""

from __future__ import annotations

import hmac
from typing import Final
from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlalchemy.orm import Session

from core.db.models import Tenant
from core.services import sessions
from core.services.errors import Forbidden

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "check_origin",
    "clear_session_cookie",
    "cookie_tenant",
    "set_session_cookie",
    "uses_cookie",
]

#: Name of the session cookie.
SESSION_COOKIE: Final = "diffall_session"
#: Header carrying the session's CSRF token on state-changing requests.
CSRF_HEADER: Final = "X-CSRF-Token"
#: Methods that change state (CSRF-checked when authenticated by the cookie).
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def uses_cookie(request: Request) -> bool:
    """True when the request authenticates with the session cookie (no Authorization header)."""
    return request.headers.get("authorization") is None and bool(
        request.cookies.get(SESSION_COOKIE)
    )


def check_origin(request: Request) -> None:
    """Refuse (403 ``csrf_failed``) a request whose ``Origin`` is another site's.

    No ``Origin`` header passes (same-origin GETs and non-browser clients send none).
    """
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise Forbidden(f"requests from origin {origin!r} are refused", code="csrf_failed")


def cookie_tenant(request: Request, db: Session) -> tuple[Tenant, str]:
    """The tenant of the request's session cookie and its rate-limit bucket (the key's hash).

    Blocking (database). State-changing methods must carry the CSRF token and a same-site
    ``Origin`` (see the module docstring).

    Raises
    ------
    Unauthorized
        The session is unknown, expired, ended, or its key was revoked (401).
    Forbidden
        ``csrf_failed``: missing or wrong CSRF token, or another site's Origin (403).
    """
    token = request.cookies.get(SESSION_COOKIE, "")
    tenant, bucket = sessions.authenticate_session(db, token)
    if request.method in UNSAFE_METHODS:
        check_origin(request)
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, sessions.csrf_token_for(token)):
            raise Forbidden(
                f"a request made with the session cookie must send its CSRF token in "
                f"{CSRF_HEADER} (GET /v1/sessions/current returns it)",
                code="csrf_failed",
            )
    return tenant, bucket


def set_session_cookie(
    request: Request, response: Response, opened: sessions.OpenedSession
) -> None:
    """Put the new session's cookie on the response (HttpOnly, SameSite=Strict, Path=/)."""
    response.set_cookie(
        SESSION_COOKIE,
        opened.token,
        max_age=opened.expires_in_s,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    """Expire the session cookie in the browser."""
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )

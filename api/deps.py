"""Dependencies injected into the routes, as ``Annotated`` aliases.

A route reads as the list of what it needs::

    def get_comparison(comparison_id: uuid.UUID, tenant: TenantDep, session: SessionDep): ...

Per-app resources (settings, session factory, object store, job queue, rate limiter) live on
``app.state``, built by :func:`api.main.create_app` and its lifespan. Each request gets ONE
database session, shared by authentication, the idempotency bookkeeping and the route, and
closed when the request ends (one connection per request: on SQLite, where every transaction
takes the write lock, two sessions in one request could wait on each other).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Final

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.ratelimit import AUTH_FAILURE_PREFIX, RateLimiter, retry_after
from api.sessions import cookie_tenant, uses_cookie
from core.config import Settings
from core.db.models import Tenant
from core.netguard.classify import IPNetwork
from core.services import keys
from core.services.errors import RateLimited, TooManyFailedLogins, Unauthorized
from core.services.jobqueue import JobQueue
from core.services.webhooks.dispatch import DeliveryQueue
from core.services.webhooks.policy import DeliveryPolicy
from core.storage import ObjectStore

__all__ = [
    "DeliveryPolicyDep",
    "DeliveryQueueDep",
    "QueueDep",
    "SessionDep",
    "SettingsDep",
    "StoreDep",
    "TenantDep",
    "client_address",
    "close_request_session",
    "counting_failed_logins",
    "get_session",
    "get_tenant",
    "parse_bearer",
    "request_session",
    "resolve_tenant",
    "webhook_networks",
]

#: Longest API key accepted in the ``Authorization`` header, in characters.
MAX_KEY_LENGTH: Final = 256

# Documents the scheme in OpenAPI; the header is parsed by parse_bearer (auto_error off, so
# every failure is our own 401 problem with WWW-Authenticate).
_bearer_scheme = HTTPBearer(
    auto_error=False, description="An API key: `Authorization: Bearer dfa_...`."
)


async def get_settings_dep(request: Request) -> Settings:
    """The app's settings (``app.state.settings``)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> ObjectStore:
    """The app's object store (``app.state.store``)."""
    store: ObjectStore = request.app.state.store
    return store


async def get_queue(request: Request) -> JobQueue:
    """The app's job queue (``app.state.queue``)."""
    queue: JobQueue = request.app.state.queue
    return queue


async def get_delivery_queue(request: Request) -> DeliveryQueue:
    """The app's webhook delivery queue (``app.state.deliveries``: one, on the app's broker
    producer, built when the app starts)."""
    queue: DeliveryQueue = request.app.state.deliveries
    return queue


async def get_delivery_policy(request: Request) -> DeliveryPolicy:
    """The app's webhook delivery policy (``app.state.delivery_policy``, from its settings)."""
    policy: DeliveryPolicy = request.app.state.delivery_policy
    return policy


def request_session(request: Request) -> Session:
    """This request's database session, opened on first use.

    Parameters
    ----------
    request
        The current request.

    Returns
    -------
    Session
        The same session for every caller within the request.
    """
    session: Session | None = getattr(request.state, "db_session", None)
    if session is None:
        session = request.app.state.sessions()
        request.state.db_session = session
    return session


def close_request_session(request: Request) -> None:
    """Close this request's session, if one was opened (safe to call twice).

    Parameters
    ----------
    request
        The current request.
    """
    session: Session | None = getattr(request.state, "db_session", None)
    if session is not None:
        request.state.db_session = None
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """Yield this request's session; close it when the route function returned.

    On the event loop: creating a session does no I/O (it connects on first use), and the
    close (a rollback on the connection) runs in the thread pool, only when one was opened.
    """
    session = request_session(request)
    try:
        yield session
    finally:
        if getattr(request.state, "db_session", None) is not None:
            await run_in_threadpool(close_request_session, request)


def parse_bearer(authorization: str | None) -> str:
    """Extract the API key from an ``Authorization`` header value.

    Parameters
    ----------
    authorization
        The header value, or None when absent.

    Returns
    -------
    str
        The key (1 to :data:`MAX_KEY_LENGTH` visible ASCII characters).

    Raises
    ------
    Unauthorized
        When the header is missing, not ``Bearer <key>``, or the key is malformed.
    """
    if authorization is None or not authorization.strip():
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    if len(token) > MAX_KEY_LENGTH or not all(33 <= ord(ch) <= 126 for ch in token):
        raise Unauthorized("the API key is malformed")
    return token


def _rate_limit_key(token: str) -> str:
    """Bucket key of an API key: its SHA-256 (the key itself is never kept)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def client_address(request: Request) -> str:
    """The client's address: the connection's peer as uvicorn reports it.

    Behind a reverse proxy this is the proxy, unless uvicorn runs with ``--proxy-headers
    --forwarded-allow-ips=<the proxy's address>`` (then it is the ``X-Forwarded-For`` client).
    """
    return request.client.host if request.client is not None else "unknown"


def _check_failed_auth_limit(request: Request) -> RateLimiter:
    """Refuse the request (429) when its address made too many failed key checks recently.

    Called before the key is looked at: a refused guess costs one bucket lookup, no database.
    Returns the limiter, for the caller to record a failure in.
    """
    limiter: RateLimiter = request.app.state.auth_failure_limiter
    wait_s = limiter.peek(AUTH_FAILURE_PREFIX + client_address(request))
    if wait_s > 0:
        wait = retry_after(wait_s)
        per_minute = request.app.state.settings.limits.failed_auth_per_minute
        raise TooManyFailedLogins(
            f"more than {per_minute} failed API-key checks per minute from this address; "
            f"retry in {wait} s",
            retry_after_s=wait,
        )
    return limiter


@contextlib.contextmanager
def counting_failed_logins(request: Request) -> Iterator[None]:
    """Refuse at once (429 ``too_many_failed_logins``) an address over its failed-login limit,
    then count an ``Unauthorized`` raised in the block against that address. Wraps every
    check of a credential: the API key of each request, and the viewer's sign-in."""
    failures = _check_failed_auth_limit(request)
    try:
        yield
    except Unauthorized:
        failures.acquire(AUTH_FAILURE_PREFIX + client_address(request))
        raise


def resolve_tenant(request: Request) -> Tenant:
    """Authenticate the request's API key and apply its rate limit, once per request.

    Blocking (database): call it from a thread (FastAPI does for ``def`` dependencies). On
    PostgreSQL the read transaction stays open for the route (READ COMMITTED: each statement
    sees what is committed), which saves a COMMIT and a BEGIN per request; on SQLite it is
    ended at once, as SQLite holds a lock while a transaction is open.

    Parameters
    ----------
    request
        The current request; the tenant is cached on ``request.state.tenant``.

    Returns
    -------
    Tenant
        The tenant owning the key.

    Raises
    ------
    Unauthorized
        Missing, malformed, unknown or revoked key (HTTP 401); a presented key or session
        cookie that fails is counted against the client address's
        ``limits.failed_auth_per_minute`` (a request with neither is not a guess).
    TooManyFailedLogins
        The address exceeded ``limits.failed_auth_per_minute`` (HTTP 429), checked first.
    RateLimited
        The key exceeded ``limits.rate_limit_per_minute`` (HTTP 429; see :mod:`api.ratelimit`).
    """
    cached: Tenant | None = getattr(request.state, "tenant", None)
    if cached is not None:
        return cached
    # Only a presented credential can be a guess: a page asking whether it is signed in (no
    # header, no cookie) is refused without counting against its address.
    cookie = uses_cookie(request)  # the viewer's session (api/sessions.py), else a Bearer key
    presented = cookie or request.headers.get("authorization") is not None
    with counting_failed_logins(request) if presented else contextlib.nullcontext():
        token = None if cookie else parse_bearer(request.headers.get("authorization"))
        session = request_session(request)
        try:
            if token is None:
                tenant, bucket = cookie_tenant(request, session)  # acts as its key: same bucket
            else:
                tenant, bucket = keys.authenticate(session, token), _rate_limit_key(token)
            if session.get_bind().dialect.name == "sqlite":
                session.commit()  # end the read transaction (SQLite holds a lock while open)
        except BaseException:
            session.rollback()
            raise
    limiter: RateLimiter = request.app.state.rate_limiter
    wait_s = limiter.acquire(bucket)
    if wait_s > 0:
        wait = retry_after(wait_s)
        raise RateLimited(
            f"rate limit of {request.app.state.settings.limits.rate_limit_per_minute} requests "
            f"per minute exceeded for this API key; retry in {wait} s",
            retry_after_s=wait,
        )
    request.state.tenant = tenant
    request.state.tenant_id = str(tenant.id)
    return tenant


#: The request's session, closed as soon as the route function returned (before the response
#: is sent: no transaction, and on SQLite no lock, is held while the client reads).
_session = Depends(get_session, scope="function")


def get_tenant(
    request: Request,
    session: Annotated[Session, _session],
    _credentials: Annotated[object, Depends(_bearer_scheme)],
) -> Tenant:
    """The authenticated tenant (401 problem with ``WWW-Authenticate: Bearer`` otherwise)."""
    del session  # declared so the request's session is closed by get_session's teardown
    return resolve_tenant(request)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, _session]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
DeliveryQueueDep = Annotated[DeliveryQueue, Depends(get_delivery_queue)]
DeliveryPolicyDep = Annotated[DeliveryPolicy, Depends(get_delivery_policy)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]


def webhook_networks(settings: Settings) -> tuple[IPNetwork, ...]:
    """Networks webhooks may reach despite the SSRF rules (``DIFFALL_WEBHOOK_ALLOWED_NETWORKS``,
    parsed once, with the settings)."""
    return settings.webhook_allowed_networks

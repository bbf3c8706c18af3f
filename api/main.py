"""The FastAPI application factory: ``api.main:create_app``.

Nothing happens at import. ``create_app(settings)`` builds the app (routes, error handlers,
middleware, metrics, rate limiter); its lifespan opens the per-app resources and closes them at
shutdown: the database engine and session factory, the object store, and the broker producer
behind the job queue. Run it with ``uvicorn --factory api.main:create_app``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.docs import install_docs
from api.errors import PROBLEM_MEDIA_TYPE, install_error_handlers
from api.idempotency import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_LENGTH
from api.metrics import ApiMetrics
from api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from api.ratelimit import RateLimiter, SharedTokenBucketLimiter, TokenBucketLimiter
from api.routes import (
    batches,
    comparisons,
    health,
    images,
    legend,
    previews,
    problems,
    sessions,
    viewer,
    webhook_deliveries,
    webhooks,
)
from api.schemas import ComparisonCreate, Problem
from core.config import Settings, get_settings
from core.db.session import make_engine, make_session_factory
from core.logs import configure_logging
from core.services.factories import store_from_settings
from core.services.jobqueue import JobQueue, Producer, open_producer
from core.services.webhooks.dispatch import DeliveryQueue
from core.services.webhooks.policy import DeliveryPolicy
from core.storage import ObjectStore

__all__ = ["API_VERSION", "create_app"]

log = structlog.get_logger("api")


def _version() -> str:
    try:
        return importlib.metadata.version("diffall")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


#: Version shown in the OpenAPI document (the package's version).
API_VERSION = _version()

DESCRIPTION = """\
Find every difference between two images, at volume.

Upload images (`POST /v1/images`, or presigned uploads), submit comparisons
(`POST /v1/comparisons`, or up to 10,000 pairs with `POST /v1/batches`), poll
`GET /v1/comparisons/{id}` until the state is final, fetch the heatmap. Or register a webhook
(`POST /v1/webhooks`) and be called back, with signed, retried and logged deliveries.

Every request needs `Authorization: Bearer <API key>`. Errors are `application/problem+json`
(RFC 9457) with a stable `code` (see `GET /problems`). Every POST honours `Idempotency-Key`.
"""


#: OpenAPI description of the ``Idempotency-Key`` header, added to every v1 POST.
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Replays the first response for the same key and body (kept 24 h, per "
    "tenant); another body under the key is 422, a request still in progress 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
}


#: Answers every v1 POST may give because of its ``Idempotency-Key`` (problem documents).
IDEMPOTENCY_RESPONSES: dict[str, str] = {
    "409": "A request with this Idempotency-Key is in progress (`idempotency_key_in_progress`).",
    "422": "Invalid request (`validation_error`, `invalid_idempotency_key`, "
    "`idempotency_key_reused`, ...).",
}
#: Answers every v1 operation may give before its route runs (problem documents).
AUTH_RESPONSES: dict[str, str] = {
    "401": "Missing or invalid API key (`unauthorized`).",
    "429": "Too many requests (`rate_limited`, `too_many_failed_logins`); see `Retry-After`.",
}
#: Schema of every error response (RFC 9457 problem document).
PROBLEM_SCHEMA_REF: dict[str, str] = {"$ref": "#/components/schemas/Problem"}


@dataclass
class Resources:
    """What the lifespan opens for one app."""

    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    producer: Producer
    queue: JobQueue
    deliveries: DeliveryQueue


def open_resources(settings: Settings) -> Resources:
    """Build the app's resources from ``settings`` (no connection is made yet).

    Parameters
    ----------
    settings
        The application's settings.

    Returns
    -------
    Resources
        Engine, session factory, object store, broker producer, its job queue and its webhook
        delivery queue.
    """
    engine = make_engine(settings.database_url_resolved, secret_keys=settings.webhooks.secret_keys)
    store = store_from_settings(settings)
    producer = open_producer(settings)  # creates the filesystem broker's folders if needed
    return Resources(
        engine=engine,
        sessions=make_session_factory(engine),
        store=store,
        producer=producer,
        queue=producer.jobs,
        deliveries=producer.deliveries(expires_s=settings.webhooks.lease_s),
    )


def close_resources(resources: Resources) -> None:
    """Release the app's resources (pooled connections, broker connections).

    Parameters
    ----------
    resources
        What :func:`open_resources` returned.
    """
    try:
        resources.producer.close()
    finally:
        resources.engine.dispose()


def _problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: every error response (>= 400) a problem document under
    ``application/problem+json`` only (FastAPI's own 422 included), and every v1 POST's
    ``Idempotency-Key`` header with its 409 and 422."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(
        "ComparisonCreate",
        ComparisonCreate.model_json_schema(ref_template="#/components/schemas/{model}"),
    )
    components.setdefault(
        "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1/"):  # every v1 call needs a key and is rate-limited
                for status, text in AUTH_RESPONSES.items():
                    responses.setdefault(status, {"description": text})
            if method == "post" and path.startswith("/v1/"):
                operation.setdefault("parameters", []).append(IDEMPOTENCY_PARAMETER)
                for status, text in IDEMPOTENCY_RESPONSES.items():
                    responses.setdefault(status, {"description": text})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:  # every error is a problem document
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA_REF}}
    app.openapi_schema = schema
    return schema


def make_rate_limiter(settings: Settings) -> RateLimiter:
    """The per-key limiter: shared through Redis when the broker is Redis (every API process
    draws from the same buckets), else in this process's memory (the embedded default)."""
    rate = settings.limits.rate_limit_per_minute
    broker = settings.broker_url_resolved
    if broker.split("://", 1)[0].lower() in ("redis", "rediss"):
        return SharedTokenBucketLimiter.from_url(broker, rate_per_minute=rate)
    return TokenBucketLimiter(rate_per_minute=rate)


def make_auth_failure_limiter(settings: Settings) -> RateLimiter:
    """The failed-authentication limiter (per client address), placed like the per-key one."""
    rate = settings.limits.failed_auth_per_minute
    broker = settings.broker_url_resolved
    if broker.split("://", 1)[0].lower() in ("redis", "rediss"):
        return SharedTokenBucketLimiter.from_url(broker, rate_per_minute=rate)
    return TokenBucketLimiter(rate_per_minute=rate)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the DiffALL API application.

    Parameters
    ----------
    settings
        The settings to use; None means :func:`core.config.get_settings` (the environment).

    Returns
    -------
    FastAPI
        The app; OpenAPI at ``/openapi.json``, interactive docs at ``/docs`` (Swagger UI) and
        ``/redoc``, both from bundled assets. Resources are opened by its lifespan (run it
        under an ASGI server, or ``with TestClient(app)``).
    """
    settings = settings if settings is not None else get_settings()
    configure_logging(background=True)  # one format, no secrets, never on the event loop
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await run_in_threadpool(open_resources, settings)
        app.state.engine = resources.engine
        app.state.sessions = resources.sessions
        app.state.store = resources.store
        app.state.producer = resources.producer
        app.state.queue = resources.queue
        app.state.deliveries = resources.deliveries
        metrics.database.sessions = resources.sessions
        log.info(
            "api_started",
            database=resources.engine.url.get_backend_name(),
            storage=settings.storage.backend,
        )
        try:
            yield
        finally:
            metrics.database.sessions = None
            await run_in_threadpool(close_resources, resources)
            app.state.rate_limiter.close()
            app.state.auth_failure_limiter.close()
            log.info("api_stopped")

    app = FastAPI(
        title="DiffALL",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by api.docs instead of FastAPI's CDN pages
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.delivery_policy = DeliveryPolicy.from_settings(settings)
    app.state.metrics = metrics
    app.state.rate_limiter = make_rate_limiter(settings)
    app.state.auth_failure_limiter = make_auth_failure_limiter(settings)
    install_error_handlers(app)
    for module in (images, comparisons, batches, webhooks, webhook_deliveries, health, problems):
        app.include_router(module.router)
    install_docs(app)
    app.include_router(previews.router)
    app.include_router(legend.router)  # the heatmap legend (SVG)
    app.include_router(sessions.router)  # the viewer's sign-in (cookie sessions)
    app.include_router(viewer.router)  # the web viewer at /, /c/{id}, /b/{id}, /viewer/*
    app.add_middleware(
        BodyLimitMiddleware, max_upload_bytes=lambda: settings.limits.max_upload_bytes
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: added last
    app.openapi = lambda: _problem_openapi(app)  # type: ignore[method-assign]
    return app

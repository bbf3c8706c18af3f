"""Operations: liveness (``/healthz``), readiness (``/readyz``), Prometheus (``/metrics``).

None of them needs an API key (keep them on the internal network), none is rate-limited.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import QueueDep, SessionDep, StoreDep
from api.metrics import ApiMetrics
from api.schemas import Health, Readiness
from core.services import health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process is up: no I/O at all."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "A dependency is unavailable."}},
)
def readyz(session: SessionDep, store: StoreDep, queue: QueueDep) -> Response:
    """200 when the database, the broker and the storage all answer; 503 otherwise."""
    checks = health.readiness(session, store, queue)
    ready = bool(checks) and all(value == "ok" for value in checks.values())
    body = Readiness(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(
        body.model_dump(),
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    """Request counts and latencies, queue depth, running jobs, recent failures by code."""
    app_metrics: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)

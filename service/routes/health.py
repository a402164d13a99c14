"""Liveness, readiness (Open Inference Protocol health API) and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import ComponentsDep
from service.schemas.v2 import Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", response_model=Liveness)
async def live() -> Liveness:
    """True while the process serves HTTP."""
    return Liveness(live=True)


@router.get("/v2/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(components: ComponentsDep) -> JSONResponse:
    """200 when every required model has a loaded version and the service is below its in-flight bound
    (`max_requests_in_flight`); 503 otherwise (for readiness probes: a saturated replica gets no new traffic)."""
    is_ready = components.registry.ready() and not components.limits.saturated()
    return JSONResponse(Readiness(ready=is_ready).model_dump(), status_code=200 if is_ready else 503)


@router.get("/metrics", response_class=Response, tags=["metrics"])
async def metrics(components: ComponentsDep) -> Response:
    """Prometheus text exposition of the service's metrics (every worker's, merged, with OEGATE_WORKERS > 1)."""
    return Response(generate_latest(components.metrics.exposed), media_type=CONTENT_TYPE_LATEST)

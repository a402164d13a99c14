"""`create_app(settings)`: builds the FastAPI app with its registry, metrics, micro-batchers and lifespan.

Nothing is created at import time; each call builds an independent app (tests build one per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry

from service import __version__
from service.capture import Capture
from service.cpus import cpu_budget, onnxruntime_threads
from service.deps import Components
from service.errors import install_error_handlers
from service.hot_routes import HotRoutes
from service.inference import Predictor
from service.limits import WorkLimits
from service.metrics import Metrics
from service.middleware import BodySizeLimitMiddleware, InFlightLimitMiddleware, RequestContextMiddleware
from service.openapi import document_request_bodies
from service.registry import Registry
from service.routes import admin, health, models, native, v2
from service.schemas.native import PredictRequest
from service.schemas.v2 import InferenceRequest
from service.settings import Settings
from service.shared_pins import SharedPins

logger = logging.getLogger(__name__)


def hot_routes() -> list[APIRoute]:
    """The routes `HotRoutes` serves directly: predict and infer, nearly every request's (no dependencies)."""
    routes = [
        route for router in (native.router, v2.inference) for route in router.routes if isinstance(route, APIRoute)
    ]
    assert not any(route.dependencies for route in routes), "HotRoutes calls endpoints without solving dependencies"
    return routes


DESCRIPTION = """Anomaly-gating classifier server (Outlier Exposure, Hendrycks et al., ICLR 2019).

Each prediction carries `anomaly_score` = 1 / (1 + KL[U||p]) (higher is more anomalous) and
`reject` = anomaly_score >= threshold. Image models take images or arrays; text models take texts, tokenized by the
model's own tokenizer, and a text longer than the model's `max_length` tokens (see `/v1/models`) is truncated to it,
not refused. Native JSON API under `/v1`, Open Inference Protocol (KServe V2) under `/v2` with Triton's binary
tensor data, classification, model configuration and statistics extensions, Prometheus metrics at `/metrics`.
Request bodies may be gzip or deflate encoded. Every error body is `{"error": "..."}`."""


def create_app(
    settings: Settings,
    metrics_registry: CollectorRegistry | None = None,
    *,
    capture_rng: random.Random | None = None,
    capture_clock: Callable[[], float] = time.time,
    shared_pins: Path | None = None,
) -> FastAPI:
    """A new app for `settings`. Metrics go to `metrics_registry` (a fresh registry when None); capture samples
    with `capture_rng` (a fresh unseeded one when None) and dates captures with `capture_clock` (tests seed both).
    `shared_pins`: the pin file of a worker process (service/shared_pins.py); None in one process."""
    metrics = Metrics(metrics_registry if metrics_registry is not None else CollectorRegistry())
    limits = WorkLimits(settings, metrics)
    registry = Registry(settings, metrics, limits, None if shared_pins is None else SharedPins(shared_pins))
    capture = Capture(settings, metrics, capture_rng, capture_clock)
    predictor = Predictor(registry, metrics, settings.allow_threshold_override, limits, capture)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        report = await registry.start()
        capture.start()
        budget = cpu_budget(workers=settings.workers)
        intra, inter = onnxruntime_threads(settings.intra_op_threads, settings.inter_op_threads, budget)
        logger.info(
            "service started",
            extra={
                "loaded": report.loaded, "failed": len(report.failed), "model_dir": str(settings.model_dir),
                "cpus_affinity": budget.affinity, "cpus_quota": budget.quota, "cpus_usable": budget.usable,
                "workers": settings.workers, "cpus_all_workers": budget.total,
                "onnxruntime_intra_op_threads": intra, "onnxruntime_inter_op_threads": inter,
                "decode_threads": limits.decode_tokens, "inference_threads": limits.inference_tokens,
                "max_requests_in_flight": limits.max_in_flight,
                "capture_dir": None if settings.capture_dir is None else str(settings.capture_dir),
            },
        )  # fmt: skip
        if not settings.queue_holds_admitted_requests:
            logger.warning(
                "max_queue_size is below what admission lets in: heavy requests may be read and decoded, then "
                "refused by a full model queue (service/settings.py, max_queue_size)",
                extra={"max_queue_size": settings.max_queue_size, "max_instances": settings.max_instances},
            )
        poller = (
            asyncio.get_running_loop().create_task(registry.poll(settings.poll_interval_s), name="model-poller")
            if settings.poll_interval_s > 0
            else None
        )
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await registry.close()
            await capture.close()  # after the batchers drained: the last requests' samples are queued

    app = FastAPI(title="oegate", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.components = Components(
        settings=settings, metrics=metrics, registry=registry, predictor=predictor, limits=limits, capture=capture
    )
    install_error_handlers(app, metrics)
    # The predict/infer routes first: the router tries routes in order, and they take nearly every request.
    for router in (native.router, v2.inference, models.router, v2.public, v2.router, health.router, admin.router):
        app.include_router(router)
    # Added innermost first: the request context (ids, access log, latency) wraps admission, which refuses
    # requests over the in-flight bound before the body limits and deadline read any of their body; inside them
    # all, the predict/infer routes are served past the framework's router (service/hot_routes.py).
    app.add_middleware(HotRoutes, routes=hot_routes(), handlers=app.exception_handlers)
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(InFlightLimitMiddleware, limits=limits, metrics=metrics)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    document_request_bodies(app, [PredictRequest, InferenceRequest])
    return app

"""Bounded work: how many predict/infer requests are admitted at once, how many threads decode and how many run
models, and how many pixels a request may ask the service to decode.

Policy:
1. **Admission.** Predict/infer requests inside the service at once (reading their body, decoding, queued or run)
   are bounded in number and in cost (bytes of body), with a reserve for light requests (`Admission`,
   service/admission.py, states that policy). The next one is refused at once with 503 + Retry-After, before its
   body is read (`InFlightLimitMiddleware`), and counted as `oegate_request_errors_total{reason="overloaded"}`
   (the `OegateOverloaded` alert); `/v2/health/ready` reports not ready while the bound is reached, so a load
   balancer sends new work elsewhere. Health, metadata and metrics are never counted or refused.
2. **Threads.** Decoding (JSON parsing of large bodies, image decoding, tokenizing) and onnxruntime runs each have
   their own anyio `CapacityLimiter`, sized from the settings, instead of sharing anyio's default 40-thread pool
   with each other and with Starlette's file reads: a flood of uploads queues for decode tokens and cannot hold
   the threads the session runs need. Light requests have a decode limiter and an inference limiter of their own
   (as many threads as the heavy ones'): they never queue behind heavy requests' decoding or runs.
3. **Pixels.** An image may have at most `max(image_pixels_factor x model pixels, image_pixels_floor)` pixels
   (never above `max_image_pixels`), and one request at most `max_request_pixels` in all; both are checked from
   each image's header before its pixels are decoded (`PixelBudget`).
"""

from __future__ import annotations

import functools

from anyio import CapacityLimiter

from service.admission import Admission, Lane
from service.card import ImageInputSpec
from service.codecs.image import PixelBudget
from service.cpus import cpu_budget
from service.metrics import Metrics
from service.settings import Settings


class WorkLimits:
    """The admission bound and the decode and inference thread limiters (per lane) of one app."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.admission = Admission(
            metrics,
            max_requests=settings.max_requests_in_flight,
            max_bytes=settings.max_request_bytes_in_flight,
            max_body_bytes=settings.max_body_bytes,
            light_request_bytes=settings.light_request_bytes,
            reserved_requests=settings.light_reserved_requests,
        )
        self.max_in_flight = settings.max_requests_in_flight
        self.retry_after_s = settings.retry_after_s
        usable = cpu_budget(workers=settings.workers).usable
        self.decode_tokens = settings.decode_concurrency or usable
        self.inference_tokens = settings.inference_concurrency or usable
        self.light_inference_tokens = self.inference_tokens  # at most twice the runs at once, half of them light

    # The limiters are made on first use: anyio builds them for the running event loop's backend.
    @functools.cached_property
    def decode(self) -> CapacityLimiter:
        """Worker threads for parsing large JSON bodies, decoding images and tokenizing texts."""
        return CapacityLimiter(self.decode_tokens)

    @functools.cached_property
    def light_decode(self) -> CapacityLimiter:
        """Worker threads for decoding and tokenizing light requests (service/admission.py)."""
        return CapacityLimiter(self.decode_tokens)

    @functools.cached_property
    def inference(self) -> CapacityLimiter:
        """Worker threads for onnxruntime session runs (all models and versions together)."""
        return CapacityLimiter(self.inference_tokens)

    @functools.cached_property
    def light_inference(self) -> CapacityLimiter:
        """Worker threads for session runs of light requests' batches (all models and versions together)."""
        return CapacityLimiter(self.light_inference_tokens)

    def decode_limiter(self, lane: Lane) -> CapacityLimiter:
        return self.light_decode if lane is Lane.LIGHT else self.decode

    def priority_inference_limiter(self, priority: bool) -> CapacityLimiter:
        """The inference limiter for a batch of light (`priority`) or heavy requests, as a callable for the
        micro-batchers (which ask for it inside the event loop)."""
        return self.light_inference if priority else self.inference

    @property
    def in_flight(self) -> int:
        return self.admission.requests

    def saturated(self) -> bool:
        """True while the admission bound is reached (a new light request would get 503)."""
        return self.admission.saturated()


def pixel_budget(spec: ImageInputSpec, settings: Settings) -> PixelBudget:
    """A fresh per-request pixel budget for a model with input `spec` (see the module docstring, point 3)."""
    per_image = max(int(spec.width * spec.height * settings.image_pixels_factor), settings.image_pixels_floor)
    return PixelBudget(per_image=min(per_image, settings.max_image_pixels), per_request=settings.max_request_pixels)

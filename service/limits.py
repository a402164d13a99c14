"""Bounded work: how many predict/infer requests are admitted at once, how many threads decode and how many run
models, and how many pixels a request may ask the service to decode.

Policy:
1. **Admission.** At most `max_requests_in_flight` predict/infer requests are inside the service at once (reading
   their body, decoding, queued or running). The next one is refused at once with 503 + Retry-After, before its
   body is read (`InFlightLimitMiddleware`), and counted as `oegate_request_errors_total{reason="overloaded"}`
   (the `OegateOverloaded` alert); `/v2/health/ready` reports not ready while the bound is reached, so a load
   balancer sends new work elsewhere. Health, metadata and metrics are never counted or refused.
2. **Threads.** Decoding (JSON parsing of large bodies, image decoding, tokenizing) and onnxruntime runs each have
   their own anyio `CapacityLimiter`, sized from the settings, instead of sharing anyio's default 40-thread pool
   with each other and with Starlette's file reads: a flood of uploads queues for decode tokens and cannot hold
   the threads the session runs need.
3. **Pixels.** An image may have at most `max(image_pixels_factor x model pixels, image_pixels_floor)` pixels
   (never above `max_image_pixels`), and one request at most `max_request_pixels` in all; both are checked from
   each image's header before its pixels are decoded (`PixelBudget`).
"""

from __future__ import annotations

import functools

from anyio import CapacityLimiter

from service.card import ImageInputSpec
from service.codecs.image import PixelBudget
from service.cpus import cpu_budget
from service.metrics import Metrics
from service.settings import Settings


class WorkLimits:
    """The admission counter and the decode and inference thread limiters of one app."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.max_in_flight = settings.max_requests_in_flight
        self.retry_after_s = settings.retry_after_s
        usable = cpu_budget(workers=settings.workers).usable
        self.decode_tokens = settings.decode_concurrency or usable
        self.inference_tokens = settings.inference_concurrency or usable
        self._metrics = metrics
        self._in_flight = 0

    # The limiters are made on first use: anyio builds them for the running event loop's backend.
    @functools.cached_property
    def decode(self) -> CapacityLimiter:
        """Worker threads for parsing large JSON bodies, decoding images and tokenizing texts."""
        return CapacityLimiter(self.decode_tokens)

    @functools.cached_property
    def inference(self) -> CapacityLimiter:
        """Worker threads for onnxruntime session runs (all models and versions together)."""
        return CapacityLimiter(self.inference_tokens)

    def inference_limiter(self) -> CapacityLimiter:
        """`inference`, as a callable for the micro-batchers (which ask for it inside the event loop)."""
        return self.inference

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def saturated(self) -> bool:
        """True while as many predict/infer requests as allowed are being served (a new one would get 503)."""
        return self._in_flight >= self.max_in_flight

    def try_admit(self) -> bool:
        """Count one more request in flight, unless the bound is reached (then False, nothing counted)."""
        if self.saturated():
            return False
        self._in_flight += 1
        self._metrics.requests_in_flight.set(self._in_flight)
        return True

    def release(self) -> None:
        self._in_flight -= 1
        self._metrics.requests_in_flight.set(self._in_flight)


def pixel_budget(spec: ImageInputSpec, settings: Settings) -> PixelBudget:
    """A fresh per-request pixel budget for a model with input `spec` (see the module docstring, point 3)."""
    per_image = max(int(spec.width * spec.height * settings.image_pixels_factor), settings.image_pixels_floor)
    return PixelBudget(per_image=min(per_image, settings.max_image_pixels), per_request=settings.max_request_pixels)

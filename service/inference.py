"""The one inference call behind both APIs: lease a model version, decode or tokenize, micro-batch, threshold.

Decoding runs in a decode thread (images, texts, large bodies), except for small numeric inputs that the route
already parsed on the event loop: checking a few thousand numbers costs less than the thread hand-off (measured:
BENCHMARKS.md, section 1).

The graph computes the probabilities, KL[U||p], the anomaly score and the confidence; the service adds only the
reject decision, `reject = anomaly_score >= threshold`, with the threshold in anomaly-score units (float32, as
the graph emits the score and training calibrates it). When capture is on for the model (service/capture.py), the
decoder also hands back each instance's raw input, and the gated result is offered to capture: sampling and a
non-blocking put, no I/O on the request path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread
import numpy as np

from service.admission import Lane, current_lane
from service.batching import ModelInputs
from service.capture import Capture, RawInputs
from service.card import Card
from service.codecs.text import TextEncoder
from service.errors import THRESHOLD_OVERRIDE_DISABLED, ForbiddenError
from service.limits import WorkLimits
from service.metrics import Metrics
from service.registry import Registry


class Decoder(Protocol):
    """Turns a request's instances into the model's inputs, in a worker thread: float32 [N, C, H, W] for an image
    card, token ids (with the version's text encoder, None for image models) for a text card. Given a `raw` list
    (capture on for the model), it also appends each instance's `RawInput` (service/capture.py), in order: a
    reference to what it decoded from (image bytes, text, checked array), not a copy."""

    def __call__(
        self, card: Card, text_encoder: TextEncoder | None, raw: RawInputs | None = None, /
    ) -> ModelInputs: ...


@dataclass(frozen=True)
class GateResult:
    """Per-instance outputs of one request, in request order."""

    model: str
    version: str
    threshold: float
    labels: list[str]
    probs: np.ndarray  # [N, k] temperature-scaled softmax
    kl_uniform: np.ndarray  # [N]
    anomaly_score: np.ndarray  # [N], higher = more anomalous
    confidence: np.ndarray  # [N], 0-1 rescaled
    label_index: np.ndarray  # [N] int64, argmax of probs
    reject: np.ndarray  # [N] bool


class Predictor:
    """Runs requests against the registry's current versions and records the prediction metrics and each version's
    statistics (service/statistics.py: success or failure with its time, decoding time, post-processing time)."""

    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        allow_threshold_override: bool,
        limits: WorkLimits | None = None,
        capture: Capture | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._allow_threshold_override = allow_threshold_override
        self._limits = limits
        self._capture = capture

    async def predict(
        self,
        name: str,
        version: str | None,
        decode: Decoder,
        threshold_override: float | None = None,
        source: str = "",
        *,
        inline: bool = False,
    ) -> GateResult:
        """The gated result of one request; `source` (the client's declared name, for capture) is stored with any
        captured instance. `inline` decodes on the event loop instead of a decode thread: for inputs whose decoding
        is only checking numbers already parsed on the loop, or a small PNG (a thread hand-off costs more)."""
        if threshold_override is not None and not self._allow_threshold_override:
            raise ForbiddenError(THRESHOLD_OVERRIDE_DISABLED)
        async with self._registry.lease(name, version) as model:
            statistics = model.statistics
            started = time.perf_counter()
            capture = self._capture if self._capture is not None and self._capture.wants(model.name) else None
            raw: RawInputs | None = [] if capture is not None else None
            try:
                lane = current_lane.get()  # light requests decode and run ahead of heavy ones (service/admission.py)
                if inline:
                    inputs = decode(model.card, model.text_encoder, raw)
                else:
                    limiter = None if self._limits is None else self._limits.decode_limiter(lane)  # None: anyio's pool
                    inputs = await anyio.to_thread.run_sync(
                        decode, model.card, model.text_encoder, raw, limiter=limiter
                    )
                decoded = time.perf_counter()
                statistics.compute_input.add(decoded - started)
                outputs = await model.batcher.submit(inputs, priority=lane is Lane.LIGHT)
            except BaseException:  # a bad input, an overload, a failed run or a cancelled request: a failure
                statistics.record_request(False, time.perf_counter() - started)
                raise
            finished = time.perf_counter()
            result = self._gate(model.name, model.version, model.card, outputs, threshold_override)
            if capture is not None and raw is not None:
                capture.offer(result, raw, source)  # sampling and a non-blocking put: never waits, never raises
            statistics.compute_output.add(time.perf_counter() - finished)
            statistics.record_request(True, time.perf_counter() - started)
        return result

    def _gate(
        self, name: str, version: str, card: Card, outputs: dict[str, np.ndarray], threshold_override: float | None
    ) -> GateResult:
        threshold = card.threshold.value if threshold_override is None else threshold_override
        anomaly_score = outputs["anomaly_score"]
        reject = anomaly_score >= np.float32(threshold)
        self._metrics.record_predictions(name, version, anomaly_score, outputs["confidence"], reject)
        return GateResult(
            model=name,
            version=version,
            threshold=threshold,
            labels=card.labels,
            probs=outputs["probs"],
            kl_uniform=outputs["kl_uniform"],
            anomaly_score=anomaly_score,
            confidence=outputs["confidence"],
            label_index=outputs["probs"].argmax(axis=1).astype(np.int64),
            reject=reject,
        )

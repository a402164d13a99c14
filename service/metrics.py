"""Prometheus metrics, registered on a registry passed in (a fresh one per app, so each test starts at zero).

Names follow the Prometheus conventions: prefix `oegate_`, base units (`_seconds`), `_total` on counters, and
labels bounded to model, version, provider, route, status class, outcome and error reason (no per-request labels).
The `model` label of the request latency and error counter is the model named in the URL only when it is one the
service has loaded (`model_label`); any other name, or no model, is `none`, so a client cannot mint series.
The reject rate is `rate(oegate_predictions_total{outcome="rejected"}[5m]) / rate(oegate_predictions_total[5m])`;
the rate each served version's card expects is `1 - oegate_model_acceptance_target` (the alert rules compare the
two). Score histograms carry `version`, so two versions' distributions do not blend during a hot swap. The
process, platform and garbage-collector collectors (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
`process_open_fds`, `python_gc_*`, ...) are registered on the same registry.
With `OEGATE_WORKERS=N` (N > 1) each worker process runs in prometheus-client's multiprocess mode and `/metrics`
exposes every worker's metrics merged (service/multiprocess_metrics.py): counters and histograms summed, each gauge
combined by its `multiprocess_mode` (which one process ignores).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from service.multiprocess_metrics import RETIRED, scrape_registry

ANOMALY_SCORE_BUCKETS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)
"""anomaly_score = 1 / (1 + KL[U||p]) lies in (0, 1]. Confident in-distribution inputs score ~0.01-0.2 and OE
thresholds usually sit at ~0.05-0.3, so the buckets are dense there; 0.5-1.0 (near-flat posteriors, clear
anomalies) needs little resolution. 1.0 is the maximum, so le="1.0" equals +Inf."""
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""confidence is the 0-1 rescaled max probability: 0 for a flat posterior, 1 for certainty."""
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
QUEUE_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""A request alone on an idle model waits ~0.1 ms (a task switch); under load it waits for the runs before it."""
NO_MODEL = "none"
"""The `model` label of requests that name no loaded model (unknown names, /metrics, health, bodies too large)."""
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> Path | None:
    """prometheus-client's own `PROMETHEUS_MULTIPROC_DIR` (not an oegate setting): set by service/workers.py for
    its worker processes, and read by prometheus-client when it is imported; None in one-process mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) if directory else None


class Metrics:
    """Every metric the service exports, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        directory = multiprocess_dir()
        self.multiprocess = directory is not None
        if directory is None:
            # The standard process metrics, on this registry rather than the global default one.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.exposed = registry if directory is None else scrape_registry(directory)
        """The registry `/metrics` exposes: this one, or every worker's metrics merged in multiprocess mode."""
        self.predictions = Counter(
            "oegate_predictions_total",
            "Predicted instances, by whether the gate accepted or rejected them.",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.anomaly_score = Histogram(
            "oegate_anomaly_score",
            "anomaly_score = 1 / (1 + KL[U||p]) of each predicted instance; higher is more anomalous.",
            ["model", "version"],
            buckets=ANOMALY_SCORE_BUCKETS,
            registry=registry,
        )
        self.confidence = Histogram(
            "oegate_confidence",
            "0-1 rescaled, temperature-scaled confidence of each predicted instance.",
            ["model", "version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "oegate_request_duration_seconds",
            "HTTP request latency, by route template, status class and model (a loaded model's name, else none).",
            ["route", "status_class", "model"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "oegate_inference_batch_size",
            "Instances per onnxruntime session run (micro-batch size).",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "oegate_inference_duration_seconds",
            "Time of one onnxruntime session run on a micro-batch.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "oegate_queue_wait_seconds",
            "Time from a request's arrival in the micro-batcher to the start of the session run that takes it.",
            ["model", "version"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "oegate_queue_depth",
            "Instances waiting in the model's micro-batch queue.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.request_errors = Counter(
            "oegate_request_errors_total",
            "Requests answered with an error, by reason and model (a loaded model's name, else none).",
            ["reason", "model"],
            registry=registry,
        )
        self.model_info = Gauge(
            "oegate_model_info",
            "1 for each served model version, labelled with the execution provider actually in use.",
            ["model", "version", "provider"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_threshold = Gauge(
            "oegate_model_threshold",
            "Each served version's reject threshold from its card (reject = anomaly_score >= threshold).",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_acceptance_target = Gauge(
            "oegate_model_acceptance_target",
            "Share of in-distribution inputs each served version's threshold was fitted to accept (card); "
            "1 - this is the reject rate to expect on in-distribution traffic.",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_load_failures = Counter(
            "oegate_model_load_failures_total",
            "Model versions that failed validation or loading (each distinct failure counted once).",
            ["model"],
            registry=registry,
        )
        self.model_unloads = Counter(
            "oegate_model_unloads_total",
            "Served versions taken out of service without a newer one replacing them (reason: removed, the "
            "version directory is gone; pinned, an operator pinned or unpinned another version).",
            ["model", "reason"],
            registry=registry,
        )
        self.requests_in_flight = Gauge(
            "oegate_requests_in_flight",
            "Predict/infer requests being served (admitted and not finished); at max_requests_in_flight new "
            "ones get 503 (reason overloaded).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.request_bytes_in_flight = Gauge(
            "oegate_requests_in_flight_bytes",
            "Cost (declared body bytes) of the predict/infer requests in flight; at max_request_bytes_in_flight "
            "new ones get 503.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.admissions = Counter(
            "oegate_admissions_total",
            "Predict/infer requests admitted or refused (503) by the in-flight bound, by lane (light: a body of at "
            "most light_request_bytes; heavy: any other).",
            ["lane", "outcome"],
            registry=registry,
        )
        self.captures = Counter(
            "oegate_captures_total",
            "Instances stored by capture (service/capture.py), by model and sampling kind (rejected: the gate "
            "rejected it; band: accepted within capture_band of the threshold; control: accepted below the band).",
            ["model", "kind"],
            registry=registry,
        )
        self.capture_dropped = Counter(
            "oegate_capture_dropped_total",
            "Sampled instances capture did not store: queue_full (the writer's queue was full), too_large (one "
            "input above capture_max_bytes), store_error (writing failed), shutdown (sampled while stopping).",
            ["reason"],
            registry=registry,
        )
        self.capture_store_bytes = Gauge(
            "oegate_capture_store_bytes",
            "Bytes of captured input files in the capture store (its index not counted); 0 while capture is off.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._loaded_models: set[str] = set()  # names only grow: bounded by the model directory's names

    def model_unloaded(self, model: str, version: str, provider: str, reason: str) -> None:
        """A version left service with no replacement (or was replaced by an older one): drop its gauges."""
        self.model_unloads.labels(model, reason).inc()
        self._retire(self.model_info, model, version, provider)
        for gauge in (self.model_threshold, self.model_acceptance_target):
            self._retire(gauge, model, version)

    def _retire(self, gauge: Gauge, *labels: str) -> None:
        """Drop a gauge series; in multiprocess mode (no removal there) mark it retired for the scrape to drop."""
        if self.multiprocess:
            gauge.labels(*labels).set(RETIRED)
            return
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)

    def model_label(self, name: object) -> str:
        """`name` if it is a loaded model's name, else `none` (bounded cardinality whatever the URL says)."""
        return name if isinstance(name, str) and name in self._loaded_models else NO_MODEL

    def record_error(self, reason: str, model: object = None) -> None:
        self.request_errors.labels(reason, self.model_label(model)).inc()

    def record_predictions(
        self, model: str, version: str, anomaly_score: np.ndarray, confidence: np.ndarray, reject: np.ndarray
    ) -> None:
        rejected = int(np.count_nonzero(reject))
        self.predictions.labels(model, version, "rejected").inc(rejected)
        self.predictions.labels(model, version, "accepted").inc(int(reject.size) - rejected)
        score_histogram = self.anomaly_score.labels(model, version)
        confidence_histogram = self.confidence.labels(model, version)
        for score, conf in zip(anomaly_score.tolist(), confidence.tolist(), strict=True):
            score_histogram.observe(score)
            confidence_histogram.observe(conf)

    def model_loaded(
        self,
        model: str,
        version: str,
        provider: str,
        replaced: Sequence[tuple[str, str]],
        threshold: float,
        acceptance_target: float | None,
    ) -> None:
        """A version went live: set its info and card gauges, drop the replaced ones, start its counters and
        histograms at zero."""
        for old_version, old_provider in replaced:
            self._retire(self.model_info, model, old_version, old_provider)
            for gauge in (self.model_threshold, self.model_acceptance_target):
                self._retire(gauge, model, old_version)  # a card without an acceptance target never set it
        self.model_info.labels(model, version, provider).set(1)
        self.model_threshold.labels(model, version).set(threshold)
        if acceptance_target is not None:
            self.model_acceptance_target.labels(model, version).set(acceptance_target)
        for outcome in ("accepted", "rejected"):
            self.predictions.labels(model, version, outcome)
        self.queue_depth.labels(model).set(0)
        # Every per-model histogram starts at zero too: rate() needs a first sample before the first prediction,
        # else dashboards show nothing for about one scrape after a version goes live.
        for histogram in (self.queue_wait, self.anomaly_score, self.confidence):
            histogram.labels(model, version)
        for per_model in (self.batch_size, self.inference_duration):
            per_model.labels(model)
        self._loaded_models.add(model)

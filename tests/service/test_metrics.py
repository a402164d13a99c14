from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import clone_artifact

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


async def test_metrics_after_a_known_mix_of_requests(serve, tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "mix"
    clone_artifact(tiny_artifact, models, "lenient", 1, threshold=1.0)  # accepts every instance
    clone_artifact(tiny_artifact, models, "strict", 1, threshold=0.0)  # rejects every instance
    with (clone_artifact(tiny_artifact, models, "broken", 1) / "model.onnx").open("ab") as graph:
        graph.write(b"\0")  # a checksum mismatch: a load failure (a directory without card.json is not one)
    instance = {"array": np.zeros((1, 28, 28)).tolist()}
    async with serve(model_dir=models, max_body_bytes=4096 * 1024) as (_, client):
        served: list[dict[str, float]] = []
        for _ in range(2):
            response = await client.post("/v1/models/lenient/predict", json={"instances": [instance] * 3})
            assert response.status_code == 200
            served += response.json()["predictions"]
        assert (await client.post("/v1/models/strict/predict", json={"instances": [instance] * 2})).status_code == 200
        v2 = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
        assert (await client.post("/v2/models/strict/infer", json=v2)).status_code == 200
        assert (await client.post("/v1/models/nope/predict", json={"instances": [instance]})).status_code == 404
        bad = {"instances": [{"image_b64": "aGVsbG8="}]}
        assert (await client.post("/v1/models/lenient/predict", json=bad)).status_code == 422
        too_big = b"x" * (4096 * 1024 + 1)
        assert (await client.post("/v1/models/lenient/predict", content=too_big)).status_code == 413
        assert (await client.post("/v1/models/broken/predict", json={"instances": [instance]})).status_code == 503
        text = (await client.get("/metrics")).text
    metrics = samples(text)

    def predictions(model: str, outcome: str) -> float | None:
        return value(metrics, "oegate_predictions_total", model=model, version="1", outcome=outcome)

    assert (predictions("lenient", "accepted"), predictions("lenient", "rejected")) == (6.0, 0.0)
    assert (predictions("strict", "accepted"), predictions("strict", "rejected")) == (0.0, 3.0)
    assert value(metrics, "oegate_anomaly_score_count", model="lenient", version="1") == 6.0
    assert value(metrics, "oegate_anomaly_score_bucket", model="lenient", version="1", le="1.0") == 6.0
    assert value(metrics, "oegate_confidence_count", model="strict", version="1") == 3.0
    # Each histogram observes its own quantity: its sum is the sum of what the responses said.
    for histogram, field in (("oegate_anomaly_score_sum", "anomaly_score"), ("oegate_confidence_sum", "confidence")):
        observed = value(metrics, histogram, model="lenient", version="1")
        assert observed == pytest.approx(sum(p[field] for p in served), rel=1e-5), histogram
    # ... and the check can tell the two quantities apart.
    assert served[0]["anomaly_score"] != pytest.approx(served[0]["confidence"], rel=1e-3)
    # Each served version's card figures, for alerts that compare the observed reject rate with the expected one.
    target = json.loads((tiny_artifact / "card.json").read_text())["threshold"]["acceptance_target"]
    assert value(metrics, "oegate_model_threshold", model="lenient", version="1") == 1.0
    assert value(metrics, "oegate_model_threshold", model="strict", version="1") == 0.0
    assert value(metrics, "oegate_model_acceptance_target", model="strict", version="1") == target
    assert value(metrics, "oegate_model_threshold", model="broken", version="1") is None
    # The process collectors live on the app's registry too.
    assert value(metrics, "process_resident_memory_bytes") > 10e6
    assert value(metrics, "process_open_fds") > 0
    assert any(name == "python_gc_collections_total" for name, _ in metrics)
    assert any(name == "python_info" for name, _ in metrics)
    assert value(metrics, "oegate_inference_batch_size_count", model="lenient") == 2.0
    assert value(metrics, "oegate_inference_batch_size_sum", model="lenient") == 6.0
    assert value(metrics, "oegate_inference_batch_size_sum", model="strict") == 3.0
    assert value(metrics, "oegate_queue_depth", model="lenient") == 0.0
    # The model label names a loaded model, else "none": unknown (nope), unloadable (broken), or no model at all.
    errors = {(reason, model): value(metrics, "oegate_request_errors_total", reason=reason, model=model)
              for reason in ("not_found", "invalid_input", "payload_too_large", "model_not_ready", "overloaded")
              for model in ("none", "lenient")}  # fmt: skip
    assert errors == {
        ("not_found", "none"): 1.0,
        ("not_found", "lenient"): None,
        ("invalid_input", "none"): None,
        ("invalid_input", "lenient"): 1.0,
        ("payload_too_large", "none"): 1.0,  # refused from Content-Length, before routing
        ("payload_too_large", "lenient"): None,
        ("model_not_ready", "none"): 1.0,
        ("model_not_ready", "lenient"): None,
        ("overloaded", "none"): None,
        ("overloaded", "lenient"): None,
    }
    request_series = [labels for name, labels in metrics if name.startswith(("oegate_request_", "oegate_queue_wait"))]
    assert {dict(labels)["model"] for labels in request_series} == {"none", "lenient", "strict"}
    duration = "oegate_request_duration_seconds_count"
    predict = "/v1/models/{name}/predict"
    assert value(metrics, duration, route=predict, status_class="2xx", model="lenient") == 2.0
    assert value(metrics, duration, route=predict, status_class="2xx", model="strict") == 1.0
    assert value(metrics, duration, route=predict, status_class="4xx", model="lenient") == 1.0
    assert value(metrics, duration, route=predict, status_class="4xx", model="none") == 1.0
    assert value(metrics, duration, route=predict, status_class="5xx", model="none") == 1.0
    assert value(metrics, duration, route="/v2/models/{name}/infer", status_class="2xx", model="strict") == 1.0
    assert value(metrics, duration, route="unmatched", status_class="4xx", model="none") == 1.0  # 413 before routing
    # One queue wait per request that reached a batcher (each fits one batch here); none for the refused ones.
    assert value(metrics, "oegate_queue_wait_seconds_count", model="lenient", version="1") == 2.0
    assert value(metrics, "oegate_queue_wait_seconds_count", model="strict", version="1") == 2.0
    assert value(metrics, "oegate_queue_wait_seconds_bucket", model="strict", version="1", le="+Inf") == 2.0
    assert 0 < value(metrics, "oegate_queue_wait_seconds_sum", model="strict", version="1") < 1.0
    provider = "CPUExecutionProvider"
    assert value(metrics, "oegate_model_info", model="lenient", version="1", provider=provider) == 1.0
    assert value(metrics, "oegate_model_info", model="strict", version="1", provider=provider) == 1.0
    assert value(metrics, "oegate_model_load_failures_total", model="broken") == 1.0
    assert value(metrics, "oegate_model_load_failures_total", model="lenient") is None
    assert {name for name, _ in metrics if name.startswith("oegate_")} >= {
        "oegate_predictions_total",
        "oegate_anomaly_score_bucket",
        "oegate_confidence_bucket",
        "oegate_request_duration_seconds_bucket",
        "oegate_inference_batch_size_bucket",
        "oegate_inference_duration_seconds_bucket",
        "oegate_queue_depth",
        "oegate_queue_wait_seconds_bucket",
        "oegate_request_errors_total",
        "oegate_model_info",
        "oegate_model_load_failures_total",
    }


async def test_each_app_has_its_own_registry(serve) -> None:
    instance = {"array": np.zeros((1, 28, 28)).tolist()}
    async with serve() as (_, client):
        await client.post("/v1/models/tiny/predict", json={"instances": [instance]})
    async with serve() as (_, client):
        metrics = samples((await client.get("/metrics")).text)
    rejected = value(metrics, "oegate_predictions_total", model="tiny", version="1", outcome="rejected")
    accepted = value(metrics, "oegate_predictions_total", model="tiny", version="1", outcome="accepted")
    assert (accepted, rejected) == (0.0, 0.0)


def test_a_replaced_version_drops_its_card_gauges() -> None:
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    metrics.model_loaded("m", "1", "CPU", [], threshold=0.2, acceptance_target=0.95)
    metrics.model_loaded("m", "2", "CPU", [("1", "CPU")], threshold=0.3, acceptance_target=None)
    exposed = samples(generate_latest(metrics.registry).decode())
    assert value(exposed, "oegate_model_threshold", model="m", version="1") is None
    assert value(exposed, "oegate_model_acceptance_target", model="m", version="1") is None
    assert value(exposed, "oegate_model_threshold", model="m", version="2") == 0.3
    assert value(exposed, "oegate_model_acceptance_target", model="m", version="2") is None  # card had none
    assert value(exposed, "oegate_model_info", model="m", version="2", provider="CPU") == 1.0


def test_a_loaded_version_exports_its_histograms_at_zero_before_any_prediction() -> None:
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    metrics.model_loaded("m", "3", "CPU", [], threshold=0.2, acceptance_target=0.95)
    exposed = samples(generate_latest(metrics.registry).decode())
    for name in ("oegate_anomaly_score", "oegate_confidence", "oegate_queue_wait_seconds"):
        assert value(exposed, f"{name}_count", model="m", version="3") == 0.0, name
    for name in ("oegate_inference_batch_size", "oegate_inference_duration_seconds"):
        assert value(exposed, f"{name}_count", model="m") == 0.0, name

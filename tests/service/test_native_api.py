from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.card import OUTPUT_NAMES
from tests.service.conftest import b64, clone_artifact, digit_like, png_bytes

pytestmark = pytest.mark.anyio

PREDICTION_FIELDS = {"label", "label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "top_k"}


def run_graph(version_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"input": images}), strict=True))


def pixels_to_input(*images: np.ndarray) -> np.ndarray:
    return np.stack([image[np.newaxis].astype(np.float32) / np.float32(255) for image in images])


async def test_predictions_are_the_graphs_outputs_plus_the_threshold(serve, model_dir: Path) -> None:
    images = [digit_like(0), digit_like(1)]
    async with serve() as (_, client):
        response = await client.post(
            "/v1/models/tiny/predict", json={"instances": [{"image_b64": b64(png_bytes(i))} for i in images]}
        )
    assert response.status_code == 200
    body = response.json()
    card = json.loads((model_dir / "tiny" / "1" / "card.json").read_text())
    assert (body["model"], body["version"]) == ("tiny", "1")
    assert body["threshold"] == card["threshold"]["value"]
    expected = run_graph(model_dir / "tiny" / "1", pixels_to_input(*images))
    for i, prediction in enumerate(body["predictions"]):
        assert set(prediction) == PREDICTION_FIELDS
        label_index = int(np.argmax(expected["probs"][i]))
        assert prediction["label_index"] == label_index
        assert prediction["label"] == str(label_index)
        assert prediction["confidence"] == pytest.approx(float(expected["confidence"][i]), abs=1e-6)
        assert prediction["anomaly_score"] == pytest.approx(float(expected["anomaly_score"][i]), abs=1e-6)
        assert prediction["kl_uniform"] == pytest.approx(float(expected["kl_uniform"][i]), abs=1e-6)
        assert prediction["reject"] is bool(expected["anomaly_score"][i] >= np.float32(body["threshold"]))
        order = np.argsort(-expected["probs"][i], kind="stable")[:3]
        assert [t["label"] for t in prediction["top_k"]] == [str(j) for j in order]
        assert [t["probability"] for t in prediction["top_k"]] == pytest.approx(
            expected["probs"][i][order].tolist(), abs=1e-6
        )


async def test_image_array_and_multipart_inputs_give_identical_numbers(serve) -> None:
    image = digit_like(3)
    array = (image.astype(np.float32) / np.float32(255))[np.newaxis].tolist()
    async with serve() as (_, client):
        as_png = await client.post(
            "/v1/models/tiny/predict", json={"instances": [{"image_b64": b64(png_bytes(image))}]}
        )
        as_array = await client.post("/v1/models/tiny/predict", json={"instances": [{"array": array}]})
        as_file = await client.post(
            "/v1/models/tiny/predict", files=[("image", ("digit.png", png_bytes(image), "image/png"))]
        )
    assert as_png.status_code == as_array.status_code == as_file.status_code == 200
    assert as_png.json() == as_array.json() == as_file.json()


async def test_multipart_takes_several_files_and_options(serve) -> None:
    files = [("image", (f"{i}.png", png_bytes(digit_like(i)), "image/png")) for i in range(3)]
    async with serve(allow_threshold_override=True) as (_, client):
        response = await client.post("/v1/models/tiny/predict", files=files, data={"top_k": "2", "threshold": "0"})
    assert response.status_code == 200
    body = response.json()
    assert body["threshold"] == 0.0
    assert [len(p["top_k"]) for p in body["predictions"]] == [2, 2, 2]
    assert [p["reject"] for p in body["predictions"]] == [True, True, True]


async def test_top_k_is_capped_at_the_number_of_classes(serve) -> None:
    array = np.zeros((1, 28, 28)).tolist()
    async with serve() as (_, client):
        response = await client.post("/v1/models/tiny/predict", json={"instances": [{"array": array}], "top_k": 50})
    top = response.json()["predictions"][0]["top_k"]
    assert len(top) == 10
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)


async def test_the_card_threshold_decides_reject(serve, tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "thresholds"
    clone_artifact(tiny_artifact, models, "lenient", 1, threshold=1.0)
    clone_artifact(tiny_artifact, models, "strict", 1, threshold=0.0)
    instances = [{"array": np.full((1, 28, 28), v).tolist()} for v in (0.0, 0.5, 1.0)]
    async with serve(model_dir=models) as (_, client):
        lenient = (await client.post("/v1/models/lenient/predict", json={"instances": instances})).json()
        strict = (await client.post("/v1/models/strict/predict", json={"instances": instances})).json()
    assert (lenient["threshold"], strict["threshold"]) == (1.0, 0.0)
    assert [p["reject"] for p in lenient["predictions"]] == [False, False, False]
    assert [p["reject"] for p in strict["predictions"]] == [True, True, True]
    assert [p["anomaly_score"] for p in lenient["predictions"]] == [p["anomaly_score"] for p in strict["predictions"]]


async def test_a_threshold_override_applies_when_allowed(serve) -> None:
    body = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}], "threshold": 1.0}
    async with serve(allow_threshold_override=True) as (_, client):
        response = await client.post("/v1/models/tiny/predict", json=body)
    assert response.json()["threshold"] == 1.0
    assert response.json()["predictions"][0]["reject"] is False


async def test_the_version_route_serves_the_loaded_version(serve) -> None:
    body = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
    async with serve() as (_, client):
        latest = await client.post("/v1/models/tiny/predict", json=body)
        pinned = await client.post("/v1/models/tiny/versions/1/predict", json=body)
    assert pinned.status_code == 200
    assert pinned.json() == latest.json()


async def test_models_are_listed_with_provider_and_card_summary(serve, model_dir: Path) -> None:
    async with serve() as (_, client):
        listing = await client.get("/v1/models")
        single = await client.get("/v1/models/tiny")
    assert listing.status_code == single.status_code == 200
    (model,) = listing.json()["models"]
    assert model == single.json()
    assert model["name"] == "tiny" and model["version"] == "1" and model["task"] == "image"
    assert model["labels"] == [str(i) for i in range(10)]
    assert model["provider"] == "CPUExecutionProvider"
    assert model["temperature"] == 1.7
    assert model["acceptance_target"] == 0.95
    assert model["input"] == {"name": "input", "shape": [1, 28, 28], "value_range": [0.0, 1.0]}
    assert set(model) == {
        "name", "version", "task", "labels", "threshold", "acceptance_target", "temperature", "provider",
        "input", "evaluation", "created_at",
    }  # fmt: skip


async def test_request_ids_are_echoed_or_made_up(serve) -> None:
    async with serve() as (_, client):
        given = await client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
        made = await client.get("/v2/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32


async def test_health_endpoints(serve, tmp_path: Path, tiny_artifact: Path) -> None:
    async with serve() as (_, client):
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
    async with serve(required_models=["tiny", "missing"]) as (_, client):
        not_ready = await client.get("/v2/health/ready")
        assert (not_ready.status_code, not_ready.json()) == (503, {"ready": False})
        assert (await client.get("/v2/health/live")).status_code == 200


async def test_openapi_documents_both_request_encodings(serve) -> None:
    async with serve() as (_, client):
        schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {
        "application/json",
        "multipart/form-data",
        "image/png",
        "image/jpeg",
        "application/octet-stream",
    }
    assert body["image/png"]["schema"] == {"type": "string", "format": "binary"}
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    components = schema["components"]["schemas"]
    instance_refs = components["PredictRequest"]["properties"]["instances"]["items"]["oneOf"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in instance_refs] == [
        "ImageInstance",
        "ArrayInstance",
        "TextInstance",
    ]
    assert {"ImageInstance", "ArrayInstance", "TextInstance", "PredictResponse", "InferenceRequest"} <= set(components)
    assert set(components["Prediction"]["properties"]) == PREDICTION_FIELDS

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.conftest import b64, digit_like, png_bytes

pytestmark = pytest.mark.anyio

OUTPUTS = ["label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs"]


def fp32_input(images: np.ndarray, nested: bool = False) -> dict[str, Any]:
    data = images.tolist() if nested else images.ravel().tolist()
    return {"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": data}


def as_input(*images: np.ndarray) -> np.ndarray:
    return np.stack([image[np.newaxis].astype(np.float32) / np.float32(255) for image in images])


async def test_server_and_model_metadata(serve) -> None:
    async with serve() as (_, client):
        server = await client.get("/v2")
        model = await client.get("/v2/models/tiny")
        pinned = await client.get("/v2/models/tiny/versions/1")
        ready = await client.get("/v2/models/tiny/ready")
        pinned_ready = await client.get("/v2/models/tiny/versions/1/ready")
    assert server.json() == {
        "name": "oegate",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification", "model_configuration", "statistics"],
    }
    assert (
        model.json()
        == pinned.json()
        == {
            "name": "tiny",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [-1, 1, 28, 28],
                    "parameters": {  # the same input takes encoded images too (one datatype per input in metadata)
                        "datatypes": ["FP32", "BYTES"],
                        "bytes_shape": [-1],
                        "description": "FP32 [N, 1, 28, 28] in [0, 1], or BYTES [N] (or [N, 1]) of PNG/JPEG images "
                        "(base64 strings in JSON, raw bytes with the binary tensor extension), resized to the "
                        "model's size",
                    },
                }
            ],
            "outputs": [
                {"name": "label_index", "datatype": "INT64", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                {"name": "anomaly_score", "datatype": "FP32", "shape": [-1]},
                {"name": "kl_uniform", "datatype": "FP32", "shape": [-1]},
                {"name": "reject", "datatype": "BOOL", "shape": [-1]},
                {"name": "probs", "datatype": "FP32", "shape": [-1, 10]},
            ],
        }
    )
    assert ready.json() == pinned_ready.json() == {"name": "tiny", "ready": True}


async def test_infer_matches_the_native_api(serve) -> None:
    images = [digit_like(0), digit_like(5)]
    async with serve() as (_, client):
        v2 = await client.post("/v2/models/tiny/infer", json={"id": "req-7", "inputs": [fp32_input(as_input(*images))]})
        native = await client.post(
            "/v1/models/tiny/predict",
            json={"instances": [{"image_b64": b64(png_bytes(i))} for i in images], "top_k": 10},
        )
    assert v2.status_code == 200
    body = v2.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "1", "req-7")
    assert body["parameters"] == {"threshold": native.json()["threshold"]}
    outputs = {o["name"]: o for o in body["outputs"]}
    assert [o["name"] for o in body["outputs"]] == OUTPUTS
    assert {name: (o["datatype"], o["shape"]) for name, o in outputs.items()} == {
        "label_index": ("INT64", [2]),
        "confidence": ("FP32", [2]),
        "anomaly_score": ("FP32", [2]),
        "kl_uniform": ("FP32", [2]),
        "reject": ("BOOL", [2]),
        "probs": ("FP32", [2, 10]),
    }
    predictions = native.json()["predictions"]
    for name in ("label_index", "confidence", "anomaly_score", "kl_uniform", "reject"):
        assert outputs[name]["data"] == [p[name] for p in predictions]
    assert all(isinstance(value, bool) for value in outputs["reject"]["data"])
    for i, prediction in enumerate(predictions):
        by_label = {t["label"]: t["probability"] for t in prediction["top_k"]}
        assert outputs["probs"]["data"][10 * i : 10 * (i + 1)] == [by_label[str(j)] for j in range(10)]


async def test_nested_data_bytes_and_binary_inputs_give_the_same_outputs(serve) -> None:
    images = [digit_like(2), digit_like(9)]
    batch = as_input(*images)
    encoded = [png_bytes(i) for i in images]
    binary_images = b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    async with serve() as (_, client):
        flat = await client.post("/v2/models/tiny/infer", json={"inputs": [fp32_input(batch)]})
        nested = await client.post("/v2/models/tiny/infer", json={"inputs": [fp32_input(batch, nested=True)]})
        as_bytes = await client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": [b64(e) for e in encoded]}]},
        )
        binary_fp32 = await _post_binary(client, "FP32", [2, 1, 28, 28], batch.astype("<f4").tobytes())
        binary_bytes = await _post_binary(client, "BYTES", [2], binary_images)
    assert flat.status_code == 200
    assert "id" not in flat.json()
    for other in (nested, as_bytes, binary_fp32, binary_bytes):
        assert other.status_code == 200, other.text
        assert other.json() == flat.json()


async def _post_binary(client: httpx.AsyncClient, datatype: str, shape: list[int], payload: bytes) -> httpx.Response:
    """Triton's binary tensor extension, as tritonclient sends it by default."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    ).encode()
    return await client.post(
        "/v2/models/tiny/infer",
        content=header + payload,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )


async def test_requested_outputs_are_returned_in_the_requested_order(serve) -> None:
    request = {"inputs": [fp32_input(as_input(digit_like(1)))], "outputs": [{"name": "reject"}, {"name": "probs"}]}
    async with serve() as (_, client):
        response = await client.post("/v2/models/tiny/versions/1/infer", json=request)
    assert [o["name"] for o in response.json()["outputs"]] == ["reject", "probs"]


async def test_threshold_parameter_overrides_when_allowed(serve) -> None:
    request = {"inputs": [fp32_input(as_input(digit_like(1)))], "parameters": {"threshold": 0.0}}
    async with serve(allow_threshold_override=True) as (_, client):
        response = await client.post("/v2/models/tiny/infer", json=request)
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert response.json()["parameters"] == {"threshold": 0.0}
    assert outputs["reject"] == [True]

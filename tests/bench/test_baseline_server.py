"""The plain FastAPI baseline answers the same fields as oegate, with the model's own numbers."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.baseline_server import create_app
from bench.inputs import JSON_APIS, read_prediction, reference_prediction, request_body
from service.protocol.v2 import OUTPUT_DATATYPES
from service.schemas.native import PredictResponse

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_baseline_answers_like_oegate(tiny_artifact: Path) -> None:
    values = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    expected = reference_prediction(tiny_artifact / "model.onnx", values)
    transport = httpx.ASGITransport(app=create_app(tiny_artifact))
    async with httpx.AsyncClient(transport=transport, base_url="http://baseline.test") as client:
        native = await client.post("/v1/models/tiny/predict", content=request_body("native", values))
        v2 = await client.post("/v2/models/tiny/infer", content=request_body("v2", values))
    assert native.status_code == 200 and v2.status_code == 200
    PredictResponse.model_validate(native.json(), strict=True)  # oegate's own response schema
    assert {output["name"]: output["datatype"] for output in v2.json()["outputs"]} == OUTPUT_DATATYPES
    responses = {"native": native.json(), "v2": v2.json()}
    for api in JSON_APIS:
        got = read_prediction(api, responses[api])
        assert got.label_index == expected.label_index
        assert got.anomaly_score == pytest.approx(expected.anomaly_score, abs=1e-6)

"""The service as a real process: `python -m service` under uvicorn, configured by OEGATE_* variables."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.server import service_process
from tests.service.conftest import clone_artifact
from tests.service.test_metrics import samples, value

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_real_server_batches_concurrent_requests_and_picks_up_new_versions(
    tmp_path: Path, tiny_artifact: Path
) -> None:
    models = tmp_path / "models"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    # Batches of at most 8 that wait up to a second for company: 200 concurrent requests then share runs however
    # slowly a loaded machine delivers them (a 5 ms window could pass between any two), and 200 is 25 full batches.
    env = {
        "OEGATE_MODEL_DIR": str(models),
        "OEGATE_POLL_INTERVAL_S": "0.2",
        "OEGATE_MAX_DELAY_MS": "1000",
        "OEGATE_MAX_BATCH_SIZE": "8",
        # 200 requests at once: above the default in-flight bound (64), which would answer the rest 503.
        "OEGATE_MAX_REQUESTS_IN_FLIGHT": "256",
    }
    body = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
    log = tmp_path / "service.log"
    with service_process(env, log) as url:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/v1/models/tiny/predict", json=body) for _ in range(200)))
            metrics = samples((await client.get("/metrics")).text)
            traced = await client.get("/v1/models", headers={"X-Request-ID": "trace-me-42"})
            clone_artifact(tiny_artifact, models, "tiny", 2)  # goes live by polling, no reload call
            deadline = time.monotonic() + 15
            while (await client.get("/v1/models")).json()["models"][0]["version"] != "2":
                assert time.monotonic() < deadline, "version 2 was not picked up"
                await asyncio.sleep(0.1)
            after = await client.post("/v1/models/tiny/predict", json=body)
    assert [r.status_code for r in responses] == [200] * 200
    runs = value(metrics, "oegate_inference_batch_size_count", model="tiny")
    assert value(metrics, "oegate_inference_batch_size_sum", model="tiny") == 200.0
    assert runs is not None and 25 <= runs < 200
    assert traced.headers["x-request-id"] == "trace-me-42"
    assert after.json()["version"] == "2"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("request_id") == "trace-me-42"]
    assert [(a["logger"], a["route"], a["status"]) for a in access] == [("service.access", "/v1/models", 200)]
    assert any(line["message"] == "model version loaded" and line.get("version") == "2" for line in lines)

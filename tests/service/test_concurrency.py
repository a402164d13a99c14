from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.service.test_metrics import samples, value

pytestmark = pytest.mark.anyio


async def test_200_concurrent_requests_all_succeed_in_shared_batches(serve) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.random((1, 28, 28)).round(3).tolist() for _ in range(200)]
    async with serve(max_batch_size=32, max_delay_ms=5.0) as (_, client):
        responses = await asyncio.gather(
            *(client.post("/v1/models/tiny/predict", json={"instances": [{"array": a}]}) for a in arrays)
        )
        metrics = samples((await client.get("/metrics")).text)
        alone = [await client.post("/v1/models/tiny/predict", json={"instances": [{"array": a}]}) for a in arrays[:3]]
    assert [r.status_code for r in responses] == [200] * 200
    runs = value(metrics, "oegate_inference_batch_size_count", model="tiny")
    assert value(metrics, "oegate_inference_batch_size_sum", model="tiny") == 200.0
    assert runs is not None and runs < 200  # some session runs served several requests
    single = value(metrics, "oegate_inference_batch_size_bucket", model="tiny", le="1.0")
    assert single is not None and single < runs  # i.e. batches larger than 1 were observed
    # Batching does not change anyone's answer: the same inputs alone give the same numbers.
    for batched, solo in zip(responses[:3], alone, strict=True):
        for a, b in zip(batched.json()["predictions"], solo.json()["predictions"], strict=True):
            assert a["label_index"] == b["label_index"] and a["reject"] == b["reject"]
            assert a["anomaly_score"] == pytest.approx(b["anomaly_score"], abs=1e-6)

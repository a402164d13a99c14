from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anyio.to_thread
import numpy as np
import pytest

from tests.service.test_metrics import samples, value
from tests.service.test_native_api import run_graph

pytestmark = pytest.mark.anyio

HANG = 30.0  # seconds: only a broken service gets near this


async def test_200_concurrent_requests_all_succeed_in_shared_batches(
    serve, model_dir: Path, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    """The first run is held until the other 199 requests are queued, so the batches are known exactly: greedy
    batching then takes them 32 at a time (6 x 32 + 7). No timing is involved."""
    started, release = blocked_runtime
    rng = np.random.default_rng(0)
    arrays = [rng.random((1, 28, 28)).round(3) for _ in range(200)]
    async with serve(max_batch_size=32, max_delay_ms=0.0, max_requests_in_flight=256) as (app, client):
        batcher = app.state.components.registry.get("tiny").batcher
        first = asyncio.ensure_future(
            client.post("/v1/models/tiny/predict", json={"instances": [{"array": arrays[0].tolist()}]})
        )
        assert await anyio.to_thread.run_sync(started.wait, HANG)
        rest = [
            asyncio.ensure_future(client.post("/v1/models/tiny/predict", json={"instances": [{"array": a.tolist()}]}))
            for a in arrays[1:]
        ]
        while batcher.depth < 199:  # a counter, not a clock: every request decoded and queued behind the first
            assert not any(r.done() for r in rest)
            await asyncio.sleep(0.001)
        release.set()
        responses = await asyncio.wait_for(asyncio.gather(first, *rest), HANG)
        metrics = samples((await client.get("/metrics")).text)
    assert [r.status_code for r in responses] == [200] * 200
    assert value(metrics, "oegate_inference_batch_size_count", model="tiny") == 8.0  # 1 + 6 x 32 + 7
    assert value(metrics, "oegate_inference_batch_size_sum", model="tiny") == 200.0
    assert value(metrics, "oegate_inference_batch_size_bucket", model="tiny", le="1.0") == 1.0
    # Batching does not change anyone's answer: the graph run directly on the same inputs gives the same numbers.
    alone = run_graph(model_dir / "tiny" / "1", np.stack(arrays[:5]).astype(np.float32))
    for i, response in enumerate(responses[:5]):
        (prediction,) = response.json()["predictions"]
        assert prediction["label_index"] == int(np.argmax(alone["probs"][i]))
        assert prediction["anomaly_score"] == pytest.approx(float(alone["anomaly_score"][i]), abs=1e-6)

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.conftest import clone_artifact
from tests.service.test_metrics import samples, value

pytestmark = pytest.mark.anyio

BODY = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}


async def test_publishing_version_2_under_load_swaps_with_zero_failures(
    serve, model_dir: Path, tiny_artifact: Path
) -> None:
    results: list[tuple[int, str | None]] = []
    stop = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await client.post("/v1/models/tiny/predict", json=BODY)
            results.append((response.status_code, response.json().get("version")))

    async with serve(poll_interval_s=0.05) as (_, client):
        load = [asyncio.ensure_future(client_loop(client)) for _ in range(8)]
        await asyncio.sleep(0.3)
        clone_artifact(tiny_artifact, model_dir, "tiny", 2)  # staged under .tmp-2-*, then renamed: as training does
        deadline = time.monotonic() + 15
        while not any(version == "2" for _, version in results) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        swapped_at = len(results)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*load)
        listing = (await client.get("/v1/models")).json()
        metrics = samples((await client.get("/metrics")).text)
    assert [status for status, _ in results] == [200] * len(results)
    versions = [version for _, version in results]
    assert versions[0] == "1" and set(versions) == {"1", "2"}
    assert set(versions[swapped_at + 8 :]) == {"2"}  # after the swap only in-flight requests finish on version 1
    assert len(versions) - swapped_at > 8
    assert [m["version"] for m in listing["models"]] == ["2"]
    info = "oegate_model_info"
    assert value(metrics, info, model="tiny", version="2", provider="CPUExecutionProvider") == 1.0
    assert value(metrics, info, model="tiny", version="1", provider="CPUExecutionProvider") is None


async def test_an_in_flight_request_finishes_on_the_version_it_started_with(
    serve, model_dir: Path, tiny_artifact: Path, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    started, release = blocked_runtime
    async with serve(admin_token="admin-token-0123456789") as (app, client):
        old = app.state.components.registry.get("tiny")
        in_flight = asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=BODY))
        while not started.is_set():
            await asyncio.sleep(0.005)
        clone_artifact(tiny_artifact, model_dir, "tiny", 2)
        headers = {"Authorization": "Bearer admin-token-0123456789"}
        assert (await client.post("/v1/admin/reload", headers=headers)).json()["models"] == {"tiny": "2"}
        await asyncio.sleep(0.05)
        assert not in_flight.done()
        assert old.batcher.depth == 0 and not old.batcher.closing  # not retired while a request holds it
        release.set()
        finished = await in_flight
        after = await client.post("/v1/models/tiny/predict", json=BODY)
        await asyncio.sleep(0.05)
        assert old.batcher.closing  # retired once its last request left
    assert (finished.status_code, finished.json()["version"]) == (200, "1")
    assert (after.status_code, after.json()["version"]) == (200, "2")

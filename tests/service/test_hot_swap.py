from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anyio.to_thread
import httpx
import numpy as np
import pytest

from tests.service.conftest import clone_artifact
from tests.service.test_metrics import samples, value

pytestmark = pytest.mark.anyio

BODY = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
HANG = 30.0  # seconds: only a broken service gets near this


class Progress:
    """Finished requests as (started after the swap?, status, version); `reach(n)` waits on a condition, not a
    clock, until n have finished."""

    def __init__(self) -> None:
        self.results: list[tuple[bool, int, str | None]] = []
        self.swapped = False
        self._changed = asyncio.Condition()

    async def add(self, started_after_swap: bool, status: int, version: str | None) -> None:
        async with self._changed:
            self.results.append((started_after_swap, status, version))
            self._changed.notify_all()

    async def reach(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.results) >= count), HANG)


async def test_publishing_version_2_under_load_swaps_with_zero_failures(
    serve, model_dir: Path, tiny_artifact: Path
) -> None:
    progress = Progress()
    stop = asyncio.Event()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started_after_swap = progress.swapped
            response = await client.post("/v1/models/tiny/predict", json=BODY)
            await progress.add(started_after_swap, response.status_code, response.json().get("version"))

    async with serve() as (app, client):
        load = [asyncio.ensure_future(client_loop(client)) for _ in range(8)]
        await progress.reach(24)  # the load is running on version 1
        clone_artifact(tiny_artifact, model_dir, "tiny", 2)  # staged under .tmp-2-*, then renamed: as training does
        report = await app.state.components.registry.reload()  # what the poller does, without its clock
        progress.swapped = True
        assert report.loaded == [{"name": "tiny", "version": "2", "provider": "CPUExecutionProvider"}]
        await progress.reach(len(progress.results) + 8 + 24)  # the in-flight ones, then plenty on version 2
        stop.set()
        await asyncio.wait_for(asyncio.gather(*load), HANG)
        listing = (await client.get("/v1/models")).json()
        metrics = samples((await client.get("/metrics")).text)
    assert [status for _, status, _ in progress.results] == [200] * len(progress.results)
    before = [version for after, _, version in progress.results if not after]
    after = [version for after, _, version in progress.results if after]
    assert before[:24] == ["1"] * 24 and set(before) <= {"1", "2"}  # in flight during the swap: either version
    assert len(after) >= 24 and set(after) == {"2"}  # every request that started after the swap is on version 2
    assert [m["version"] for m in listing["models"]] == ["2"]
    info = "oegate_model_info"
    assert value(metrics, info, model="tiny", version="2", provider="CPUExecutionProvider") == 1.0
    assert value(metrics, info, model="tiny", version="1", provider="CPUExecutionProvider") is None


async def settle() -> None:
    """Run every ready task until it blocks (no wall-clock time)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_an_in_flight_request_finishes_on_the_version_it_started_with(
    serve, model_dir: Path, tiny_artifact: Path, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    started, release = blocked_runtime
    async with serve(admin_token="admin-token-0123456789") as (app, client):
        old = app.state.components.registry.get("tiny")
        in_flight = asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=BODY))
        assert await anyio.to_thread.run_sync(started.wait, HANG)
        clone_artifact(tiny_artifact, model_dir, "tiny", 2)
        headers = {"Authorization": "Bearer admin-token-0123456789"}
        assert (await client.post("/v1/admin/reload", headers=headers)).json()["models"] == {"tiny": "2"}
        await settle()
        assert not in_flight.done()
        assert old.batcher.depth == 0 and not old.batcher.closing  # not retired while a request holds it
        release.set()
        finished = await asyncio.wait_for(in_flight, HANG)
        after = await client.post("/v1/models/tiny/predict", json=BODY)
        await settle()
        assert old.batcher.closing  # retired once its last request left
    assert (finished.status_code, finished.json()["version"]) == (200, "1")
    assert (after.status_code, after.json()["version"]) == (200, "2")

"""Bounded work per request and per process: pixel budgets checked from image headers, separate thread limiters
for decoding and inference, and the in-flight bound (503 + Retry-After, readiness not ready while saturated)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import pytest
from PIL import Image, ImageFile
from prometheus_client import CollectorRegistry

from service.protocol import native
from service.settings import Settings
from tests.service.conftest import b64, digit_like, png_bytes

pytestmark = pytest.mark.anyio
HANG = 30.0  # seconds: a bound on waiting for an event that should come at once, never a measurement


def metric(app: Any, name: str, **labels: str) -> float | None:
    collector: CollectorRegistry = app.state.components.metrics.registry
    return collector.get_sample_value(name, labels)


@pytest.fixture(scope="module")
def big_rgba_png() -> bytes:
    """A 4096x4096 RGBA PNG of zeros: about 65 KB compressed, 16.7 million pixels (67 MB) decoded."""
    buffer = io.BytesIO()
    Image.new("RGBA", (4096, 4096)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def pixel_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Records the size of every image whose pixels Pillow decodes (a load with tiles left to decode)."""
    loads: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        if self.tile:
            loads.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    yield loads


async def test_the_decode_amplification_request_is_refused_before_any_pixel_is_decoded(
    serve: Any, big_rgba_png: bytes, pixel_loads: list[tuple[int, int]]
) -> None:
    """The issue's request: 64 copies of a 65 KB 4096^2 RGBA PNG in one multipart body (20 s of CPU and +300 MB
    before). A 28x28 model takes at most max(16 x 784, 1024^2) pixels per image: 422 from the first header."""
    assert len(big_rgba_png) < 100_000
    files = [("image", (f"{i}.png", big_rgba_png, "image/png")) for i in range(64)]
    async with serve() as (app, client):
        response = await client.post("/v1/models/tiny/predict", files=files)
        assert response.status_code == 422
        assert response.json() == {
            "error": "instances[0]: image is 4096x4096 = 16777216 pixels, more than the limit of 1048576"
        }
        assert pixel_loads == []
        assert metric(app, "oegate_request_errors_total", reason="invalid_input", model="tiny") == 1.0


async def test_the_per_image_limit_follows_the_model_input_size(serve: Any, pixel_loads: list[tuple[int, int]]) -> None:
    """factor 2, floor 1: a 28x28 model takes 2 x 784 = 1568 pixels per image; 40x40 (1600) is refused."""
    small, big = png_bytes(digit_like(0)), png_bytes(np.zeros((40, 40), np.uint8))
    async with serve(image_pixels_factor=2.0, image_pixels_floor=1) as (_, client):
        ok = await client.post("/v1/models/tiny/predict", json={"instances": [{"image_b64": b64(small)}]})
        assert ok.status_code == 200
        refused = await client.post("/v1/models/tiny/predict", json={"instances": [{"image_b64": b64(big)}]})
        assert refused.status_code == 422
        assert refused.json() == {"error": "instances[0]: image is 40x40 = 1600 pixels, more than the limit of 1568"}
    assert pixel_loads == [(28, 28)]


async def test_the_per_request_pixel_budget_refuses_the_image_that_passes_it(
    serve: Any, pixel_loads: list[tuple[int, int]]
) -> None:
    image = b64(png_bytes(digit_like(1)))
    async with serve(max_request_pixels=3 * 784) as (_, client):
        three = await client.post("/v1/models/tiny/predict", json={"instances": [{"image_b64": image}] * 3})
        assert three.status_code == 200
        four = await client.post("/v1/models/tiny/predict", json={"instances": [{"image_b64": image}] * 4})
        assert four.status_code == 422
        assert four.json() == {
            "error": "instances[3]: image is 28x28 = 784 pixels, more than the 0 left of the request's limit of "
            "2352 pixels in all"
        }
        # The V2 face shares the budget (BYTES images).
        v2 = await client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [{"name": "input", "datatype": "BYTES", "shape": [4], "data": [image] * 4}]},
        )
        assert v2.status_code == 422
        assert v2.json()["error"].startswith("input 'input' instance 3: image is 28x28 = 784 pixels, more than")
    assert len(pixel_loads) == 3 + 3 + 3  # the fourth image of each refused request was never decoded


async def test_predictions_beyond_the_in_flight_bound_get_503_and_readiness_says_not_ready(
    serve: Any, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    started, release = blocked_runtime
    request = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
    async with serve(max_requests_in_flight=2, retry_after_s=3, light_reserved_share=0.0) as (app, client):
        limits = app.state.components.limits
        held = [asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=request)) for _ in range(2)]
        assert await anyio.to_thread.run_sync(started.wait, HANG)
        while limits.in_flight < 2:  # a counter, not a clock
            await asyncio.sleep(0.01)
        refused = await client.post("/v1/models/tiny/predict", json=request)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        assert refused.json() == {"error": "the server is overloaded (2 requests in flight, limit 2); retry after 3 s"}
        v2 = await client.post("/v2/models/tiny/infer", json={"inputs": []})
        assert (v2.status_code, v2.headers["retry-after"]) == (503, "3")
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        # Health, metadata and metrics are never refused.
        assert (await client.get("/v2/health/live")).status_code == 200
        assert (await client.get("/v1/models/tiny")).status_code == 200
        assert metric(app, "oegate_requests_in_flight") == 2.0
        assert metric(app, "oegate_request_errors_total", reason="overloaded", model="none") == 2.0
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert limits.in_flight == 0
        assert metric(app, "oegate_requests_in_flight") == 0.0
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        assert (await client.post("/v1/models/tiny/predict", json=request)).status_code == 200


async def test_decoding_has_its_own_threads_while_every_inference_thread_is_busy(
    serve: Any, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    """One inference thread, held by a session run: the next requests are still decoded (in the decode
    limiter's threads) and queued, and anyio's default pool is not used by either. (Heavy requests: with
    `light_request_bytes=0` no request is light.)"""
    started, release = blocked_runtime
    request = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]}
    settings = {"inference_concurrency": 1, "decode_concurrency": 1, "max_delay_ms": 0.0, "light_request_bytes": 0}
    async with serve(**settings) as (app, client):
        limits = app.state.components.limits
        batcher = app.state.components.registry.get("tiny").batcher
        first = asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=request))
        assert await anyio.to_thread.run_sync(started.wait, HANG)
        assert (limits.inference.total_tokens, limits.inference.borrowed_tokens) == (1, 1)
        assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0  # the run is not in it
        queued = [asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=request)) for _ in range(3)]
        while batcher.depth < 3:  # decoded through the single decode thread, then queued
            await asyncio.sleep(0.01)
        assert limits.decode.total_tokens == 1
        release.set()
        responses = await asyncio.gather(first, *queued)
        assert [r.status_code for r in responses] == [200] * 4


async def test_a_large_json_body_is_parsed_off_the_event_loop(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse of a body over `large_json_bytes` is held in its worker thread; readiness still answers."""
    entered, release = threading.Event(), threading.Event()
    original = native._parse_json_body

    def held_parse(raw: bytes) -> Any:
        assert threading.current_thread() is not threading.main_thread()
        entered.set()
        release.wait(HANG)
        return original(raw)

    monkeypatch.setattr("service.protocol.native._parse_json_body", held_parse)
    request = {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}] * 8}
    async with serve(large_json_bytes=1024) as (_, client):
        predict = asyncio.ensure_future(client.post("/v1/models/tiny/predict", json=request))
        assert await anyio.to_thread.run_sync(entered.wait, HANG)
        ready = await client.get("/v2/health/ready")  # answered while the parse is held
        assert ready.status_code == 200
        release.set()
        assert (await predict).status_code == 200


def test_settings_keep_the_uvicorn_backstop_above_the_in_flight_bound(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="limit_concurrency \\(64\\) must be > max_requests_in_flight \\(64\\)"):
        Settings(model_dir=model_dir, max_requests_in_flight=64, limit_concurrency=64)

"""Every client mistake gets its status and a `{"error": message}` body naming the problem; never a 500."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import pytest

from service.runtime import Runtime
from tests.service.conftest import b64, clone_artifact, digit_like, png_bytes

pytestmark = pytest.mark.anyio

ZEROS = np.zeros((1, 28, 28)).tolist()
GOOD = {"array": ZEROS}
PREDICT = "/v1/models/tiny/predict"
INFER = "/v2/models/tiny/infer"


def fp32(
    shape: list[int], data: list[Any] | None = None, name: str = "input", datatype: str = "FP32"
) -> dict[str, Any]:
    count = int(np.prod(shape))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data if data is not None else [0.0] * count}


CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (method, path, httpx keyword arguments, status, exact message or prefix ending in "...")
    ("POST", "/v1/models/nope/predict", {"json": {"instances": [GOOD]}}, 404, "model 'nope' not found"),
    (
        "POST",
        "/v1/models/tiny/versions/9/predict",
        {"json": {"instances": [GOOD]}},
        404,
        "model 'tiny' version '9' is not loaded (serving version 1)",
    ),
    ("POST", PREDICT, {"json": {"instances": [GOOD] * 5}}, 422, "too many instances: 5 (limit 4)"),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [GOOD, {"image_b64": b64(b"junk")}]}},
        422,
        "instances[1]: image could not be decoded: not a PNG or JPEG image",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [{"image_b64": "%%%"}]}},
        422,
        "instances[0]: image_b64 is not valid base64 (...",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [GOOD, GOOD, {"array": np.zeros((28, 28)).tolist()}]}},
        422,
        "instances[2]: array has shape [28, 28], expected [1, 28, 28]",
    ),
    (
        "POST",
        PREDICT,
        {
            "content": '{"instances": [{"array": [[' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]]}]}",
            "headers": {"content-type": "application/json"},
        },
        422,
        "instances[0]: array contains NaN or infinite values",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [{"array": np.full((1, 28, 28), 2.0).tolist()}]}},
        422,
        "instances[0]: array values must be in [0, 1], found min 2 and max 2",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [GOOD, {"text": "hello"}]}},
        422,
        "instances mix text (instances[1]) and images (instances[0]); a request holds one kind of instance",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [{"text": "hello"}]}},
        422,
        "instances[0]: model 'tiny' takes images; text instances need a text model",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [{"array": ZEROS, "text": "both"}]}},
        422,
        "instances[0]: each instance needs exactly one of image_b64, array or text",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [{}]}},
        422,
        "instances[0]: each instance needs exactly one of image_b64, array or text",
    ),
    ("POST", PREDICT, {"json": {}}, 422, "instances: Field required"),
    (
        "POST",
        PREDICT,
        {"json": {"instances": []}},
        422,
        "instances: List should have at least 1 item after validation, not 0",
    ),
    ("POST", PREDICT, {"json": {"instances": [GOOD], "extra": 1}}, 422, "extra: Extra inputs are not permitted"),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [GOOD], "top_k": 0}},
        422,
        "top_k: Input should be greater than or equal to 1",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [{"array": "not a list"}]}},
        422,
        "instances[0].array: Input should be a valid array",
    ),
    (
        "POST",
        PREDICT,
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
        "body: Invalid JSON: ...",
    ),
    (
        "POST",
        PREDICT,
        {"json": {"instances": [GOOD], "threshold": 0.5}},
        403,
        "per-request threshold override is disabled on this server",
    ),
    (
        "POST",
        PREDICT,
        {"content": b"instances", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported content type 'text/plain': send application/json, multipart/form-data, or one image as "
        "image/png, image/jpeg, application/octet-stream",
    ),
    (
        "POST",
        PREDICT,
        {"data": {"top_k": "2"}, "files": {}},
        415,
        "unsupported content type 'application/x-www-form-urlencoded': ...",
    ),
    (
        "POST",
        PREDICT,
        {"files": [("image", ("a.png", b"junk", "image/png"))]},
        422,
        "instances[0]: image could not be decoded: not a PNG or JPEG image",
    ),
    (
        "POST",
        PREDICT,
        {"files": [("image", ("a.png", png_bytes(digit_like(0)), "image/png"))], "data": {"top_k": "many"}},
        422,
        "top_k: Input should be a valid integer, unable to parse string as an integer",
    ),
    (
        "POST",
        PREDICT,
        {"files": [("image", ("a.png", png_bytes(digit_like(0)), "image/png"))], "data": {"colour": "red"}},
        422,
        "colour: Extra inputs are not permitted",
    ),
    (
        "POST",
        PREDICT,
        {"files": [("image", (f"{i}.png", png_bytes(digit_like(i)), "image/png")) for i in range(5)]},
        422,
        "too many instances: 5 (limit 4)",
    ),
    (
        "POST",
        PREDICT,
        {
            "content": b'--xyz\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n3\r\n--xyz--\r\n',
            "headers": {"content-type": "multipart/form-data; boundary=xyz"},
        },
        422,
        "multipart/form-data body has no image files",
    ),
    ("GET", "/v1/models/nope", {}, 404, "model 'nope' not found"),
    ("GET", "/no/such/route", {}, 404, "Not Found"),
    ("GET", PREDICT, {}, 405, "Method Not Allowed"),
    ("POST", "/v1/admin/reload", {}, 404, "the admin API is disabled (no admin token is configured)"),
    # Open Inference Protocol
    ("POST", "/v2/models/nope/infer", {"json": {"inputs": [fp32([1, 1, 28, 28])]}}, 404, "model 'nope' not found"),
    ("GET", "/v2/models/nope", {}, 404, "model 'nope' not found"),
    ("GET", "/v2/models/nope/ready", {}, 404, "model 'nope' not found"),
    ("GET", "/v2/models/tiny/versions/2", {}, 404, "model 'tiny' version '2' is not loaded (serving version 1)"),
    ("POST", INFER, {"json": {}}, 422, "inputs: Field required"),
    (
        "POST",
        INFER,
        {"json": {"inputs": [fp32([1, 1, 28, 28], name="pixels")]}},
        422,
        "model 'tiny' takes one input named 'input' (FP32 [N, 1, 28, 28] or BYTES [N]), got inputs ['pixels']",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [fp32([1, 1, 28, 28], datatype="INT32")]}},
        422,
        "input 'input': datatype INT32 is not supported; use FP32 or BYTES",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [fp32([1, 1, 28, 27])]}},
        422,
        "input 'input': shape [1, 1, 28, 27] must be [N, 1, 28, 28]",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [fp32([1, 1, 28, 28], data=[0.0] * 10)]}},
        422,
        "input 'input': shape [1, 1, 28, 28] needs 784 values, data has 10",
    ),
    ("POST", INFER, {"json": {"inputs": [fp32([5, 1, 28, 28])]}}, 422, "too many instances: 5 (limit 4)"),
    (
        "POST",
        INFER,
        {"json": {"inputs": [fp32([2, 1, 28, 28], data=[0.0] * 784 + [-1.0] * 784)]}},
        422,
        "input 'input' instance 1: array values must be in [0, 1], found min -1 and max -1",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [fp32([1, 1, 28, 28])], "outputs": [{"name": "logits"}]}},
        422,
        "unknown output(s) ['logits']; outputs are "
        "['label_index', 'confidence', 'anomaly_score', 'kl_uniform', 'reject', 'probs']",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [1]}]}},
        422,
        "input 'input': BYTES data in JSON must be base64 strings",
    ),
    (
        "POST",
        INFER,
        {"json": {"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": [b64(b"x")] * 2}]}},
        422,
        "input 'input' instance 0: image could not be decoded: not a PNG or JPEG image",
    ),
    (
        "POST",
        INFER,
        {"content": b'{"inputs": []}', "headers": {"inference-header-content-length": "999"}},
        422,
        "Inference-Header-Content-Length 999 does not fit a 14-byte body",
    ),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), CASES)
async def test_client_errors(serve, method: str, path: str, kwargs: dict[str, Any], status: int, message: str) -> None:
    async with serve(max_instances=4, max_text_chars=100) as (_, client):
        response = await client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    if message.endswith("..."):
        assert response.json()["error"].startswith(message[:-3])
    else:
        assert response.json()["error"] == message


async def test_body_over_the_limit_is_refused_from_its_content_length(serve) -> None:
    async with serve(max_body_bytes=1024) as (_, client):
        response = await client.post(PREDICT, content=b"x" * 1025, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()) == (
        413,
        {"error": "request body is larger than the limit of 1024 bytes"},
    )


async def test_streamed_body_over_the_limit_is_refused_while_reading(serve) -> None:
    chunks_sent: list[int] = []  # per request: how many 512-byte chunks the server pulled

    async def chunks(prefix: bytes = b"") -> AsyncIterator[bytes]:
        chunks_sent.append(0)
        yield prefix
        for _ in range(100):
            chunks_sent[-1] += 1
            yield b"x" * 512

    async with serve(max_body_bytes=1024) as (_, client):
        response = await client.post(PREDICT, content=chunks(), headers={"content-type": "application/json"})
        multipart = await client.post(
            PREDICT,
            content=chunks(b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
    assert "content-length" not in response.request.headers  # chunked: only the streamed count can catch it
    assert (response.status_code, response.json()) == (
        413,
        {"error": "request body is larger than the limit of 1024 bytes"},
    )
    assert multipart.status_code == 413
    # Each reader stopped at the chunk that crossed 1024 bytes, not at the end: the third 512-byte chunk for the
    # JSON body (exactly 1024 after two is still allowed), the second after the multipart body's 73-byte prefix.
    assert chunks_sent == [3, 2]


async def test_a_known_model_without_a_loadable_version_is_503(serve, tmp_path: Path, tiny_artifact: Path) -> None:
    models = tmp_path / "broken-models"
    broken = clone_artifact(tiny_artifact, models, "broken", 1)
    (broken / "card.json").unlink()
    async with serve(model_dir=models) as (_, client):
        predict = await client.post("/v1/models/broken/predict", json={"instances": [GOOD]})
        ready = await client.get("/v2/models/broken/ready")
    message = "model 'broken' has no loadable version (see the service logs)"
    assert (predict.status_code, predict.json()) == (503, {"error": message})
    assert (ready.status_code, ready.json()) == (503, {"name": "broken", "ready": False})


async def test_overload_is_503_with_retry_after(
    serve, blocked_runtime: tuple[threading.Event, threading.Event]
) -> None:
    started, release = blocked_runtime
    one, two = {"instances": [GOOD]}, {"instances": [GOOD, GOOD]}
    async with serve(max_batch_size=1, max_queue_size=2, max_instances=2, retry_after_s=3) as (app, client):
        batcher = app.state.components.registry.get("tiny").batcher
        running = asyncio.ensure_future(client.post(PREDICT, json=one))
        assert await anyio.to_thread.run_sync(started.wait, 30)
        queued = asyncio.ensure_future(client.post(PREDICT, json=two))  # fills the queue (2 instances)
        while batcher.depth < 2:  # a counter, not a clock: decoded (in a thread) and queued
            assert not queued.done()
            await asyncio.sleep(0.001)
        refused = await client.post(PREDICT, json=one)
        release.set()
        assert [r.status_code for r in await asyncio.gather(running, queued)] == [200, 200]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "3"
    assert refused.json() == {"error": "model tiny/1 is overloaded (2 instances queued, limit 2); retry after 3 s"}


async def test_inference_token_guards_models_and_inference_but_not_health(serve) -> None:
    token = "inference-token-0123456789"
    async with serve(inference_token=token) as (_, client):
        missing = await client.post(PREDICT, json={"instances": [GOOD]})
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer not-the-token"})
        basic = await client.get("/v2/models/tiny", headers={"Authorization": f"Basic {token}"})
        good = await client.post(PREDICT, json={"instances": [GOOD]}, headers={"Authorization": f"Bearer {token}"})
        v2 = await client.get("/v2/models/tiny", headers={"Authorization": f"Bearer {token}"})
        open_paths = [await client.get(path) for path in ("/v2/health/live", "/v2/health/ready", "/metrics", "/v2")]
    assert (missing.status_code, missing.json()) == (
        401,
        {"error": "this endpoint requires an 'Authorization: Bearer <token>' header"},
    )
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid bearer token for this endpoint"})
    assert basic.status_code == 401
    assert (good.status_code, v2.status_code) == (200, 200)
    assert [r.status_code for r in open_paths] == [200, 200, 200, 200]


async def test_admin_reload_needs_its_own_token(serve, model_dir: Path, tiny_artifact: Path) -> None:
    admin, inference = "admin-token-0123456789", "inference-token-0123456789"
    async with serve(admin_token=admin, inference_token=inference) as (_, client):
        with_inference_token = await client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {inference}"})
        clone_artifact(tiny_artifact, model_dir, "tiny", 2)
        reloaded = await client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {admin}"})
    assert (with_inference_token.status_code, with_inference_token.json()) == (
        401,
        {"error": "invalid bearer token for the admin API"},
    )
    assert reloaded.status_code == 200
    assert reloaded.json() == {
        "loaded": [{"name": "tiny", "version": "2", "provider": "CPUExecutionProvider"}],
        "failed": [],
        "models": {"tiny": "2"},
        "pins": {},
    }


async def test_server_side_failures_are_500_in_the_same_shape(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_run(self: Runtime, images: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(Runtime, "run", broken_run)
    async with serve(raise_app_exceptions=False) as (app, client):
        failed = await client.post(PREDICT, json={"instances": [GOOD]})

        async def crash(*args: object, **kwargs: object) -> None:
            raise KeyError("a bug")

        monkeypatch.setattr(app.state.components.predictor, "predict", crash)
        crashed = await client.post(PREDICT, json={"instances": [GOOD]})
        metrics = (await client.get("/metrics")).text
    assert (failed.status_code, failed.json()) == (
        500,
        {"error": "model tiny/1: inference failed: CUDA error: an illegal memory access"},
    )
    assert (crashed.status_code, crashed.json()) == (500, {"error": "internal server error"})
    assert 'oegate_request_errors_total{model="tiny",reason="inference_failed"} 1.0' in metrics
    assert 'oegate_request_errors_total{model="tiny",reason="internal"} 1.0' in metrics

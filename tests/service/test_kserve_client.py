"""KServe's Python SDK (`kserve.InferenceRESTClient`, protocol v2) as a real client of a real server: readiness,
FP32 and BYTES (base64 PNG) images, texts, and errors arrive decoded as a KServe user gets them.

KServe pins its own fastapi, grpcio, pandas and kubernetes, so it lives in a venv of its own (`make
kserve-client`, `.venv-kserve`); the client runs there as a subprocess (`kserve_client_checks.py`) against uvicorn
serving this process's app in a thread, and the expected values come from the same server over plain HTTP.
`make pytest` sets OEGATE_KSERVE_PYTHON, so there a missing venv fails the test instead of skipping it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import create_app
from tests.e2e.server import REPO, app_in_thread
from tests.service.conftest import clone_artifact, digit_like, make_settings, png_bytes

CHECKS = Path(__file__).with_name("kserve_client_checks.py")
TEXTS = ["the market rallied after the earnings report", "the team won the final in extra time", "héllo ✓"]


def kserve_python() -> Path:
    configured = os.environ.get("OEGATE_KSERVE_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-kserve" / "bin" / "python"
    if not path.exists():
        if configured:
            pytest.fail(f"OEGATE_KSERVE_PYTHON={configured} does not exist: run `make kserve-client`")
        pytest.skip("needs the KServe client venv (`make kserve-client`)")
    return path


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, text_artifact: Path) -> Iterator[str]:
    models = tmp_path_factory.mktemp("kserve-models")
    clone_artifact(tiny_artifact, models, "tiny", 1)
    clone_artifact(text_artifact, models, "words", 1)
    with app_in_thread(create_app(make_settings(models, max_batch_size=8))) as url:
        yield f"http://{url}"


@pytest.fixture(scope="module")
def observed(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = kserve_python()
    images = np.stack([digit_like(seed) for seed in range(3)])[:, None].astype(np.float32) / np.float32(255)
    spec = {
        "images": images.tolist(),
        "pngs_base64": [base64.b64encode(png_bytes(digit_like(seed))).decode() for seed in range(2)],
        "texts": TEXTS,
    }
    request_file = tmp_path_factory.mktemp("kserve") / "request.json"
    request_file.write_text(json.dumps(spec))
    done = subprocess.run(
        [str(python), str(CHECKS), server_url, str(request_file)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def v2_outputs(server_url: str, model: str, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The server's own answer over plain HTTP, as arrays."""
    reply = httpx.post(f"{server_url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30)
    assert reply.status_code == 200, reply.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in reply.json()["outputs"]}


def as_array(output: dict[str, Any]) -> np.ndarray:
    return np.asarray(output["data"], dtype=output["dtype"]).reshape(output["shape"])


def test_readiness(observed: dict[str, Any]) -> None:
    assert observed["server_live"] is True and observed["server_ready"] is True
    assert observed["tiny_ready"] is True and observed["words_ready"] is True
    assert observed["nope_ready"] is False  # a model the server does not have is not ready


def test_fp32_images_decode_to_the_servers_outputs(observed: dict[str, Any], server_url: str) -> None:
    images = np.stack([digit_like(seed) for seed in range(3)])[:, None].astype(np.float32) / np.float32(255)
    tensor = {"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}
    expected = v2_outputs(server_url, "tiny", [tensor])
    got = observed["fp32"]
    assert observed["fp32_id"] == "kserve-1"  # the request id comes back
    assert (got["probs"]["dtype"], got["probs"]["shape"]) == ("float32", [3, 10])
    assert got["label_index"]["dtype"] == "int64" and got["reject"]["dtype"] == "bool"
    for name, values in expected.items():
        np.testing.assert_allclose(as_array(got[name]).astype(np.float64), values.astype(np.float64), atol=1e-6)
    probs = as_array(got["probs"])
    np.testing.assert_array_equal(as_array(got["label_index"]), probs.argmax(axis=1))


def test_base64_png_bytes_match_fp32(observed: dict[str, Any]) -> None:
    for name in ("probs", "anomaly_score", "confidence"):
        np.testing.assert_allclose(as_array(observed["png"][name]), as_array(observed["fp32"][name])[:2], atol=1e-5)


def test_texts(observed: dict[str, Any], server_url: str) -> None:
    expected = v2_outputs(server_url, "words", [{"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS}])
    got = observed["texts"]
    assert got["probs"]["shape"] == [3, 3]
    for name, values in expected.items():
        np.testing.assert_allclose(as_array(got[name]).astype(np.float64), values.astype(np.float64), atol=1e-6)


def test_errors_arrive_with_status_and_a_message_naming_the_problem(observed: dict[str, Any]) -> None:
    assert observed["error_shape"]["status"] == 422
    assert "shape [1, 1, 27, 28] must be [N, 1, 28, 28]" in observed["error_shape"]["body"]["error"]
    assert observed["error_model"]["status"] == 404
    assert "model 'nope' not found" in observed["error_model"]["body"]["error"]
    assert observed["error_input"]["status"] == 422
    assert "takes one input named 'text'" in observed["error_input"]["body"]["error"]

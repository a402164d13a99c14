"""NVIDIA's `tritonclient[http]` as a real client of a real server: the claims of the Open Inference Protocol face
(metadata, readiness, model configuration, statistics, FP32 and BYTES inputs in JSON and binary, texts,
classification, compressed requests, errors), checked the way Triton users will meet them.

The server is uvicorn on a free port in a thread of this process, over one model directory per module: `tiny` (the
random-weight image artifact), `words` (the tiny text artifact) and `counted` (a copy of `tiny` that only the
statistics test sends to, so its counts are exact whatever ran before).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.app import create_app
from tests.e2e.server import app_in_thread
from tests.service.conftest import clone_artifact, digit_like, make_settings, png_bytes
from tests.text_artifacts import LABELS as TEXT_LABELS

httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402  (after the import check above)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path, text_artifact: Path) -> Iterator[str]:
    models = tmp_path_factory.mktemp("triton-models")
    clone_artifact(tiny_artifact, models, "tiny", 1)
    clone_artifact(tiny_artifact, models, "counted", 1)
    clone_artifact(text_artifact, models, "words", 1)
    with app_in_thread(create_app(make_settings(models, max_batch_size=8))) as url:
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[Any]:
    triton = httpclient.InferenceServerClient(url=server_url, network_timeout=30.0)
    yield triton
    triton.close()


def card(artifact: Path) -> dict[str, Any]:
    return dict(json.loads((artifact / "card.json").read_text()))


def images(count: int) -> np.ndarray:
    """`count` deterministic digit-like images as float32 [N, 1, 28, 28] in [0, 1] (exactly what PNG decodes to)."""
    return np.stack([digit_like(seed) for seed in range(count)])[:, None].astype(np.float32) / np.float32(255)


def fp32_input(batch: np.ndarray, binary: bool) -> Any:
    tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def outputs_of(result: Any) -> dict[str, np.ndarray]:
    names = ("label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs")
    return {name: result.as_numpy(name) for name in names}


def test_server_and_model_metadata_and_readiness(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1") and client.is_model_ready("words")
    assert not client.is_model_ready("tiny", "2") and not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "oegate"
    assert server["extensions"] == ["binary_tensor_data", "classification", "model_configuration", "statistics"]
    image = client.get_model_metadata("tiny")
    assert (image["name"], image["versions"], image["platform"]) == ("tiny", ["1"], "onnxruntime_onnx")
    (image_input,) = image["inputs"]
    assert (image_input["name"], image_input["datatype"], image_input["shape"]) == ("input", "FP32", [-1, 1, 28, 28])
    assert image_input["parameters"]["datatypes"] == ["FP32", "BYTES"]  # encoded images go to the same input
    text = client.get_model_metadata("words", "1")
    (text_input,) = text["inputs"]
    assert (text_input["name"], text_input["datatype"], text_input["shape"]) == ("text", "BYTES", [-1])
    assert [o["name"] for o in text["outputs"]] == [o["name"] for o in image["outputs"]]
    assert next(o for o in text["outputs"] if o["name"] == "probs")["shape"] == [-1, len(TEXT_LABELS)]


def test_model_config(client: Any, tiny_artifact: Path) -> None:
    config = client.get_model_config("tiny")
    assert config == client.get_model_config("tiny", "1")
    assert (config["name"], config["platform"], config["max_batch_size"]) == ("tiny", "onnxruntime_onnx", 8)
    assert config["input"][0] | {"format": None} == {
        "name": "input",
        "data_type": "TYPE_FP32",
        "format": None,
        "dims": [1, 28, 28],
    }
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]][-1] == ("probs", "TYPE_FP32", [10])
    expected = card(tiny_artifact)
    assert float(config["parameters"]["threshold"]["string_value"]) == expected["threshold"]["value"]
    assert json.loads(config["parameters"]["labels"]["string_value"]) == expected["labels"]
    text = client.get_model_config("words")
    assert (text["input"][0]["name"], text["input"][0]["data_type"]) == ("text", "TYPE_STRING")


def test_fp32_in_json_and_binary_give_the_same_outputs(client: Any) -> None:
    batch = images(3)
    as_json = outputs_of(client.infer("tiny", [fp32_input(batch, binary=False)], request_id="r-1"))
    as_binary = outputs_of(client.infer("tiny", [fp32_input(batch, binary=True)]))
    pinned = outputs_of(client.infer("tiny", [fp32_input(batch, binary=True)], model_version="1"))
    for name, values in as_json.items():
        np.testing.assert_array_equal(values, as_binary[name])
        np.testing.assert_array_equal(values, pinned[name])
    assert as_json["probs"].shape == (3, 10) and as_json["probs"].dtype == np.float32
    assert as_json["label_index"].dtype == np.int64 and as_json["reject"].dtype == np.bool_
    np.testing.assert_allclose(as_json["probs"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(as_json["label_index"], as_json["probs"].argmax(axis=1))


def test_binary_outputs_equal_json_outputs(client: Any) -> None:
    """tritonclient asks for binary outputs two ways: `binary_data_output` when no outputs are named (its default,
    as in every other test here), `binary_data` per `InferRequestedOutput`; both decode to the JSON values."""
    batch = fp32_input(images(3), binary=True)
    names = ("label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs")
    as_json = client.infer(
        "tiny", [batch], outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in names]
    )
    as_binary = client.infer(
        "tiny", [batch], outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in names]
    )
    by_default = client.infer("tiny", [batch])
    for output in as_json.get_response()["outputs"]:
        assert "data" in output and "parameters" not in output
    for result in (as_binary, by_default):
        sizes = [output["parameters"]["binary_data_size"] for output in result.get_response()["outputs"]]
        assert sizes == [3 * 8, 3 * 4, 3 * 4, 3 * 4, 3 * 1, 3 * 10 * 4]
        for name in names:
            value, expected = result.as_numpy(name), as_json.as_numpy(name)
            assert (value.dtype, value.shape) == (expected.dtype, expected.shape)
            np.testing.assert_array_equal(value, expected)
    assert as_binary.as_numpy("probs").dtype == np.float32 and as_binary.as_numpy("reject").dtype == np.bool_


def test_binary_classification_output(client: Any) -> None:
    batch = fp32_input(images(2), binary=True)
    as_json = client.infer("tiny", [batch], outputs=[httpclient.InferRequestedOutput("probs", False, class_count=4)])
    as_binary = client.infer("tiny", [batch], outputs=[httpclient.InferRequestedOutput("probs", True, class_count=4)])
    expected = as_json.as_numpy("probs")
    assert expected.shape == (2, 4)
    np.testing.assert_array_equal(as_binary.as_numpy("probs"), np.vectorize(str.encode)(expected.astype(str)))


def test_bytes_images_binary_and_base64_json_match_fp32(client: Any) -> None:
    pngs = [png_bytes(digit_like(seed)) for seed in range(2)]
    raw = httpclient.InferInput("input", [2], "BYTES")
    raw.set_data_from_numpy(np.array(pngs, dtype=np.object_), binary_data=True)
    encoded = httpclient.InferInput("input", [2, 1], "BYTES")
    encoded.set_data_from_numpy(
        np.array([[base64.b64encode(p).decode()] for p in pngs], dtype=np.object_), binary_data=False
    )
    from_raw = outputs_of(client.infer("tiny", [raw]))
    from_base64 = outputs_of(client.infer("tiny", [encoded]))
    from_fp32 = outputs_of(client.infer("tiny", [fp32_input(images(2), binary=True)]))
    for name, values in from_raw.items():
        np.testing.assert_array_equal(values, from_base64[name])
        np.testing.assert_allclose(values, from_fp32[name], atol=1e-5)


def test_texts_binary_and_json_for_a_text_model(client: Any) -> None:
    texts = ["the market rallied after the earnings report", "the team won the final in extra time", "héllo ✓"]
    binary = httpclient.InferInput("text", [3], "BYTES")
    binary.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=True)
    plain = httpclient.InferInput("text", [3, 1], "BYTES")
    plain.set_data_from_numpy(np.array([[t] for t in texts], dtype=np.object_), binary_data=False)
    from_binary = outputs_of(client.infer("words", [binary]))
    from_json = outputs_of(client.infer("words", [plain]))
    for name, values in from_binary.items():
        np.testing.assert_allclose(values, from_json[name], atol=1e-6)
    assert from_binary["probs"].shape == (3, 3)
    # Instances do not depend on their batch-mates: one text alone gives its row of the batch.
    alone = httpclient.InferInput("text", [1], "BYTES")
    alone.set_data_from_numpy(np.array(texts[1:2], dtype=np.object_))
    np.testing.assert_allclose(
        outputs_of(client.infer("words", [alone]))["probs"][0], from_binary["probs"][1], atol=1e-5
    )


def test_classification_outputs(client: Any, tiny_artifact: Path) -> None:
    labels = card(tiny_artifact)["labels"]
    batch = fp32_input(images(2), binary=True)
    probs = client.infer("tiny", [batch]).as_numpy("probs")
    result = client.infer(
        "tiny",
        [batch],
        outputs=[httpclient.InferRequestedOutput("probs", class_count=3), httpclient.InferRequestedOutput("reject")],
    )
    top = result.as_numpy("probs")
    assert top.shape == (2, 3) and top.dtype == np.object_
    for row, classes in zip(probs, top, strict=True):
        order = np.argsort(-row, kind="stable")[:3]
        assert [item.decode() if isinstance(item, bytes) else item for item in classes] == [
            f"{row[i]:f}:{i}:{labels[i]}" for i in order
        ]
    assert result.as_numpy("reject").shape == (2,)


def test_statistics(client: Any) -> None:
    before = client.get_inference_statistics("counted")["model_stats"][0]
    assert (before["inference_count"], before["execution_count"]) == (0, 0)
    for count in (1, 3):
        client.infer("counted", [fp32_input(images(count), binary=True)])
    with pytest.raises(InferenceServerException):
        client.infer("counted", [fp32_input(images(1)[:, :, :27], binary=True)])  # wrong shape: a failure
    (stats,) = client.get_inference_statistics("counted", "1")["model_stats"]
    assert (stats["name"], stats["version"], stats["inference_count"], stats["execution_count"]) == (
        "counted",
        "1",
        4,
        2,
    )
    inference = stats["inference_stats"]
    assert (inference["success"]["count"], inference["fail"]["count"], inference["queue"]["count"]) == (2, 1, 2)
    assert inference["success"]["ns"] > 0 and inference["compute_infer"]["ns"] > 0
    assert sorted(entry["batch_size"] for entry in stats["batch_stats"]) == [1, 3]
    every = client.get_inference_statistics()["model_stats"]
    assert [entry["name"] for entry in every] == ["counted", "tiny", "words"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: Any, algorithm: str) -> None:
    batch = images(2)
    plain = outputs_of(client.infer("tiny", [fp32_input(batch, binary=True)]))
    compressed = outputs_of(
        client.infer("tiny", [fp32_input(batch, binary=True)], request_compression_algorithm=algorithm)
    )
    for name, values in plain.items():
        np.testing.assert_array_equal(values, compressed[name])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 1}, "parameters: 'priority' is not supported: this server does not implement request "
         "priorities (one queue per model)"),
        ({"timeout": 1000}, "parameters: 'timeout' is not supported: this server does not implement request timeouts"),
        ({"sequence_id": 9, "sequence_start": True}, "parameters: 'sequence_id' is not supported: this server does "
         "not implement sequence batching (the gate is stateless)"),
        ({"parameters": {"colour": "red"}}, "parameters: unknown parameter 'colour' (this server takes threshold, "
         "binary_data_output)"),
    ],
)  # fmt: skip
def test_unsupported_request_options_are_400_naming_the_parameter(
    client: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny", [fp32_input(images(1), binary=True)], **options)
    assert (caught.value.status(), caught.value.message()) == ("400", message)


def test_errors_reach_the_client_with_their_status_and_message(client: Any) -> None:
    cases = [
        (("nope", [fp32_input(images(1), binary=True)]), {}, "404", "model 'nope' not found"),
        (
            ("tiny", [fp32_input(images(1), binary=True)]),
            {"model_version": "2"},
            "404",
            "model 'tiny' version '2' is not loaded (serving version 1)",
        ),
        (
            ("tiny", [fp32_input(images(1)[:, :, :27], binary=True)]),
            {},
            "422",
            "input 'input': shape [1, 1, 27, 28] must be [N, 1, 28, 28]",
        ),
        (
            ("words", [fp32_input(images(1), binary=True)]),
            {},
            "422",
            "model 'words' takes one input named 'text' (BYTES [N] of UTF-8 texts), got inputs ['input']",
        ),
        (
            ("tiny", [fp32_input(images(1), binary=True)]),
            {"outputs": [httpclient.InferRequestedOutput("reject", class_count=2)]},
            "400",
            "output 'reject': classification applies to the class probabilities, output 'probs', only",
        ),
        (
            ("tiny", [fp32_input(images(1), binary=True)]),
            {"parameters": {"threshold": 0.5}},
            "403",
            "per-request threshold override is disabled on this server",
        ),
    ]
    for args, options, status, message in cases:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(*args, **options)
        assert (caught.value.status(), caught.value.message()) == (status, message)
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_config("nope")
    assert (missing.value.status(), missing.value.message()) == ("404", "model 'nope' not found")

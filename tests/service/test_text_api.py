"""Text models end to end: the native API and V2 serve the tiny text artifact (tests/text_artifacts.py) with the
graph's own numbers, micro-batches pad to their longest text without changing any text's outputs, long texts are
truncated, and every wrong request is a 4xx that names the problem."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from service.card import OUTPUT_NAMES, sha256_file
from service.codecs.text import TokenBatch
from service.runtime import EXACT_INT8
from tests.service.conftest import b64, clone_artifact, digit_like, png_bytes
from tests.text_artifacts import LABELS, MAX_LENGTH, PAD_TOKEN_ID, THRESHOLD, minilm_tokenizer

pytestmark = pytest.mark.anyio

PREDICT = "/v1/models/words/predict"
INFER = "/v2/models/words/infer"
SHORT = "Goal!"
LONG = "the cat sat on the mat and the dog sat on the log while the bird sang in the tree all day long"
TEXTS = [SHORT, "Stocks fell sharply after the central bank raised rates.", LONG]
V2_OUTPUTS = ["label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs"]


@pytest.fixture
def text_model_dir(model_dir: Path, text_artifact: Path) -> Path:
    """`words` (text, version 1) beside `model_dir`'s `tiny` (image, version 1)."""
    clone_artifact(text_artifact, model_dir, "words", 1)
    return model_dir


def token_ids(text: str) -> list[int]:
    tokenizer = Tokenizer.from_file(str(minilm_tokenizer()))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_LENGTH)
    return tokenizer.encode(text).ids


def run_graph(version_dir: Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.add_session_config_entry(EXACT_INT8, "1")  # as the service runs it, on any CPU
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
    )
    feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed), strict=True))


def run_alone(version_dir: Path, text: str) -> dict[str, np.ndarray]:
    """The graph on one text, unpadded: the reference every served number is compared with."""
    ids = np.array([token_ids(text)])
    return run_graph(version_dir, ids, np.ones_like(ids))


def texts_body(*texts: str) -> dict[str, Any]:
    return {"instances": [{"text": text} for text in texts]}


async def test_text_predictions_are_the_graphs_outputs_plus_the_threshold(serve, text_model_dir: Path) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await client.post(PREDICT, json=texts_body(*TEXTS))
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"], body["threshold"]) == ("words", "1", THRESHOLD)
    assert len(body["predictions"]) == 3
    for text, prediction in zip(TEXTS, body["predictions"], strict=True):
        expected = run_alone(text_model_dir / "words" / "1", text)
        label_index = int(np.argmax(expected["probs"][0]))
        assert prediction["label_index"] == label_index
        assert prediction["label"] == LABELS[label_index]
        assert prediction["confidence"] == pytest.approx(float(expected["confidence"][0]), abs=1e-5)
        assert prediction["anomaly_score"] == pytest.approx(float(expected["anomaly_score"][0]), abs=1e-5)
        assert prediction["kl_uniform"] == pytest.approx(float(expected["kl_uniform"][0]), abs=1e-5)
        assert prediction["reject"] is bool(expected["anomaly_score"][0] >= np.float32(THRESHOLD))
        order = np.argsort(-expected["probs"][0], kind="stable")
        assert [t["label"] for t in prediction["top_k"]] == [LABELS[j] for j in order]
        assert [t["probability"] for t in prediction["top_k"]] == pytest.approx(
            expected["probs"][0][order].tolist(), abs=1e-5
        )
    # The artifact's scores straddle nothing in particular; what matters is that they differ between texts.
    assert len({round(p["anomaly_score"], 4) for p in body["predictions"]}) == 3


def test_the_mask_matters_in_the_tiny_graph(text_artifact: Path) -> None:
    """Padding SHORT to LONG's length changes nothing with mask 0, and a lot with mask 1: the parity tests below
    could fail if the service padded or masked wrongly."""
    short, long = token_ids(SHORT), token_ids(LONG)
    assert len(short) < len(long) == MAX_LENGTH
    input_ids, attention_mask = TokenBatch((np.array(short), np.array(long))).padded(PAD_TOKEN_ID)
    padded = run_graph(text_artifact, input_ids, attention_mask)
    unmasked = run_graph(text_artifact, input_ids, np.ones_like(attention_mask))
    alone = run_alone(text_artifact, SHORT)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(padded[name][0], alone[name][0], atol=1e-5, rtol=0)
    assert abs(float(unmasked["anomaly_score"][0]) - float(alone["anomaly_score"][0])) > 1e-3


async def test_concurrent_texts_share_a_batch_padded_to_the_longest(
    serve, text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, int]] = []
    original = TokenBatch.padded

    def recording(self: TokenBatch, pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
        input_ids, attention_mask = original(self, pad_token_id)
        shapes.append(input_ids.shape)
        return input_ids, attention_mask

    monkeypatch.setattr(TokenBatch, "padded", recording)
    async with serve(model_dir=text_model_dir, max_delay_ms=500.0, max_batch_size=3) as (_, client):
        together = await asyncio.gather(*(client.post(PREDICT, json=texts_body(text)) for text in TEXTS))
        shapes_together = list(shapes)
        apart = [await client.post(PREDICT, json=texts_body(text)) for text in TEXTS]
    assert shapes_together == [(3, MAX_LENGTH)]  # one run, all three texts, padded to the longest (LONG: 16)
    assert [r.status_code for r in together + apart] == [200] * 6
    for joint, alone in zip(together, apart, strict=True):
        a, b = joint.json()["predictions"][0], alone.json()["predictions"][0]
        assert a["label_index"] == b["label_index"] and a["reject"] == b["reject"]
        for field in ("confidence", "anomaly_score", "kl_uniform"):
            assert a[field] == pytest.approx(b[field], abs=1e-5)


async def test_a_text_over_max_length_tokens_is_truncated_not_refused(serve, text_model_dir: Path) -> None:
    words = LONG.split()
    assert len(token_ids(LONG)) == MAX_LENGTH and len(words) > MAX_LENGTH  # one token per word here
    kept = " ".join(words[: MAX_LENGTH - 2])  # [CLS] + 14 words + [SEP]
    other_tail = kept + " but nothing after the sixteenth token counts at all"
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await client.post(PREDICT, json=texts_body(LONG, kept, other_tail))
    assert response.status_code == 200
    long, truncated, other = response.json()["predictions"]
    assert long == truncated == other


async def test_v1_models_shows_the_text_input_spec(serve, text_model_dir: Path) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await client.get("/v1/models/words")
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["version"], body["task"], body["labels"]) == ("words", "1", "text", LABELS)
    assert body["input"] == {"kind": "text", "max_length": 16, "truncation": "truncate", "tokenizer": "tokenizer.json"}
    assert body["threshold"] == THRESHOLD


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (PREDICT, texts_body("fine", ""), "instances[1]: text is empty or whitespace only"),
        (PREDICT, texts_body(" \n\t "), "instances[0]: text is empty or whitespace only"),
        (PREDICT, texts_body("x" * 101), "instances[0]: text is too long (101 characters, limit 100)"),
        (
            PREDICT,
            {"instances": [{"image_b64": b64(png_bytes(digit_like(0)))}]},
            "instances[0]: model 'words' takes text; image_b64 instances need an image model",
        ),
        (
            PREDICT,
            {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}]},
            "instances[0]: model 'words' takes text; array instances need an image model",
        ),
        (
            PREDICT,
            {"instances": [{"text": "a text"}, {"array": np.zeros((1, 28, 28)).tolist()}]},
            "instances mix text (instances[0]) and images (instances[1]); a request holds one kind of instance",
        ),
        (
            "/v1/models/tiny/predict",
            texts_body("a text"),
            "instances[0]: model 'tiny' takes images; text instances need a text model",
        ),
        (
            "/v1/models/tiny/predict",
            {"instances": [{"array": np.zeros((1, 28, 28)).tolist()}, {"text": "a text"}]},
            "instances mix text (instances[1]) and images (instances[0]); a request holds one kind of instance",
        ),
    ],
    ids=["empty", "whitespace", "too-long", "image-to-text", "array-to-text", "mixed", "text-to-image", "mixed-img"],
)
async def test_native_text_errors_are_422_naming_the_problem(
    serve, text_model_dir: Path, path: str, body: dict[str, Any], message: str
) -> None:
    async with serve(model_dir=text_model_dir, max_text_chars=100) as (_, client):
        response = await client.post(path, json=body)
    assert response.status_code == 422
    assert response.json() == {"error": message}


async def test_multipart_images_to_a_text_model_are_refused(serve, text_model_dir: Path) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await client.post(PREDICT, files=[("image", ("d.png", png_bytes(digit_like(0)), "image/png"))])
    assert response.status_code == 422
    assert response.json() == {
        "error": "model 'words' takes text; multipart/form-data uploads are images: send JSON "
        '{"instances": [{"text": "..."}]}'
    }


async def test_v2_metadata_of_a_text_model(serve, text_model_dir: Path) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await client.get("/v2/models/words")
        pinned = await client.get("/v2/models/words/versions/1")
        image = await client.get("/v2/models/tiny")
    assert response.status_code == pinned.status_code == 200
    assert (
        response.json()
        == pinned.json()
        == {
            "name": "words",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [-1],
                    "parameters": {
                        "content_type": "str",
                        "description": "UTF-8 texts, one per instance; longer than max_length tokens is truncated",
                        "max_length": 16,
                        "truncation": "truncate",
                    },
                }
            ],
            "outputs": [
                {"name": "label_index", "datatype": "INT64", "shape": [-1]},
                {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                {"name": "anomaly_score", "datatype": "FP32", "shape": [-1]},
                {"name": "kl_uniform", "datatype": "FP32", "shape": [-1]},
                {"name": "reject", "datatype": "BOOL", "shape": [-1]},
                {"name": "probs", "datatype": "FP32", "shape": [-1, 3]},
            ],
        }
    )
    (image_input,) = image.json()["inputs"]
    assert (image_input["name"], image_input["datatype"], image_input["shape"]) == ("input", "FP32", [-1, 1, 28, 28])
    assert image_input["parameters"]["datatypes"] == ["FP32", "BYTES"]  # and BYTES [N] of encoded images


def text_tensor(texts: list[str], shape: list[int] | None = None) -> dict[str, Any]:
    data: list[Any] = texts if shape is None or len(shape) == 1 else [[t] for t in texts]
    return {"name": "text", "shape": shape or [len(texts)], "datatype": "BYTES", "data": data}


async def _post_binary_texts(client: Any, elements: list[bytes]) -> Any:
    payload = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [len(elements)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    ).encode()
    return await client.post(
        INFER,
        content=header + payload,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )


async def test_v2_infer_on_texts_matches_the_native_api(serve, text_model_dir: Path) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        flat = await client.post(INFER, json={"id": "t-1", "inputs": [text_tensor(TEXTS)]})
        column = await client.post(INFER, json={"id": "t-1", "inputs": [text_tensor(TEXTS, [3, 1])]})
        binary = await _post_binary_texts(client, [t.encode() for t in TEXTS])
        native = await client.post(PREDICT, json=texts_body(*TEXTS))
    assert flat.status_code == column.status_code == binary.status_code == native.status_code == 200
    body = flat.json()
    assert column.json() == body
    assert binary.json() == {key: value for key, value in body.items() if key != "id"}
    assert (body["model_name"], body["model_version"], body["id"]) == ("words", "1", "t-1")
    assert body["parameters"] == {"threshold": THRESHOLD}
    outputs = {output["name"]: output for output in body["outputs"]}
    assert list(outputs) == V2_OUTPUTS
    assert [(o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("INT64", [3]), ("FP32", [3]), ("FP32", [3]), ("FP32", [3]), ("BOOL", [3]), ("FP32", [3, 3])
    ]  # fmt: skip
    predictions = native.json()["predictions"]
    assert outputs["label_index"]["data"] == [p["label_index"] for p in predictions]
    assert outputs["anomaly_score"]["data"] == [p["anomaly_score"] for p in predictions]
    assert outputs["kl_uniform"]["data"] == [p["kl_uniform"] for p in predictions]
    assert outputs["confidence"]["data"] == [p["confidence"] for p in predictions]
    assert outputs["reject"]["data"] == [p["reject"] for p in predictions]


NATIVE_FIELDS = ("instances", "image_b64", "array", "top_k")


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        (
            {"json": {"inputs": [{"name": "text", "shape": [3], "datatype": "FP32", "data": [0.0, 0.5, 1.0]}]}},
            422,
            "input 'text': datatype FP32 is not supported by text model 'words'; use BYTES (UTF-8 texts)",
        ),
        (
            {"json": {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}},
            422,
            "model 'words' takes one input named 'text' (BYTES [N] of UTF-8 texts), got inputs ['input']",
        ),
        (
            {"json": {"inputs": [text_tensor(["fine", " "])]}},
            422,
            "input 'text' instance 1: text is empty or whitespace only",
        ),
        (
            {"json": {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [5]}]}},
            422,
            "input 'text': BYTES data in JSON must be strings (the texts)",
        ),
        (
            {"json": {"inputs": [text_tensor(["a", "b"], [2, 2])]}},
            422,
            "input 'text': BYTES shape [2, 2] must be [N] or [N, 1]",
        ),
        (
            {"json": {"inputs": [text_tensor(["a", "b"], [3])]}},
            422,
            "input 'text': shape [3] needs 3 elements, data has 2",
        ),
        (
            {
                "content": b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok \\ud800"]}]}',
                "headers": {"content-type": "application/json"},
            },
            400,
            "request body holds a string that is not valid UTF-8 (a lone surrogate escape)",
        ),
        (
            {
                "content": b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["caf\xe9"]}]}',
                "headers": {"content-type": "application/json"},
            },
            400,
            "request body is not valid UTF-8 (invalid continuation byte at byte 77)",
        ),
    ],
    ids=["fp32", "wrong-name", "empty", "not-strings", "bad-shape", "count", "lone-surrogate", "latin-1-body"],
)
async def test_v2_text_errors(
    serve, text_model_dir: Path, request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await client.post(INFER, **request_kwargs)
    assert response.status_code == status
    assert response.json() == {"error": message}
    assert not any(field in message for field in NATIVE_FIELDS)


async def test_v2_binary_texts_that_are_not_utf8_are_a_400(serve, text_model_dir: Path) -> None:
    async with serve(model_dir=text_model_dir) as (_, client):
        response = await _post_binary_texts(client, [b"fine", b"caf\xe9"])
    assert response.status_code == 400
    assert response.json() == {"error": "input 'text' instance 1: not valid UTF-8 (unexpected end of data at byte 3)"}


def _rewrite_checksums(directory: Path) -> None:
    card = json.loads((directory / "card.json").read_text())
    card["sha256"] = {name: sha256_file(directory / name) for name in card["sha256"] if (directory / name).exists()}
    (directory / "card.json").write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("delete", "card lists tokenizer.json but the file is missing"),
        ("unlisted", "invalid card: sha256 must list tokenizer.json"),
        ("corrupt", "tokenizer.json: the tokenizers library cannot load it: "),
        ("swap", "tokenizer.json: sha256 mismatch"),
    ],
)
async def test_a_text_version_with_a_bad_tokenizer_is_refused_and_the_older_one_served(
    serve, text_model_dir: Path, text_artifact: Path, damage: str, reason: str
) -> None:
    broken = clone_artifact(text_artifact, text_model_dir, "words", 2)
    tokenizer = broken / "tokenizer.json"
    if damage == "delete":
        tokenizer.unlink()
    elif damage == "unlisted":
        tokenizer.unlink()
        _rewrite_checksums(broken)
    elif damage == "corrupt":
        tokenizer.write_text('{"version": "1.0", "truncation": null, "model": {"type": "NoSuchModel"}}')
        _rewrite_checksums(broken)
    else:
        tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"', 1))
    async with serve(model_dir=text_model_dir) as (app, client):
        response = await client.post(PREDICT, json=texts_body(SHORT))
        report = await app.state.components.registry.reload()
        failures = app.state.components.metrics.registry.get_sample_value(
            "oegate_model_load_failures_total", {"model": "words"}
        )
    assert response.status_code == 200
    assert response.json()["version"] == "1"
    assert report.failed == []  # an unchanged failing version is not retried (nor counted) again
    assert failures == 1.0


async def test_a_text_model_alone_with_a_bad_tokenizer_is_not_ready_never_a_500(
    serve, tmp_path: Path, text_artifact: Path
) -> None:
    models = tmp_path / "only-text"
    version = clone_artifact(text_artifact, models, "words", 1)
    (version / "tokenizer.json").write_text("not json at all")
    _rewrite_checksums(version)
    async with serve(model_dir=models) as (_, client):
        ready = await client.get("/v2/health/ready")
        response = await client.post(PREDICT, json=texts_body(SHORT))
    assert ready.status_code == 503
    assert response.status_code == 503
    assert response.json() == {"error": "model 'words' has no loadable version (see the service logs)"}


def test_the_text_artifact_carries_the_minilm_tokenizer(text_artifact: Path) -> None:
    assert (text_artifact / "tokenizer.json").read_bytes() == minilm_tokenizer().read_bytes()

"""The Open Inference Protocol extensions beyond inference (model configuration, statistics, classification), the
request parameters the server refuses, malformed JSON, and compressed request bodies, in process; the same claims
through NVIDIA's tritonclient against a real server are in test_tritonclient.py."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.service.conftest import b64, clone_artifact, digit_like, png_bytes

pytestmark = pytest.mark.anyio

PIXELS = 784
STATISTICS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def fp32_request(count: int = 1, **fields: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [count, 1, 28, 28], "datatype": "FP32", "data": [0.5] * (PIXELS * count)}
    return {"inputs": [tensor], **fields}


async def test_model_config_is_derived_from_the_card_and_settings(serve, tiny_artifact: Path) -> None:
    card = json.loads((tiny_artifact / "card.json").read_text())
    async with serve(max_batch_size=16, max_delay_ms=2.5) as (_, client):
        config = await client.get("/v2/models/tiny/config")
        pinned = await client.get("/v2/models/tiny/versions/1/config")
        other = await client.get("/v2/models/tiny/versions/2/config")
        unknown = await client.get("/v2/models/nope/config")
    scalar = {"dims": [1], "reshape": {"shape": []}, "label_filename": ""}
    assert config.status_code == 200
    assert (
        config.json()
        == pinned.json()
        == {
            "name": "tiny",
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": 16,
            "input": [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [1, 28, 28]}],
            "output": [
                {"name": "label_index", "data_type": "TYPE_INT64", **scalar},
                {"name": "confidence", "data_type": "TYPE_FP32", **scalar},
                {"name": "anomaly_score", "data_type": "TYPE_FP32", **scalar},
                {"name": "kl_uniform", "data_type": "TYPE_FP32", **scalar},
                {"name": "reject", "data_type": "TYPE_BOOL", **scalar},
                {"name": "probs", "data_type": "TYPE_FP32", "label_filename": "", "dims": [10]},
            ],
            "dynamic_batching": {"max_queue_delay_microseconds": 2500},
            "instance_group": [{"name": "tiny", "kind": "KIND_CPU", "count": 1}],
            "parameters": {
                "task": {"string_value": "image"},
                "threshold": {"string_value": json.dumps(card["threshold"]["value"])},
                "acceptance_target": {"string_value": json.dumps(card["threshold"]["acceptance_target"])},
                "temperature": {"string_value": json.dumps(card["temperature"])},
                "labels": {"string_value": json.dumps(card["labels"])},
                "reject_rule": {"string_value": "anomaly_score >= threshold"},
            },
            "default_model_filename": "model.onnx",
        }
    )
    assert (other.status_code, other.json()) == (
        404,
        {"error": "model 'tiny' version '2' is not loaded (serving version 1)"},
    )
    assert (unknown.status_code, unknown.json()) == (404, {"error": "model 'nope' not found"})


async def test_text_model_config_and_metadata_take_one_bytes_input(serve, tmp_path: Path, text_artifact: Path) -> None:
    models = tmp_path / "text-models"
    clone_artifact(text_artifact, models, "words", 1)
    async with serve(model_dir=models) as (_, client):
        config = (await client.get("/v2/models/words/config")).json()
        metadata = (await client.get("/v2/models/words")).json()
    assert config["input"] == [
        {"name": "text", "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1], "reshape": {"shape": []}}
    ]
    assert config["parameters"]["task"] == {"string_value": "text"}
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [("text", "BYTES", [-1])]
    assert metadata["inputs"][0]["parameters"]["content_type"] == "str"


async def test_statistics_count_requests_instances_runs_and_failures(
    serve, tmp_path: Path, tiny_artifact: Path
) -> None:
    models = tmp_path / "stats"
    clone_artifact(tiny_artifact, models, "tiny", 1)
    clone_artifact(tiny_artifact, models, "other", 1)
    before = int(time.time() * 1000)
    async with serve(model_dir=models, max_batch_size=4) as (_, client):
        empty = (await client.get("/v2/models/tiny/stats")).json()
        for count in (1, 3, 6):  # 6 > max_batch_size: two chunks, two queue waits, two runs (4 + 2)
            assert (await client.post("/v2/models/tiny/infer", json=fp32_request(count))).status_code == 200
        bad = fp32_request(1)
        bad["inputs"][0]["data"] = [2.0] * PIXELS  # out of [0, 1]: a 422 after the version was leased
        assert (await client.post("/v2/models/tiny/infer", json=bad)).status_code == 422
        stats = (await client.get("/v2/models/tiny/stats")).json()
        pinned = (await client.get("/v2/models/tiny/versions/1/stats")).json()
        everything = (await client.get("/v2/models/stats")).json()
        wrong_version = await client.get("/v2/models/tiny/versions/7/stats")
    zero = {"count": 0, "ns": 0}
    assert empty == {
        "model_stats": [
            {
                "name": "tiny",
                "version": "1",
                "last_inference": 0,
                "inference_count": 0,
                "execution_count": 0,
                "inference_stats": {key: zero for key in STATISTICS},
                "batch_stats": [],
            }
        ]
    }
    (model,) = stats["model_stats"]
    assert pinned == stats
    assert [entry["name"] for entry in everything["model_stats"]] == ["other", "tiny"]
    assert wrong_version.status_code == 404
    assert (model["inference_count"], model["execution_count"]) == (10, 4)
    assert model["last_inference"] >= before
    counts = {key: value["count"] for key, value in model["inference_stats"].items()}
    assert counts == {
        "success": 3,
        "fail": 1,
        "queue": 4,
        "compute_input": 3,  # the failed request's decoding is not counted: it raised
        "compute_infer": 4,
        "compute_output": 3,
        "cache_hit": 0,
        "cache_miss": 0,
    }
    assert all(value["ns"] > 0 for key, value in model["inference_stats"].items() if not key.startswith("cache"))
    batches = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in model["batch_stats"]}
    assert batches == {1: 1, 2: 1, 3: 1, 4: 1}


async def test_classification_returns_the_top_k_labels_as_triton_does(serve, tiny_artifact: Path) -> None:
    labels = json.loads((tiny_artifact / "card.json").read_text())["labels"]
    images = [digit_like(1), digit_like(2)]
    tensor = {"name": "input", "shape": [2], "datatype": "BYTES", "data": [b64(png_bytes(i)) for i in images]}
    async with serve() as (_, client):
        plain = await client.post("/v2/models/tiny/infer", json={"inputs": [tensor]})
        top = await client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [tensor], "outputs": [{"name": "probs", "parameters": {"classification": 3}},
                                                  {"name": "reject"}]},
        )  # fmt: skip
        everything = await client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [tensor], "outputs": [{"name": "probs", "parameters": {"classification": 99}}]},
        )
        off = await client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [tensor], "outputs": [{"name": "probs", "parameters": {"classification": 0}}]},
        )
    probs = np.array(next(o for o in plain.json()["outputs"] if o["name"] == "probs")["data"], np.float32)
    probs = probs.reshape(2, 10)
    expected = [[f"{row[i]:f}:{i}:{labels[i]}" for i in np.argsort(-row, kind="stable")[:3].tolist()] for row in probs]
    assert top.status_code == 200
    classification, reject = top.json()["outputs"]
    assert classification == {"name": "probs", "shape": [2, 3], "datatype": "BYTES", "data": expected[0] + expected[1]}
    assert reject["name"] == "reject" and reject["datatype"] == "BOOL"
    (all_classes,) = everything.json()["outputs"]
    assert all_classes["shape"] == [2, 10]  # at most every class, as Triton clamps
    assert [float(item.split(":")[0]) for item in all_classes["data"][:10]] == sorted(
        (float(f"{p:f}") for p in probs[0]), reverse=True
    )
    (unclassified,) = off.json()["outputs"]
    assert (unclassified["datatype"], unclassified["shape"]) == ("FP32", [2, 10])


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        (
            {"parameters": {"priority": 1}},
            "parameters: 'priority' is not supported: this server does not implement request priorities "
            "(one queue per model)",
        ),
        (
            {"parameters": {"timeout": 1000}},
            "parameters: 'timeout' is not supported: this server does not implement request timeouts",
        ),
        (
            {"parameters": {"sequence_id": 7, "sequence_start": True, "sequence_end": False}},
            "parameters: 'sequence_id' is not supported: this server does not implement sequence batching "
            "(the gate is stateless)",
        ),
        (
            {"parameters": {"sequence_start": True}},
            "parameters: 'sequence_start' is not supported: this server does not implement sequence batching "
            "(the gate is stateless)",
        ),
        (
            {"parameters": {"colour": "red"}},
            "parameters: unknown parameter 'colour' (this server takes threshold, binary_data_output)",
        ),
        (
            {"outputs": [{"name": "probs", "parameters": {"shared_memory_region": "r"}}]},
            "output 'probs' parameters: 'shared_memory_region' is not supported: this server does not implement "
            "the shared memory extensions",
        ),
        (
            {"outputs": [{"name": "reject", "parameters": {"classification": 2}}]},
            "output 'reject': classification applies to the class probabilities, output 'probs', only",
        ),
        (
            {"outputs": [{"name": "probs", "parameters": {"classification": "3"}}]},
            "output 'probs': classification must be a non-negative integer, got '3'",
        ),
        (
            {"outputs": [{"name": "probs", "parameters": {"classification": -1}}]},
            "output 'probs': classification must be a non-negative integer, got -1",
        ),
    ],
)
async def test_unsupported_parameters_are_400_naming_them(serve, request_fields: dict, message: str) -> None:
    async with serve() as (_, client):
        response = await client.post("/v2/models/tiny/infer", json=fp32_request(1, **request_fields))
        stats = (await client.get("/v2/models/tiny/stats")).json()["model_stats"][0]
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert stats["inference_stats"]["fail"]["count"] == 0  # refused before the model was involved


async def test_input_parameters_are_checked_too(serve) -> None:
    request = fp32_request(1)
    request["inputs"][0]["parameters"] = {"shared_memory_region": "input0"}
    async with serve() as (_, client):
        response = await client.post("/v2/models/tiny/infer", json=request)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "input 'input' parameters: 'shared_memory_region' is not supported: this server does not "
         "implement the shared memory extensions"},
    )  # fmt: skip


async def test_malformed_json_is_400_on_v2_and_422_on_the_native_api(serve) -> None:
    headers = {"content-type": "application/json"}
    async with serve() as (_, client):
        v2 = await client.post("/v2/models/tiny/infer", content=b'{"inputs": [', headers=headers)
        not_a_request = await client.post("/v2/models/tiny/infer", content=b'{"inputs": 3}', headers=headers)
        native = await client.post("/v1/models/tiny/predict", content=b'{"instances": [', headers=headers)
    assert (v2.status_code, v2.json()) == (
        400,
        {"error": "body: Invalid JSON: EOF while parsing a list at line 1 column 12"},
    )
    assert not_a_request.status_code == 422  # valid JSON, invalid request: a 422 naming the field
    assert not_a_request.json() == {"error": "inputs: Input should be a valid array"}
    assert native.status_code == 422


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZIP", gzip.compress)],
)
async def test_compressed_bodies_are_decoded(serve, encoding: str, compress: Any) -> None:
    body = json.dumps(fp32_request(2)).encode()
    async with serve() as (_, client):
        plain = await client.post("/v2/models/tiny/infer", content=body)
        compressed = await client.post(
            "/v2/models/tiny/infer", content=compress(body), headers={"content-encoding": encoding}
        )
        native = await client.post(
            "/v1/models/tiny/predict",
            content=compress(json.dumps({"instances": [{"array": [[[0.5] * 28] * 28]}]}).encode()),
            headers={"content-encoding": encoding, "content-type": "application/json"},
        )
    assert (plain.status_code, compressed.status_code, native.status_code) == (200, 200, 200)
    assert compressed.json() == plain.json()


async def test_a_multi_member_gzip_body_is_one_body(serve) -> None:
    body = json.dumps(fp32_request(1)).encode()
    halves = gzip.compress(body[:100]) + gzip.compress(body[100:])  # RFC 1952: members concatenate
    async with serve() as (_, client):
        response = await client.post("/v2/models/tiny/infer", content=halves, headers={"content-encoding": "gzip"})
    assert response.status_code == 200


async def test_a_zip_bomb_is_413_after_at_most_the_limit_of_output(serve) -> None:
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024))  # 64 MiB of JSON whitespace in ~64 kB
    assert len(bomb) < 1024 * 1024  # the compressed body passes the limit; its decoded size does not
    async with serve(max_body_bytes=1024 * 1024) as (_, client):
        started = time.perf_counter()
        response = await client.post(
            "/v2/models/tiny/infer", content=bomb, headers={"content-encoding": "gzip"}, timeout=30
        )
        seconds = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
    assert (response.status_code, response.json()) == (
        413,
        {"error": "decompressed request body is larger than the limit of 1048576 bytes"},
    )
    assert seconds < 5  # decoding stopped at the limit, never inflated the 64 MiB
    assert 'oegate_request_errors_total{model="tiny",reason="payload_too_large"} 1.0' in metrics


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (
            {"content-encoding": "br"},
            b"...",
            415,
            "Content-Encoding 'br' is not supported (use one of: gzip, deflate, identity)",
        ),
        (
            {"content-encoding": "gzip, gzip"},
            b"...",
            415,
            "Content-Encoding 'gzip, gzip' is not supported (use one of: gzip, deflate, identity)",
        ),
        (
            {"content-encoding": "gzip"},
            b"not gzip at all",
            400,
            "the gzip body cannot be decoded: Error -3 while decompressing data: incorrect header check",
        ),
        (
            {"content-encoding": "gzip"},
            gzip.compress(b'{"inputs": []}')[:-6],
            400,
            "the gzip body cannot be decoded: the compressed body ends before its stream does",
        ),
        (
            {"content-encoding": "deflate"},
            zlib.compress(b"{}") + b"tail",
            400,
            "the deflate body cannot be decoded: data after the end of the deflate stream",
        ),
    ],
)
async def test_unsupported_or_corrupt_encodings_are_refused_before_json(
    serve, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    async with serve() as (_, client):
        response = await client.post("/v2/models/tiny/infer", content=body, headers=headers)
    assert (response.status_code, response.json()) == (status, {"error": message})


async def test_identity_encoding_is_the_plain_body(serve) -> None:
    async with serve() as (_, client):
        response = await client.post(
            "/v2/models/tiny/infer", content=json.dumps(fp32_request(1)), headers={"content-encoding": "identity"}
        )
    assert response.status_code == 200

"""Triton's binary tensor data extension on outputs, byte for byte: which outputs go binary (`binary_data` per output,
`binary_data_output` per request), the JSON header and its length header, each output's `binary_data_size`, the
little-endian layout of FP32 / INT64 / BOOL and the length-prefixed BYTES of `classification`."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from tests.service.conftest import digit_like

pytestmark = pytest.mark.anyio

OUTPUTS = ["label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs"]


def request(count: int = 2, **extra: Any) -> dict[str, Any]:
    images = np.stack([digit_like(seed)[None].astype(np.float32) / np.float32(255) for seed in range(count)])
    tensor = {"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def split(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tail of a binary reply."""
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


async def infer(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v2/models/tiny/infer", json=body)


async def test_binary_data_output_sends_every_output_in_binary_in_the_json_order(serve) -> None:
    async with serve() as (_, client):
        as_json = await infer(client, request(id="r-7"))
        as_binary = await infer(client, request(id="r-7", parameters={"binary_data_output": True}))
    assert as_json.status_code == as_binary.status_code == 200, as_binary.text
    assert as_json.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in as_json.headers
    assert as_binary.headers["content-type"] == "application/octet-stream"
    expected = as_json.json()
    header, tail = split(as_binary)
    sizes = {"label_index": 16, "confidence": 8, "anomaly_score": 8, "kl_uniform": 8, "reject": 2, "probs": 80}
    assert header == {
        "model_name": "tiny",
        "model_version": "1",
        "id": "r-7",
        "parameters": expected["parameters"],
        "outputs": [
            {key: o[key] for key in ("name", "shape", "datatype")}
            | {"parameters": {"binary_data_size": sizes[o["name"]]}}
            for o in expected["outputs"]
        ],
    }
    assert len(tail) == sum(sizes.values()) == 122
    offset = 0
    dtypes = {"INT64": "<i8", "FP32": "<f4", "BOOL": "|b1"}
    for output in expected["outputs"]:
        size = sizes[output["name"]]
        values = np.frombuffer(tail[offset : offset + size], dtype=dtypes[output["datatype"]])
        offset += size
        np.testing.assert_array_equal(values, np.array(output["data"], dtype=dtypes[output["datatype"]]))
    reject = expected["outputs"][OUTPUTS.index("reject")]["data"]
    assert tail[16 + 8 + 8 + 8 : 16 + 8 + 8 + 8 + 2] == bytes(int(value) for value in reject)  # one byte, 0 or 1


async def test_binary_data_per_output_wins_over_the_request_default(serve) -> None:
    outputs = [
        {"name": "reject", "parameters": {"binary_data": True}},
        {"name": "label_index", "parameters": {"binary_data": False}},
        {"name": "confidence"},
    ]
    async with serve() as (_, client):
        plain = await infer(client, request(1))
        mixed = await infer(client, request(1, outputs=outputs, parameters={"binary_data_output": True}))
        all_json = await infer(client, request(1, outputs=[{"name": "reject", "parameters": {"binary_data": False}}]))
    values = {o["name"]: o["data"] for o in plain.json()["outputs"]}
    header, tail = split(mixed)
    assert header["outputs"] == [
        {"name": "reject", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": 1}},
        {"name": "label_index", "shape": [1], "datatype": "INT64", "data": values["label_index"]},
        {"name": "confidence", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
    ]
    assert tail == bytes([int(values["reject"][0])]) + struct.pack("<f", values["confidence"][0])
    assert all_json.headers["content-type"] == "application/json"
    assert all_json.json()["outputs"] == [
        {"name": "reject", "shape": [1], "datatype": "BOOL", "data": values["reject"]}
    ]


async def test_binary_classification_is_length_prefixed_utf8(serve) -> None:
    outputs = [{"name": "probs", "parameters": {"classification": 2, "binary_data": True}}]
    async with serve() as (_, client):
        as_json = await infer(client, request(2, outputs=[{"name": "probs", "parameters": {"classification": 2}}]))
        as_binary = await infer(client, request(2, outputs=outputs))
    (expected,) = as_json.json()["outputs"]
    header, tail = split(as_binary)
    prefixed = b"".join(struct.pack("<I", len(item.encode())) + item.encode() for item in expected["data"])
    assert header["outputs"] == [
        {"name": "probs", "shape": [2, 2], "datatype": "BYTES", "parameters": {"binary_data_size": len(prefixed)}}
    ]
    assert tail == prefixed and len(expected["data"]) == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"parameters": {"binary_data_output": 1}}, "parameters: binary_data_output must be a boolean, got 1"),
        (
            {"outputs": [{"name": "probs", "parameters": {"binary_data": "yes"}}]},
            "output 'probs': binary_data must be a boolean, got 'yes'",
        ),
    ],
)
async def test_binary_flags_that_are_not_booleans_are_400(serve, body: dict[str, Any], message: str) -> None:
    async with serve() as (_, client):
        response = await infer(client, request(1, **body))
    assert (response.status_code, response.json()) == (400, {"error": message})

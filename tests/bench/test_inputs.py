"""The request bodies carry bit-identical float32 values on every API, and predictions are read from every reply
shape (JSON, and V2 binary replies)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.inputs import (
    APIS,
    BINARY_HEADER,
    Api,
    Digit,
    Prediction,
    body_values,
    read_prediction,
    read_reply,
    request_body,
    request_headers,
)


def test_every_pixel_value_round_trips_exactly_on_both_apis() -> None:
    pixels = np.arange(28 * 28, dtype=np.int64).reshape(28, 28) % 256  # every value 0..255 appears
    values = Digit(pixels.astype(np.uint8), 3, "synthetic").values
    assert values.dtype == np.float32 and values.shape == (1, 1, 28, 28)
    for api in APIS:
        body = request_body(api, values)
        np.testing.assert_array_equal(body_values(api, body, request_headers(api, values)), values, strict=True)


def test_bodies_have_the_documented_shapes() -> None:
    values = np.zeros((1, 1, 28, 28), dtype=np.float32)
    values[0, 0, 3, 5] = 1.0
    native = json.loads(request_body("native", values))
    assert list(native) == ["instances"] and len(native["instances"]) == 1
    assert np.asarray(native["instances"][0]["array"]).shape == (1, 28, 28)
    assert native["instances"][0]["array"][0][3][5] == 1
    (tensor,) = json.loads(request_body("v2", values))["inputs"]
    assert tensor["name"] == "input" and tensor["datatype"] == "FP32" and tensor["shape"] == [1, 1, 28, 28]
    assert len(tensor["data"]) == 784 and tensor["data"][3 * 28 + 5] == 1


def test_request_body_refuses_anything_but_float32_images() -> None:
    with pytest.raises(ValueError, match="float32"):
        request_body("v2", np.zeros((1, 1, 28, 28), dtype=np.float64))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        request_body("native", np.zeros((0, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        request_body("v2", np.zeros((1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="one grey image"):
        request_body("native-raw", np.zeros((2, 1, 28, 28), dtype=np.float32))


def test_several_instances_per_body_round_trip_in_order() -> None:
    rng = np.random.default_rng(0)
    values = (rng.integers(0, 256, size=(3, 1, 28, 28)) / 255.0).astype(np.float32)
    for api in ("native", "v2", "v2-binary"):
        body = request_body(api, values)
        read = body_values(api, body, request_headers(api, values))
        np.testing.assert_array_equal(read, values, strict=True)
    native = json.loads(request_body("native", values))
    assert len(native["instances"]) == 3
    (tensor,) = json.loads(request_body("v2", values))["inputs"]
    assert tensor["shape"] == [3, 1, 28, 28] and len(tensor["data"]) == 3 * 784


@pytest.mark.parametrize(
    ("api", "response"),
    [
        ("native", {"predictions": [{"label": "7", "label_index": 7, "anomaly_score": 0.25}]}),
        # oegate answers scalars as [N]; Triton as [N, 1].
        ("v2", {"outputs": [{"name": "anomaly_score", "data": [0.25]}, {"name": "label_index", "data": [7]}]}),
        (
            "v2",
            {
                "outputs": [
                    {"name": "label_index", "shape": [1, 1], "data": [7]},
                    {"name": "anomaly_score", "data": [0.25]},
                ]
            },
        ),
    ],
)
def test_read_prediction(api: Api, response: dict[str, object]) -> None:
    assert read_prediction(api, response) == Prediction(label_index=7, anomaly_score=0.25)


def test_binary_bodies_and_their_headers() -> None:
    values = np.zeros((1, 1, 28, 28), dtype=np.float32)
    values[0, 0, 3, 5] = 0.5
    body, headers = request_body("v2-binary", values), request_headers("v2-binary", values)
    length = int(headers[BINARY_HEADER])
    assert headers["Content-Type"] == "application/octet-stream" and len(body) == length + 784 * 4
    assert json.loads(body[:length]) == {
        "inputs": [
            {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}
        ],
        "parameters": {"binary_data_output": True},
    }
    assert body[length + (3 * 28 + 5) * 4 : length + (3 * 28 + 6) * 4] == np.float32(0.5).tobytes()
    png = request_body("native-raw", values)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and request_headers("native-raw", values) == {
        "Content-Type": "image/png"
    }
    assert request_headers("v2", values) == request_headers("native", values) == {"Content-Type": "application/json"}


def test_read_reply_reads_binary_outputs_in_the_header_order() -> None:
    header = json.dumps(
        {
            "outputs": [
                {"name": "reject", "datatype": "BOOL", "shape": [1], "parameters": {"binary_data_size": 1}},
                {"name": "label_index", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
                {"name": "anomaly_score", "datatype": "FP32", "shape": [1], "data": [0.25]},
            ]
        }
    ).encode()
    content = header + b"\x01" + np.int64(7).astype("<i8").tobytes()
    assert read_reply("v2-binary", content, str(len(header))) == Prediction(label_index=7, anomaly_score=0.25)
    native = json.dumps({"predictions": [{"label_index": 3, "anomaly_score": 0.5}]}).encode()
    assert read_reply("native-raw", native, None) == Prediction(label_index=3, anomaly_score=0.5)

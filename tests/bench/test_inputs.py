"""The request bodies carry bit-identical float32 values on both APIs, and predictions are read from both shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.inputs import APIS, Api, Digit, Prediction, body_values, read_prediction, request_body


def test_every_pixel_value_round_trips_exactly_on_both_apis() -> None:
    pixels = np.arange(28 * 28, dtype=np.int64).reshape(28, 28) % 256  # every value 0..255 appears
    values = Digit(pixels.astype(np.uint8), 3, "synthetic").values
    assert values.dtype == np.float32 and values.shape == (1, 1, 28, 28)
    for api in APIS:
        body = request_body(api, values)
        np.testing.assert_array_equal(body_values(api, body), values, strict=True)


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


def test_request_body_refuses_anything_but_one_float32_image() -> None:
    with pytest.raises(ValueError, match="float32"):
        request_body("v2", np.zeros((1, 1, 28, 28), dtype=np.float64))
    with pytest.raises(ValueError, match=r"\[1, C, H, W\]"):
        request_body("native", np.zeros((2, 1, 28, 28), dtype=np.float32))


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

"""The gate's decision at its own boundary: `reject = anomaly_score >= threshold`, compared in float32.

Every threshold here is derived from the score the service itself returns for a fixed input (the same session and
batch size, so the score is reproducible), then placed exactly on it, one float32 ULP either side, and between two
float32 values; through the card, the native override and the V2 override.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.service.conftest import clone_artifact

pytestmark = pytest.mark.anyio

ARRAY = (np.arange(28 * 28, dtype=np.float64).reshape(1, 28, 28) % 17 / 16).tolist()
NATIVE = "/v1/models/{}/predict"
V2 = "/v2/models/{}/infer"


def ulp_up(value: np.float32) -> float:
    return float(np.nextafter(value, np.float32(np.inf)))


def ulp_down(value: np.float32) -> float:
    return float(np.nextafter(value, np.float32(-np.inf)))


async def served_score(client, name: str) -> np.float32:  # type: ignore[no-untyped-def]
    response = await client.post(NATIVE.format(name), json={"instances": [{"array": ARRAY}]})
    assert response.status_code == 200
    score = np.float32(response.json()["predictions"][0]["anomaly_score"])
    assert 0.0 < score < 1.0  # a boundary inside the open interval, so both neighbours are valid thresholds
    return score


def v2_body(threshold: float) -> dict[str, object]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": np.ravel(ARRAY).tolist()}],
        "parameters": {"threshold": threshold},
        "outputs": [{"name": "reject"}, {"name": "anomaly_score"}],
    }


async def test_override_thresholds_at_and_one_ulp_either_side_of_the_score(serve) -> None:
    async with serve(allow_threshold_override=True) as (_, client):
        score = await served_score(client, "tiny")
        expectations = {float(score): True, ulp_down(score): True, ulp_up(score): False}
        # Halfway between the score and the next float32 up, as a float64: rounds to the score, so it rejects.
        halfway_below = float(score) + (ulp_up(score) - float(score)) * 0.49
        expectations[halfway_below] = True
        for threshold, reject in expectations.items():
            native = await client.post(
                NATIVE.format("tiny"), json={"instances": [{"array": ARRAY}], "threshold": threshold}
            )
            assert native.status_code == 200
            body = native.json()
            assert body["threshold"] == threshold
            assert body["predictions"][0]["anomaly_score"] == float(score)
            assert body["predictions"][0]["reject"] is reject, threshold
            v2 = await client.post(V2.format("tiny"), json=v2_body(threshold))
            assert v2.status_code == 200
            outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
            assert outputs == {"reject": [reject], "anomaly_score": [float(score)]}, threshold
            assert v2.json()["parameters"] == {"threshold": threshold}


async def test_card_thresholds_at_and_one_ulp_either_side_of_the_score(
    serve, tmp_path: Path, tiny_artifact: Path
) -> None:
    models = tmp_path / "boundary"
    clone_artifact(tiny_artifact, models, "probe", 1)
    async with serve(model_dir=models) as (_, client):
        score = await served_score(client, "probe")
    cases = [("at", float(score), True), ("below", ulp_down(score), True), ("above", ulp_up(score), False)]
    for name, threshold, _ in cases:
        clone_artifact(tiny_artifact, models, name, 1, threshold=threshold)
    async with serve(model_dir=models) as (_, client):
        for name, threshold, reject in cases:
            response = await client.post(NATIVE.format(name), json={"instances": [{"array": ARRAY}]})
            assert response.status_code == 200
            body = response.json()
            assert body["threshold"] == threshold
            assert body["predictions"][0]["reject"] is reject, name
            v2 = await client.post(V2.format(name), json={**v2_body(0.0), "parameters": {}})
            assert {o["name"]: o["data"] for o in v2.json()["outputs"]}["reject"] == [reject], name


async def test_each_instance_gets_its_own_decision(serve) -> None:
    instances = [{"array": ARRAY}, {"array": np.zeros((1, 28, 28)).tolist()}]
    async with serve(allow_threshold_override=True) as (_, client):
        probe = await client.post(NATIVE.format("tiny"), json={"instances": instances, "threshold": 0.0})
        scores = [np.float32(p["anomaly_score"]) for p in probe.json()["predictions"]]
        assert scores[0] != scores[1]
        threshold = float(max(scores))  # only the higher-scoring instance reaches the threshold
        response = await client.post(NATIVE.format("tiny"), json={"instances": instances, "threshold": threshold})
    assert [p["reject"] for p in response.json()["predictions"]] == [bool(s == max(scores)) for s in scores]
    assert [p["reject"] for p in probe.json()["predictions"]] == [True, True]

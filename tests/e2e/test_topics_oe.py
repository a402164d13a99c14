"""The committed text artifact, served: in-scope messages are accepted with their topic, out-of-scope ones are
rejected, the native API and V2 BYTES give the same numbers, and they equal the training side's run of the same
artifact (tokenizer and graph). The sentences are written here, not drawn from any data set."""

from __future__ import annotations

import numpy as np
import pytest

from service.settings import Settings
from tests.e2e.server import REPO
from tests.service.conftest import running
from training.artifact import load_artifact
from training.captures.retrain import newest_version
from training.text.config import load_text_config

pytestmark = pytest.mark.anyio

TOPICS_OE = newest_version(REPO / "models", "topics-oe")  # the version served by default
PREDICT = "/v1/models/topics-oe/predict"
IN_SCOPE = {  # sentence -> topic
    "Do you think artificial intelligence will ever become conscious?": "ai",
    "I feel sad today.": "emotion",
    "Who wrote Hamlet?": "trivia",
}
OUT_OF_SCOPE = [
    "Bonjour, je voudrais réserver une table pour deux personnes ce soir à vingt heures.",
    "Die Sitzung des Ausschusses wird auf Donnerstag um neun Uhr vertagt.",
    "Preheat the oven to 200 degrees and bake the lasagne for forty minutes.",
    "The quarterly dividend of 0.42 dollars per share is payable on March 15 to holders of record.",
    "我们明天早上八点在火车站见面吧。",
]


def settings() -> Settings:
    assert (TOPICS_OE / "card.json").is_file(), f"{TOPICS_OE} is missing: the committed text artifact is needed"
    return Settings(
        model_dir=TOPICS_OE.parent.parent, providers=["CPUExecutionProvider"], poll_interval_s=0,
        required_models=["topics-oe"], max_instances=64,
    )  # fmt: skip


async def test_in_scope_messages_are_accepted_with_their_topic_and_out_of_scope_ones_rejected() -> None:
    texts = [*IN_SCOPE, *OUT_OF_SCOPE]
    async with running(settings()) as (_, client):
        response = await client.post(PREDICT, json={"instances": [{"text": t} for t in texts]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for (text, topic), prediction in zip(IN_SCOPE.items(), predictions, strict=False):
        assert (prediction["label"], prediction["reject"]) == (topic, False), text
    for text, prediction in zip(OUT_OF_SCOPE, predictions[len(IN_SCOPE) :], strict=True):
        assert prediction["reject"] is True, (text, prediction)


async def test_native_v2_and_training_side_agree_on_the_committed_graph() -> None:
    texts = [*IN_SCOPE, *OUT_OF_SCOPE]
    expected = load_artifact(TOPICS_OE).run_texts(texts)
    async with running(settings()) as (_, client):
        native = (await client.post(PREDICT, json={"instances": [{"text": t} for t in texts]})).json()
        v2 = await client.post(
            "/v2/models/topics-oe/infer",
            json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]},
        )
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: np.asarray(o["data"], dtype=np.float64) for o in v2.json()["outputs"]}
    scores = np.array([p["anomaly_score"] for p in native["predictions"]])
    np.testing.assert_allclose(scores, expected["anomaly_score"], atol=1e-5)
    np.testing.assert_allclose(outputs["anomaly_score"], expected["anomaly_score"], atol=1e-5)
    np.testing.assert_allclose(outputs["kl_uniform"], expected["kl_uniform"], atol=1e-4)
    threshold = load_artifact(TOPICS_OE).card.threshold.value
    assert [p["reject"] for p in native["predictions"]] == list(expected["anomaly_score"] >= np.float32(threshold))


def test_the_committed_text_artifact_is_the_int8_graph_with_its_tokenizer() -> None:
    card = load_artifact(TOPICS_OE).card
    assert card.task == "text" and card.input.kind == "text" and card.input.max_length == 128
    assert card.evaluation["graph"]["quantization"].startswith("onnxruntime dynamic int8")
    assert (TOPICS_OE / "model.onnx").stat().st_size == card.evaluation["graph"]["int8_bytes"] < 30e6
    assert sorted(p.name for p in TOPICS_OE.iterdir()) == ["card.json", "model.onnx", "tokenizer.json"]
    # Trained by configs/topics-oe.toml: the card records the resolved sections, which must be the file's. A setting
    # added after the card was written is absent from it and must stand at its default in the file (it trains alike).
    config = load_text_config(REPO / "configs" / "topics-oe.toml")
    for section in ("net", "baseline", "oe"):
        recorded, expected = card.training[section], getattr(config, section).model_dump(mode="json")
        defaults = type(getattr(config, section))().model_dump(mode="json")
        assert recorded == {key: expected[key] for key in recorded}, section
        newer = set(expected) - set(recorded)
        assert {key: expected[key] for key in newer} == {key: defaults[key] for key in newer}, section
    assert card.training["data"]["in_distribution"] == config.data.in_distribution == "chatterbot-en"
    assert card.training["data"]["oe_corpus"] == config.data.oe_corpus == "default-wordnet"
    assert card.version == config.export.version

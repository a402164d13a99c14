"""Text export: the gate's outputs, ONNX against torch, dynamic shapes, int8 quantization and atomic publishing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.card import read_verified_card
from tests.training.text.conftest import (
    MAX_LENGTH,
    TEXT_LABELS,
    VAL_TEXTS,
    conformal_summary,
    make_text_gate,
    publish_tiny_text,
    random_ids,
)
from training.artifact import load_artifact, read_card, session_options, sha256_file
from training.calibrate import Threshold
from training.export import ArtifactExistsError
from training.text import export as export_module
from training.text.export import GraphRunner, max_abs_difference
from training.text.tokenize import TextTokenizer

OUTPUTS = ("logits", "probs", "kl_uniform", "anomaly_score", "confidence")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=session_options(), providers=["CPUExecutionProvider"])


def _torch_outputs(input_ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outputs = make_text_gate()(torch.from_numpy(input_ids), torch.from_numpy(mask))
    return {name: value.numpy() for name, value in zip(OUTPUTS, outputs, strict=True)}


def test_text_gate_outputs_follow_their_formulas(text_tokenizer: TextTokenizer) -> None:
    gate = make_text_gate(temperature=1.5)
    input_ids, mask = text_tokenizer(VAL_TEXTS)
    with torch.no_grad():
        logits, probs, kl, anomaly, confidence = gate(torch.from_numpy(input_ids), torch.from_numpy(mask))
        assert torch.equal(logits, gate.net(torch.from_numpy(input_ids), torch.from_numpy(mask)))
    assert logits.shape == probs.shape == (6, 3) and kl.shape == anomaly.shape == confidence.shape == (6,)
    assert torch.allclose(probs.sum(1), torch.ones(6), atol=1e-6)
    assert torch.allclose(probs, torch.softmax(logits / 1.5, dim=1), atol=1e-7)
    expected_kl = -math.log(3) - torch.log_softmax(logits, dim=1).mean(1)  # T = 1 posterior
    assert torch.allclose(kl, expected_kl, atol=1e-6)
    assert torch.allclose(anomaly, 1 / (1 + kl), atol=1e-7)
    assert torch.allclose(confidence, (probs.amax(1) - 1 / 3) / (1 - 1 / 3), atol=1e-7)
    assert bool((kl > 0).all()) and bool((anomaly < 1).all()) and bool(((confidence > 0) & (confidence <= 1)).all())


def test_fp32_graph_matches_torch_with_padding_and_a_one_token_text(
    tiny_text_artifact: Path, text_tokenizer: TextTokenizer
) -> None:
    path = tiny_text_artifact / "model.onnx"
    gate = make_text_gate()
    padded = max_abs_difference(gate, path, text_tokenizer, [*VAL_TEXTS, "a"])
    assert set(padded) == set(OUTPUTS) and max(padded.values()) < 1e-4
    assert text_tokenizer.encode(["a"]) == [[101, 1037, 102]]
    alone = max_abs_difference(gate, path, text_tokenizer, ["a"])  # shape (1, 3): one word and the specials
    assert max(alone.values()) < 1e-4


@pytest.mark.parametrize("shape", [(1, 3), (5, 40), (2, MAX_LENGTH), (7, 1)])
def test_the_graph_takes_any_batch_and_length(tiny_text_artifact: Path, shape: tuple[int, int]) -> None:
    if shape[1] < 3:
        input_ids, mask = np.full(shape, 101, dtype=np.int64), np.ones(shape, dtype=np.int64)
    else:
        input_ids, mask = random_ids(np.random.default_rng(shape[0]), shape)
    got = _session(tiny_text_artifact / "model.onnx").run(None, {"input_ids": input_ids, "attention_mask": mask})
    expected = _torch_outputs(input_ids, mask)
    for name, value in zip(OUTPUTS, got, strict=True):
        assert value.shape == expected[name].shape and value.shape[0] == shape[0], name
        assert np.max(np.abs(value - expected[name])) < 1e-4, name


@pytest.mark.slow
def test_quantized_publish_is_smaller_and_agrees_with_fp32(tmp_path: Path, text_tokenizer: TextTokenizer) -> None:
    fp32 = tmp_path / "fp32.onnx"
    export_module.export_text_onnx(make_text_gate(), MAX_LENGTH, fp32)
    served: dict[str, np.ndarray] = {}

    def summarize(run: GraphRunner) -> tuple[Threshold, dict[str, Any]]:
        served.update(run(VAL_TEXTS))
        return conformal_summary(run)

    directory = publish_tiny_text(tmp_path / "models", text_tokenizer, quantize=True, summarize=summarize)
    assert sorted(p.name for p in directory.iterdir()) == ["card.json", "model.onnx", "tokenizer.json"]
    graph = read_card(directory).evaluation["graph"]
    int8_bytes = (directory / "model.onnx").stat().st_size
    assert graph["int8_bytes"] == int8_bytes and graph["fp32_bytes"] == fp32.stat().st_size
    assert int8_bytes < 0.35 * graph["fp32_bytes"]  # the 30522 x 32 word embedding dominates: int8 is a quarter
    assert graph["quantization"].startswith("onnxruntime dynamic int8")
    assert set(graph["int8_vs_fp32_max_abs_diff"]) == set(OUTPUTS)

    texts = [*VAL_TEXTS, "hello world", "a", "the cat sat on the mat", "rockets and ovens"]
    artifact = load_artifact(directory)
    int8 = artifact.run_texts(texts)
    reference = export_module.run_text_session(_session(fp32), text_tokenizer, texts)
    assert int8["logits"].argmax(1).tolist() == reference["logits"].argmax(1).tolist()
    assert 0 < np.max(np.abs(int8["logits"] - reference["logits"])) < 0.5  # quantized: close, not identical
    assert np.max(np.abs(int8["anomaly_score"] - reference["anomaly_score"])) < 0.01
    assert np.max(np.abs(int8["probs"] - reference["probs"])) < 0.05
    # The summarize callback saw the served (int8) graph, not the fp32 one it was quantized from.
    for name in OUTPUTS:
        assert np.array_equal(served[name], artifact.run_texts(VAL_TEXTS)[name]), name


def test_publish_writes_graph_tokenizer_and_card(tiny_text_artifact: Path, text_tokenizer: TextTokenizer) -> None:
    directory = tiny_text_artifact
    assert directory.name == "1" and directory.parent.name == "tiny-text"
    assert sorted(p.name for p in directory.iterdir()) == ["card.json", "model.onnx", "tokenizer.json"]
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".tmp-")]
    assert (directory / "tokenizer.json").read_bytes() == text_tokenizer.path.read_bytes()
    raw = json.loads((directory / "card.json").read_text())
    assert raw["sha256"] == {
        "model.onnx": sha256_file(directory / "model.onnx"),
        "tokenizer.json": sha256_file(directory / "tokenizer.json"),
    }
    card = read_card(directory)
    assert card.task == "text" and card.labels == TEXT_LABELS and card.num_classes == 3
    assert card.input.kind == "text" and card.input.max_length == MAX_LENGTH and card.input.pad_token_id == 0
    assert card.temperature == 1.5
    gate_scores = load_artifact(directory).run_texts(VAL_TEXTS)["anomaly_score"]
    threshold, evaluation = conformal_summary(lambda texts: load_artifact(directory).run_texts(texts))
    assert card.threshold.value == threshold.value and card.threshold.acceptance_target == 0.5
    assert card.threshold.calibration_samples == 6 and card.threshold.calibration_split == "toy val"
    assert card.threshold.calibration_acceptance == float(np.mean(gate_scores < np.float32(threshold.value)))
    assert {k: v for k, v in card.evaluation.items() if k != "graph"} == evaluation
    graph = card.evaluation["graph"]
    assert "quantization" not in graph and graph["fp32_bytes"] == (directory / "model.onnx").stat().st_size
    assert max(graph["onnx_vs_torch_max_abs_diff"].values()) < 1e-4
    assert card.training == {"note": "random weights, for tests", "seed": 0}


def test_an_existing_version_is_refused_before_exporting(
    tmp_path: Path, tiny_text_artifact: Path, text_tokenizer: TextTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(tiny_text_artifact, tmp_path / "models" / "tiny-text" / "1")
    before = (tmp_path / "models" / "tiny-text" / "1" / "card.json").read_bytes()

    def no_export(*args: object) -> None:
        raise AssertionError("exported although the version exists")

    monkeypatch.setattr(export_module, "export_text_onnx", no_export)
    with pytest.raises(ArtifactExistsError, match=r"tiny-text/1 already exists; published versions are immutable"):
        publish_tiny_text(tmp_path / "models", text_tokenizer, version=1)
    assert (tmp_path / "models" / "tiny-text" / "1" / "card.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "models" / "tiny-text").iterdir()) == ["1"]


def _failing_summary(run: GraphRunner) -> tuple[Threshold, dict[str, Any]]:
    run(VAL_TEXTS)  # the graph runs; then the summary fails (a validation set that cannot be built, say)
    raise RuntimeError("summary failed")


def _infinite_threshold(run: GraphRunner) -> tuple[Threshold, dict[str, Any]]:
    _, evaluation = conformal_summary(run)
    return Threshold(math.inf, 0.5, 6, 1.0), evaluation


@pytest.mark.parametrize(
    ("summarize", "error", "message"),
    [(_failing_summary, RuntimeError, "summary failed"), (_infinite_threshold, ValueError, "must be finite, got inf")],
    ids=["summary-raises", "threshold-infinite"],
)
def test_a_failed_publish_leaves_neither_version_nor_temporary_dir(
    tmp_path: Path,
    tiny_text_artifact: Path,
    text_tokenizer: TextTokenizer,
    monkeypatch: pytest.MonkeyPatch,
    summarize: Any,
    error: type[Exception],
    message: str,
) -> None:
    def copy_export(gate: object, max_length: int, path: Path) -> None:  # the fixture's graph: same gate, no re-export
        shutil.copyfile(tiny_text_artifact / "model.onnx", path)

    monkeypatch.setattr(export_module, "export_text_onnx", copy_export)
    with pytest.raises(error, match=message):
        publish_tiny_text(tmp_path / "models", text_tokenizer, summarize=summarize)
    assert list((tmp_path / "models" / "tiny-text").iterdir()) == []


def test_a_graph_that_disagrees_with_torch_is_not_published(
    tmp_path: Path, tiny_text_artifact: Path, text_tokenizer: TextTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.onnx"  # the graph of a different net: ORT and torch disagree
    export_module.export_text_onnx(make_text_gate(seed=1), MAX_LENGTH, other)
    monkeypatch.setattr(export_module, "export_text_onnx", lambda gate, n, path: shutil.copyfile(other, path))
    with pytest.raises(RuntimeError, match=r"ONNX Runtime disagrees with torch by .* \(> 0\.0001\)"):
        publish_tiny_text(tmp_path / "models", text_tokenizer)
    assert list((tmp_path / "models" / "tiny-text").iterdir()) == []


def test_service_and_training_cards_agree_on_a_text_artifact(tiny_text_artifact: Path) -> None:
    service_card = read_verified_card(tiny_text_artifact, "tiny-text", 1)
    training_card = read_card(tiny_text_artifact)
    assert service_card.name == training_card.name == "tiny-text"
    assert service_card.version == training_card.version == 1
    assert service_card.task == training_card.task == "text"
    assert service_card.labels == training_card.labels == TEXT_LABELS
    assert service_card.num_classes == training_card.num_classes == 3
    assert service_card.input.kind == training_card.input.kind == "text"
    assert service_card.input.names == training_card.input.names == ("input_ids", "attention_mask")
    assert service_card.input.dtype == training_card.input.dtype == "int64"
    assert service_card.input.tokenizer == training_card.input.tokenizer == "tokenizer.json"
    assert service_card.input.max_length == training_card.input.max_length == MAX_LENGTH
    assert service_card.input.pad_token_id == training_card.input.pad_token_id == 0
    assert service_card.input.truncation == training_card.input.truncation
    assert service_card.outputs == training_card.outputs
    assert service_card.temperature == training_card.temperature == 1.5
    assert service_card.threshold.value == training_card.threshold.value
    assert service_card.threshold.acceptance_target == training_card.threshold.acceptance_target == 0.5
    assert service_card.sha256 == training_card.sha256
    assert set(service_card.sha256) == {"model.onnx", "tokenizer.json"}
    assert service_card.created_at == training_card.created_at


def test_run_texts_returns_input_order_despite_length_sorted_batches(tiny_text_artifact: Path) -> None:
    artifact = load_artifact(tiny_text_artifact)
    texts = [" ".join(["orbit"] * n) for n in (9, 1, 14, 3, 3, 6, 2)] + VAL_TEXTS
    together = artifact.run_texts(texts, batch_size=3)  # five batches, each of similar lengths
    alone = [artifact.run_texts([text]) for text in texts]
    for name in OUTPUTS:
        assert together[name].shape[0] == len(texts), name
        expected = np.concatenate([a[name] for a in alone])
        assert np.max(np.abs(together[name] - expected)) < 1e-5, name
    empty = artifact.run_texts([])
    assert set(empty) == set(OUTPUTS) and all(v.shape[0] == 0 for v in empty.values())


def test_the_smallest_max_length_exports(tmp_path: Path) -> None:
    """max_length = 3 (the config's minimum): the export example must fit the length range (it was 8 wide)."""
    path = tmp_path / "short.onnx"
    export_module.export_text_onnx(make_text_gate(), 3, path)
    input_ids = np.array([[101, 1037, 102], [101, 102, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=np.int64)
    got = _session(path).run(None, {"input_ids": input_ids, "attention_mask": mask})
    expected = _torch_outputs(input_ids, mask)
    for name, value in zip(OUTPUTS, got, strict=True):
        assert np.max(np.abs(value - expected[name])) < 1e-4, name

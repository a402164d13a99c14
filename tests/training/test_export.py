import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.artifacts import make_gate, publish_tiny
from training import export
from training.artifact import ArtifactError, load_artifact
from training.card import OUTPUT_NAMES


def test_published_artifact_matches_torch_gate(tiny_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    gate = make_gate()
    rng = np.random.default_rng(3)
    digits_like = (rng.random((20, 1, 28, 28)) > 0.8).astype(np.float32)
    noise = np.clip(rng.normal(0.5, 0.5, (17, 1, 28, 28)), 0, 1).astype(np.float32)
    for images in (digits_like, noise, np.ones((1, 1, 28, 28), np.float32)):
        outputs = artifact.run(images)
        with torch.no_grad():
            expected = gate(torch.from_numpy(images))
        for name, value in zip(OUTPUT_NAMES, expected, strict=True):
            assert outputs[name].shape == tuple(value.shape)
            assert np.max(np.abs(outputs[name] - value.numpy())) < 1e-4, name


def test_graph_outputs_are_consistent(tiny_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    out = artifact.run(np.random.default_rng(0).random((9, 1, 28, 28), dtype=np.float32))
    t = artifact.card.temperature
    probs = np.exp(out["logits"] / t) / np.exp(out["logits"] / t).sum(1, keepdims=True)
    np.testing.assert_allclose(out["probs"], probs, atol=1e-6)
    np.testing.assert_allclose(out["anomaly_score"], 1 / (1 + out["kl_uniform"]), atol=1e-6)
    np.testing.assert_allclose(out["confidence"], (probs.max(1) - 0.1) / 0.9, atol=1e-6)
    # KL[U || p] is of the T = 1 posterior (the paper's score), not of the temperature-scaled one (T = 1.7 here).
    z = out["logits"].astype(np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    np.testing.assert_allclose(out["kl_uniform"], -np.log(10) - log_p.mean(1), atol=1e-5)


def test_card_records_threshold_checksum_and_versions(tiny_artifact: Path) -> None:
    card = json.loads((tiny_artifact / "card.json").read_text())
    assert card["name"] == "tiny" and card["version"] == 1 and card["task"] == "image"
    assert card["threshold"]["acceptance_target"] == 0.95
    assert card["threshold"]["method"] == "conformal_quantile"
    assert card["anomaly_score"]["formula"] == "1 / (1 + kl_uniform)"
    assert set(card["frameworks"]) >= {"torch", "onnx", "onnxruntime", "python"}
    assert len(card["sha256"]["model.onnx"]) == 64
    assert max(card["evaluation"]["onnx_vs_torch_max_abs_diff"].values()) < 1e-4
    assert sorted(p.name for p in tiny_artifact.iterdir()) == ["card.json", "model.onnx"]


def test_existing_version_is_refused_and_next_version_is_chosen(tmp_path: Path) -> None:
    first = publish_tiny(tmp_path)
    with pytest.raises(export.ArtifactExistsError, match="immutable"):
        publish_tiny(tmp_path, version=1)
    second = publish_tiny(tmp_path)
    assert (first.name, second.name) == ("1", "2")


def test_failed_publish_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "max_abs_difference", lambda *a: {"logits": 1.0})
    with pytest.raises(RuntimeError, match="disagrees"):
        publish_tiny(tmp_path)
    assert list((tmp_path / "tiny").iterdir()) == []


def test_tampered_or_incomplete_artifacts_are_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_artifact, bad)
    with (bad / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(bad)

    (bad / "card.json").unlink()
    with pytest.raises(ArtifactError, match=r"no card\.json"):
        load_artifact(bad)

    shutil.rmtree(bad)
    shutil.copytree(tiny_artifact, bad)
    card = json.loads((bad / "card.json").read_text())
    card["temperature"] = -1
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="temperature"):
        load_artifact(bad)
    (bad / "card.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(bad)


def test_wrong_input_shape_is_a_clear_error(tiny_artifact: Path) -> None:
    with pytest.raises(ArtifactError, match=r"expects images of shape \(N, 1, 28, 28\)"):
        load_artifact(tiny_artifact).run(np.zeros((2, 3, 32, 32), np.float32))

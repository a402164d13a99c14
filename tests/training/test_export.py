import dataclasses
import json
import re
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


class _Linear(torch.nn.Module):
    """A fixed linear map of the flattened input: logits any test can recompute."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, features, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_the_image_gate_standardizes_each_channel_then_follows_the_formulas() -> None:
    # Its own gate, not the session's published one: three channels (a wrong broadcast of mean or std fails), four
    # classes, a temperature other than 1.
    mean, std, t = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0], 1.5
    net = _Linear(3 * 4 * 5, 4)
    gate = export.Gate(net, mean, std, t).eval()
    x = torch.rand(6, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, probs, kl, anomaly, confidence = gate(x)
        standardized = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        expected = net(standardized)
    assert logits.shape == probs.shape == (6, 4) and kl.shape == anomaly.shape == confidence.shape == (6,)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(probs, torch.softmax(expected / t, dim=1), atol=1e-6)
    expected_kl = -np.log(4) - torch.log_softmax(expected, dim=1).mean(1)  # of the T = 1 posterior
    assert torch.allclose(kl, expected_kl.float(), atol=1e-5)
    assert torch.allclose(anomaly, 1 / (1 + kl), atol=1e-6)
    assert torch.allclose(confidence, (probs.amax(1) - 0.25) / 0.75, atol=1e-6)


def test_the_graph_names_its_batch_dimension_and_uses_the_default_opset(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "model.onnx"
    export.export_onnx(make_gate(), (1, 28, 28), path)
    model = onnx.load(str(path))
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 1, 28, 28]
    assert {o.domain: o.version for o in model.opset_import}[""] == export.DEFAULT_OPSET


def test_a_stray_file_named_like_a_version_is_not_a_version(tmp_path: Path) -> None:
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "9").write_text("not a version directory")
    (tmp_path / "tiny" / "2").mkdir()
    assert export.next_version(tmp_path, "tiny") == 3


def test_a_pac_threshold_is_recorded_with_its_rule() -> None:
    from training.calibrate import pac_threshold

    threshold = pac_threshold(np.linspace(0.0, 1.0, 200), 0.9, 0.05)
    spec = export.threshold_spec(threshold, "val")
    assert spec.method == "pac_binomial" and spec.delta == 0.05 == threshold.delta
    assert spec.order_statistic == threshold.order_statistic is not None
    assert spec.promise == threshold.promise and "1 - delta" in spec.promise
    assert (spec.calibration_split, spec.calibration_samples) == ("val", 200)
    from training.calibrate import conformal_threshold

    conformal = export.threshold_spec(conformal_threshold(np.linspace(0.0, 1.0, 200), 0.9), "val")
    assert conformal.method == "conformal_quantile" and conformal.delta is None


def test_the_card_records_the_frameworks_by_name() -> None:
    assert set(export.framework_versions()) == {"python", "torch", "onnx", "onnxruntime", "numpy"}
    assert export.framework_versions()["torch"] == torch.__version__


def test_extra_files_are_written_checksummed_and_may_not_replace_the_graph_or_card(tmp_path: Path) -> None:
    import hashlib

    from tests import artifacts

    for reserved in (["model.onnx"], ["card.json", "model.onnx"]):
        with pytest.raises(ValueError, match=re.escape(f"extra files may not replace {reserved}")):
            publish_tiny(tmp_path, extra_files={name: b"x" for name in reserved})
    version = publish_tiny(tmp_path, extra_files={"report.md": b"# compared\n"})
    assert (version / "report.md").read_bytes() == b"# compared\n"
    text = (version / "card.json").read_text()
    assert text.startswith('{\n  "')  # indented by two, as every published card
    card = json.loads(text)
    assert card["sha256"]["report.md"] == hashlib.sha256(b"# compared\n").hexdigest()
    assert set(card["evaluation"]) == {"onnx_vs_torch_max_abs_diff"}
    assert card["training"] == {"note": "random weights, for tests"}
    assert card["frameworks"] == export.framework_versions()
    assert card["created_at"].endswith("Z") and "." not in card["created_at"]  # UTC, whole seconds
    assert card["labels"] == artifacts.LABELS


def test_a_non_finite_threshold_or_a_disagreement_at_the_tolerance_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.calibrate import conformal_threshold

    bad = dataclasses.replace(conformal_threshold(np.random.default_rng(0).random(100), 0.95), value=float("nan"))
    with pytest.raises(ValueError, match="threshold must be finite, got nan"):
        publish_tiny(tmp_path, threshold=bad)
    monkeypatch.setattr(export, "max_abs_difference", lambda *a: {"logits": 1e-4})  # exactly the tolerance
    with pytest.raises(RuntimeError, match="disagrees"):
        publish_tiny(tmp_path)


def test_a_version_that_appears_while_publishing_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def racing_rename(source: Path, target: Path) -> None:
        Path(target).mkdir(parents=True)  # another publisher got there first
        (Path(target) / "card.json").write_text("{}")
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(export.os, "rename", racing_rename)
    with pytest.raises(export.ArtifactExistsError, match=r"tiny/1 appeared while publishing: \[Errno 39\]"):
        publish_tiny(tmp_path)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1"]  # the staging copy is gone

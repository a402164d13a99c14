"""The pipeline chooses everything without test data: the test split is sealed and no test anomaly set is loaded."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.artifact import load_artifact
from training.cli import main
from training.config import load_config
from training.data import registry
from training.data.base import SealedImageSet
from training.image.anomalies.validation_sets import DEFAULT_VALIDATION_SET_NAMES
from training.pipeline import prepare


def _tiny_digits(path: Path) -> Path:
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):  # a bright bar whose row encodes the class: learnable in one epoch
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
        return images, labels

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(300), split(120), split(40)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def forbid_test_anomalies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loader of a test anomaly set raises, so a pipeline that touched one would fail."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pipeline loaded a test anomaly set")

    for name in list(registry.NOISE_GENERATORS):
        monkeypatch.setitem(registry.NOISE_GENERATORS, name, refuse)
    for name in ("negative_images", "load_real_anomalies", "real_set_images"):
        monkeypatch.setattr(registry, name, refuse)


def _argv(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    np.save(tmp_path / "pool.npy", np.random.default_rng(1).integers(0, 256, size=(200, 28, 28), dtype=np.uint8))
    return [
        "pipeline",
        "--set", f"data.in_distribution='npz:{data}'",
        "--set", f"data.outlier_pool='npy:{tmp_path / 'pool.npy'}'",
        "--set", "data.val_anomaly_samples=60",
        "--set", "net.arch='convnet'", "--set", "net.standardize=false",
        "--set", "baseline.epochs=1", "--set", "baseline.batch_size=50", "--set", "baseline.lr=0.05",
        "--set", "oe.epochs=1", "--set", "oe.batch_size=50",
        "--set", "calibration.threshold_method='pac'",
        "--set", f"run.run_dir='{tmp_path / 'run'}'",
        "--set", f"export.models_dir='{tmp_path / 'models'}'",
        "--set", "export.name='tiny-oe'", "--set", "export.baseline_name='tiny-baseline'",
        *extra,
    ]  # fmt: skip


def test_prepare_seals_the_test_split(tmp_path: Path) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    cfg = load_config(None, [f"data.in_distribution='npz:{data}'", f"run.run_dir='{tmp_path / 'run'}'"])
    ctx = prepare(cfg, "test")
    assert isinstance(ctx.data.test, SealedImageSet) and len(ctx.data.test) == 40
    assert len(ctx.data.val) == 120


@pytest.mark.slow
def test_pipeline_publishes_from_validation_data_alone(
    tmp_path: Path, forbid_test_anomalies: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    assert main(_argv(tmp_path, data)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [str(tmp_path / "models" / "tiny-baseline" / "1"), str(tmp_path / "models" / "tiny-oe" / "1")]
    assert out[3].startswith("tiny-oe/1: val accuracy ") and "val anomaly sets: mean AUROC" in out[3]
    for name in ("tiny-baseline", "tiny-oe"):
        card = load_artifact(tmp_path / "models" / name / "1").card
        assert card.evaluation["split"] == "val"
        assert set(card.evaluation["val_anomalies"]) == set(DEFAULT_VALIDATION_SET_NAMES)
        assert not any("test" in key for key in card.evaluation)  # no test figure can come from the pipeline
        assert card.threshold.method == "pac_binomial" and card.threshold.delta == 0.05
        assert card.threshold.calibration_samples == 120
        assert card.training["data"]["val_fraction"] == 0.1  # evaluate rebuilds the same split from it
        assert card.evaluation["val_samples"] == 120 and 0.0 <= card.evaluation["val_accuracy"] <= 1.0


def test_pipeline_refuses_a_test_anomaly_set_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    assert main(_argv(tmp_path, data, "--set", "data.val_anomalies=['gaussian']")) == 2
    assert "'gaussian' is not a validation anomaly set" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_refuses_a_changed_config_unless_forced_and_export_keeps_the_record(tmp_path: Path) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    base = [f"data.in_distribution='npz:{data}'", f"run.run_dir='{tmp_path / 'run'}'"]
    record = tmp_path / "run" / "config.json"
    prepare(load_config(None, base), "first")
    prepare(load_config(None, [*base, "run.threads=1"]), "resume", resume=True)  # speed only: allowed
    original = record.read_text()
    changed = load_config(None, [*base, "oe.epochs=3", "data.outlier_pool='npy:/x.npy'"])
    with pytest.raises(ValueError, match=r"--resume under a changed config \(data\.outlier_pool: 'default' -> "):
        prepare(changed, "resume", resume=True)
    with pytest.raises(ValueError, match=r"oe\.epochs: 5 -> 3.*pass --force"):
        prepare(changed, "resume", resume=True)
    prepare(changed, "export", record=False)  # export: the run's record stays as the run wrote it
    assert record.read_text() == original
    prepare(changed, "resume", resume=True, force=True)
    assert json.loads(record.read_text())["oe"]["epochs"] == 3


def test_cli_resume_with_a_changed_config_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tiny_digits(tmp_path / "digits.npz")
    argv = ["train", "--set", f"data.in_distribution='npz:{data}'", "--set", f"run.run_dir='{tmp_path / 'run'}'"]
    prepare(load_config(None, argv[2::2]), "first")
    assert main([*argv, "--resume", "--set", "baseline.lr=0.5"]) == 2
    assert "baseline.lr: 0.1 -> 0.5" in capsys.readouterr().err


def test_validate_recomputes_an_image_cards_validation_figures(
    forbid_test_anomalies: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate` on the committed default artifact: the same seed and sample count as the pipeline give the card's
    own figures; the test split stays sealed and no test anomaly set is read."""
    artifact = Path(__file__).resolve().parents[2] / "models" / "mnist-oe" / "2"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["validate", "--artifact", str(artifact), "--sets", "val-mirror", "val-jigsaw"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "| artifact | val accuracy | val-mirror AUROC / FPR95 / accepted | val-jigsaw AUROC / FPR95 / accepted | "
        "mean AUROC / FPR95 / accepted |"
    )
    card = load_artifact(artifact).card
    cells = lines[2].split(" | ")
    assert cells[0].startswith("| mnist-oe/2 (")
    assert cells[1] == f"{100 * card.evaluation['val_accuracy']:.2f}"
    keys = ("auroc", "fpr95", "accepted_fraction")
    figures = [card.evaluation["val_anomalies"][name] for name in ("val-mirror", "val-jigsaw")]
    for cell, figure in zip(cells[2:4], figures, strict=True):
        assert cell == " / ".join(f"{100 * figure[k]:.2f}" for k in keys)
    assert cells[4].rstrip(" |") == " / ".join(f"{50 * (figures[0][k] + figures[1][k]):.2f}" for k in keys)
    assert main(["validate", "--artifact", str(artifact), "--sets", "val-chars"]) == 2
    assert "mnist-oe/2 is an image artifact: val-chars are text validation sets" in capsys.readouterr().err


@pytest.mark.slow
def test_held_out_classes_are_recorded_and_validated(
    tmp_path: Path, forbid_test_anomalies: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Digits held out of training (`data.held_out_classes`) are the `val-heldout-classes` set: in the card's
    validation figures, recorded in its data, and rebuilt from the card alone by `validate`."""
    data = _tiny_digits(tmp_path / "digits.npz")
    extra = ["--set", "data.held_out_classes=['8', '9']", "--set", "data.val_anomalies=['val-heldout-classes']"]
    assert main(_argv(tmp_path, data, *extra)) == 0
    artifact = tmp_path / "models" / "tiny-oe" / "1"
    card = load_artifact(artifact).card
    assert card.labels == [str(d) for d in range(8)] and card.training["data"]["held_out_classes"] == ["8", "9"]
    assert card.training["data"]["val_samples"] == 96  # 120 validation digits less the 24 eights and nines
    held = card.evaluation["val_anomalies"]["val-heldout-classes"]
    capsys.readouterr()
    assert main(["validate", "--artifact", str(artifact), "--sets", "val-heldout-classes", "--samples", "60"]) == 0
    cells = capsys.readouterr().out.splitlines()[2].split(" | ")
    recomputed = [float(x) for x in cells[2].split(" / ")]
    # Same images and threshold; a one-epoch net has near-ties that batch composition may reorder (<= 0.1 point).
    expected = [100 * held[k] for k in ("auroc", "fpr95", "accepted_fraction")]
    assert recomputed == pytest.approx(expected, abs=0.1)

"""Evaluation end to end on tiny random-weight artifacts and small in-memory data sets (npz / npy specs)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.artifacts import publish_tiny
from training.artifact import ArtifactError, load_artifact
from training.cli import main
from training.data.base import DataError, as_float
from training.data.registry import load_anomalies, load_in_distribution
from training.evaluation.evaluate import (
    CONFIDENCE_METHODS,
    SCORE_NAMES,
    SERVED_SCORE,
    Evaluation,
    EvaluationConfig,
    EvaluationError,
    Spread,
    evaluate,
)

TEST_IMAGES = 200  # -> 40 anomalies per draw at 1:5
DRAWS = 3
FIGURES = ("roc.png", "histograms.png", "histograms_baseline.png", "reliability.png", "risk_coverage.png")


def _digits_like(rng: np.random.Generator, n: int, size: int = 28) -> np.ndarray:
    images = np.zeros((n, 1, size, size), np.uint8)
    images[:, :, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = rng.integers(128, 256, (n, 1, 1, 1))
    return images


def _write_npz(path: Path, size: int = 28) -> str:
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        f"{key}_{split}": value
        for split, n in (("train", 50), ("val", 50), ("test", TEST_IMAGES))
        for key, value in (("x", _digits_like(rng, n, size)), ("y", rng.integers(0, 10, n)))
    }
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    root = tmp_path_factory.mktemp("evaluate")
    small_set = root / "small.npy"
    np.save(small_set, np.random.default_rng(1).random((50, 28, 28)).astype(np.float32))  # NHW, fewer than 3 draws
    return {
        "spec": _write_npz(root / "digits.npz"),
        "baseline": publish_tiny(root / "models", name="tiny-baseline", seed=1),
        "small_set": f"npy:{small_set}",
        "root": root,
    }


@pytest.fixture(scope="module")
def evaluation(tiny_artifact: Path, workspace: dict[str, Path | str]) -> Evaluation:
    config = EvaluationConfig(
        anomalies=("gaussian", "negative", str(workspace["small_set"])),
        draws=DRAWS,
        seed=3,
        in_distribution=str(workspace["spec"]),
    )
    return evaluate(tiny_artifact, config, compare=Path(workspace["baseline"]))


def test_gate_numbers_match_the_graph_run_directly(evaluation: Evaluation, tiny_artifact: Path) -> None:
    artifact = load_artifact(tiny_artifact)
    threshold = np.float32(artifact.card.threshold.value)
    data = load_in_distribution(evaluation.in_distribution, seed=evaluation.data_seed)
    test_scores = artifact.run(as_float(data.test.images))["anomaly_score"]
    assert evaluation.primary.test_acceptance == float(np.mean(test_scores < threshold))
    gaussian = load_anomalies("gaussian", data, n=(TEST_IMAGES // 5) * DRAWS, seed=3)
    pool_scores = artifact.run(as_float(gaussian))["anomaly_score"]
    assert evaluation.primary.sets["gaussian"].accepted_fraction == float(np.mean(pool_scores < threshold))


def test_draws_follow_the_one_to_five_protocol(evaluation: Evaluation) -> None:
    assert evaluation.test_samples == TEST_IMAGES
    sets = evaluation.primary.sets
    assert [s.draw_samples for s in sets.values()] == [40, 40, 40]
    assert (sets["gaussian"].pool_samples, sets["gaussian"].disjoint_draws) == (120, True)
    small = sets[str(evaluation.config.anomalies[2])]
    assert (small.pool_samples, small.disjoint_draws) == (50, False)  # the whole set, re-drawn each time
    for result in (evaluation.primary, evaluation.baseline):
        assert result is not None
        for s in result.sets.values():
            for score in SCORE_NAMES:
                for spread in vars(s.detection[score]).values():
                    assert len(spread.values) == DRAWS
                    assert all(0.0 <= v <= 1.0 for v in spread.values)
                    assert spread.mean == pytest.approx(statistics.fmean(spread.values), abs=1e-12)
                    assert spread.std == pytest.approx(statistics.pstdev(spread.values), abs=1e-12)


def test_served_score_ranks_like_kl_and_artifact_confidence_is_t_plus_rescaling(evaluation: Evaluation) -> None:
    for s in evaluation.primary.sets.values():
        # 1 / (1 + KL) is monotone in KL: equal AUROC up to float32 rounding ties.
        assert s.detection[SERVED_SCORE].auroc.mean == pytest.approx(s.detection["kl_uniform"].auroc.mean, abs=0.01)
        artifact, rescaled = s.calibration["artifact"], s.calibration["temperature_rescaled"]
        assert artifact.rms.mean == pytest.approx(rescaled.rms.mean, abs=1e-5)


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_report_metrics_and_figures(
    tiny_artifact: Path, workspace: dict[str, Path | str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(workspace["root"]) / "report"
    code, stdout, stderr = _run_cli(
        ["--artifact", str(tiny_artifact), "--compare", str(workspace["baseline"]), "--anomalies", "gaussian",
         "blobs", "--in-distribution", str(workspace["spec"]), "--draws", "2", "--recall", "90", "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    assert "mean FPR90" in stdout and str(out / "report.md") in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["recall"] == 0.9 and metrics["config"]["draws"] == 2
    assert metrics["in_distribution"]["test_samples"] == TEST_IMAGES
    primary = metrics["artifacts"]["primary"]
    assert metrics["artifacts"]["baseline"]["name"] == "tiny-baseline"
    assert primary["threshold"]["value"] == load_artifact(tiny_artifact).card.threshold.value  # exact, not rounded
    assert set(primary["anomaly_sets"]) == {"gaussian", "blobs"}
    blobs = primary["anomaly_sets"]["blobs"]
    assert set(blobs["detection"]) == set(SCORE_NAMES)
    assert set(blobs["calibration"]) == set(CONFIDENCE_METHODS)
    assert set(blobs["detection"][SERVED_SCORE]) == {"auroc", "aupr", "fpr"}
    assert len(blobs["detection"][SERVED_SCORE]["fpr"]["values"]) == 2
    per_set = [s["detection"][SERVED_SCORE]["auroc"]["mean"] for s in primary["anomaly_sets"].values()]
    assert primary["mean"]["detection"][SERVED_SCORE]["auroc"] == pytest.approx(np.mean(per_set), abs=1e-6)
    assert 0.0 <= primary["test"]["acceptance_at_threshold"] <= 1.0
    assert primary["selective"]["pooled_samples"] == TEST_IMAGES + TEST_IMAGES // 5
    report = (out / "report.md").read_text()
    for heading in ("## Detection", "## Baseline vs +OE", "## Scores side by side", "## The gate", "## Calibration",
                    "## Selective prediction", "## Figures", "## Conventions"):  # fmt: skip
        assert heading in report
    table_1 = "| Anomaly set | FPR90 Baseline | FPR90 +OE | AUROC Baseline | AUROC +OE | AUPR Baseline | AUPR +OE |"
    assert table_1 in report
    assert "off-by-one" in report and "1:5" in report
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
        assert f"({name})" in report


@pytest.fixture
def bad_artifacts(tiny_artifact: Path, tmp_path: Path) -> dict[str, Path]:
    tampered, bad_card = tmp_path / "tampered", tmp_path / "bad_card"
    shutil.copytree(tiny_artifact, tampered)
    shutil.copytree(tiny_artifact, bad_card)
    with (tampered / "model.onnx").open("ab") as f:
        f.write(b"\0")
    (bad_card / "card.json").write_text("{not json")
    return {"tampered": tampered, "bad_card": bad_card}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered", "sha256 mismatch"),
        ("bad_card", "not valid JSON"),
        ("unknown_set", "unknown anomaly set 'gausian' (did you mean 'gaussian'?)"),
        ("bad_npy", "no channel axis of size 1 or 3"),
        ("wrong_size", "images are 1x8x8, the artifact expects 1x28x28"),
        ("no_spec", "the card names no in-distribution data; pass --in-distribution"),
    ],
)
def test_bad_input_is_one_clear_line(
    case: str, message: str, tiny_artifact: Path, workspace: dict[str, Path | str],
    bad_artifacts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    artifact, anomalies, spec = tiny_artifact, "gaussian", str(workspace["spec"])
    if case in bad_artifacts:
        artifact = bad_artifacts[case]
    elif case == "unknown_set":
        anomalies = "gausian"
    elif case == "bad_npy":
        np.save(tmp_path / "bad.npy", np.zeros((4, 5, 8, 8), np.uint8))
        anomalies = f"npy:{tmp_path / 'bad.npy'}"
    elif case == "wrong_size":
        spec = _write_npz(tmp_path / "small.npz", size=8)
    args = ["--artifact", str(artifact), "--anomalies", anomalies, "--out", str(tmp_path / "out"), "--draws", "1"]
    if case != "no_spec":
        args += ["--in-distribution", spec]
    code, _, stderr = _run_cli(args, capsys)
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_errors_are_value_errors_the_cli_catches() -> None:
    for error in (ArtifactError, DataError, EvaluationError):
        assert issubclass(error, ValueError)


def test_incomparable_artifacts_are_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_artifact, other)
    card = json.loads((other / "card.json").read_text())
    card["labels"] = [f"c{i}" for i in range(10)]
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(EvaluationError, match="cannot compare"):
        evaluate(tiny_artifact, EvaluationConfig(in_distribution="mnist"), compare=other)


def test_spread_is_the_mean_and_population_std_of_its_values() -> None:
    # 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum to 32, population variance 32 / 8 = 4.
    spread = Spread.of([2, 4, 4, 4, 5, 5, 7, 9])
    assert (spread.mean, spread.std, spread.values) == (5.0, 2.0, (2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0))
    assert Spread.of([0.25]) == Spread(0.25, 0.0, (0.25,))


def test_anomaly_sets_read_from_the_training_data_are_flagged(tmp_path: Path) -> None:
    from training.evaluation.evaluate import same_source_warnings

    data = tmp_path / "shapes"
    (data / "circle").mkdir(parents=True)
    warnings = same_source_warnings(
        f"imagefolder:{data}",
        [f"imagefolder:{data / 'circle'}", f"imagefolder:{data}", f"npy:{tmp_path}/x.npy", "gaussian"],
    )
    assert len(warnings) == 2
    assert warnings[0].startswith(f"anomaly set imagefolder:{data / 'circle'} is read from the in-distribution data")
    assert same_source_warnings("mnist", [f"imagefolder:{data}"]) == []
    assert same_source_warnings(f"csv:{tmp_path}/t.csv", [f"text:{tmp_path}/t.csv"]) != []

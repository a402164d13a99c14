"""`validate --acceptance`: thresholds fitted on the validation split for a target, and what they accept."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.artifact import load_artifact
from training.cli import main
from training.data.base import as_float
from training.data.registry import load_anomalies
from training.evaluation.validate import accepted_at_targets, threshold_for_acceptance, validation_run

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("target", "threshold"), [(0.5, 0.3), (0.6, 0.4), (0.75, 0.4), (0.25, 0.2), (0.01, 0.2), (1.0, math.inf)]
)
def test_the_threshold_accepts_the_ceil_target_n_lowest_validation_scores(target: float, threshold: float) -> None:
    val = np.array([0.4, 0.1, 0.3, 0.2])
    assert threshold_for_acceptance(val, target) == threshold
    accepted = np.mean(val < threshold)  # reject = score >= threshold, as the gate
    assert accepted >= target and accepted - target < 1 / len(val)


def test_accepted_share_counts_a_score_at_the_threshold_as_rejected() -> None:
    val = np.array([0.1, 0.2, 0.3, 0.4])
    at = accepted_at_targets(val, np.array([0.05, 0.3, 0.35, 0.5]), [1.0, 0.75, 0.5])
    assert at == {1.0: (math.inf, 1.0), 0.75: (0.4, 0.75), 0.5: (0.3, 0.25)}
    assert accepted_at_targets(val, np.array([0.2]), [0.25]) == {0.25: (0.2, 0.0)}


def test_cli_prints_a_table_per_artifact_and_set_recomputed_independently() -> None:
    artifact_dir = REPO / "models" / "mnist-oe" / "2"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["validate", "--artifact", str(artifact_dir), "--sets", "val-rotate", "--samples", "300"]
        assert main([*argv, "--acceptance", "0.95", "0.8"]) == 0
    lines = out.getvalue().splitlines()
    start = lines.index("")  # the acceptance table follows the detection table after a blank line
    assert lines[start + 1] == "| artifact | set | threshold / accepted at 95% | threshold / accepted at 80% |"
    cells = lines[start + 3].strip(" |").split(" | ")
    assert cells[0].startswith("mnist-oe/2 (") and cells[1] == "val-rotate"
    artifact = load_artifact(artifact_dir)
    data, val = validation_run(artifact)
    rotated = artifact.run(as_float(load_anomalies("val-rotate", data, n=300, seed=0)))["anomaly_score"]
    ranked = np.sort(val["anomaly_score"])
    for cell, target in zip(cells[2:], (0.95, 0.8), strict=True):
        threshold = ranked[math.ceil(target * len(ranked))]
        assert cell == f"{threshold:.4f} / {100 * np.mean(rotated < threshold):.2f}"
    assert len(lines) == start + 4


def test_each_row_names_its_own_path_when_two_artifacts_score_alike(tmp_path: Path) -> None:
    """Two copies of one artifact give equal figures; each row still names the path it scored."""
    original = REPO / "models" / "mnist-oe" / "2"
    copy = tmp_path / "mnist-oe" / "2"
    shutil.copytree(original, copy)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["validate", "--artifact", str(original), "--artifact", str(copy), "--sets", "val-rotate"]
        assert main([*argv, "--samples", "50", "--acceptance", "0.9"]) == 0
    lines = out.getvalue().splitlines()
    rows, at_targets = lines[2:4], lines[7:9]
    for pair in (rows, at_targets):
        assert pair[0].startswith(f"| mnist-oe/2 (`{original}`) |") and pair[1].startswith(f"| mnist-oe/2 (`{copy}`) |")
        assert pair[0].split(") |", 1)[1] == pair[1].split(") |", 1)[1]  # the same figures


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.2"])
def test_acceptance_targets_outside_zero_one_are_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--artifact", "x", "--acceptance", bad])
    assert f"an acceptance target is a share in (0, 1], not {bad}" in capsys.readouterr().err

"""The report's account of how the twins were trained and whether they compare at equal accuracy."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from training.evaluation.evaluate import ArtifactResult
from training.evaluation.report_sections import twin_training, twins_section


def _result(training: dict[str, Any], accuracy: float) -> ArtifactResult:
    return cast(ArtifactResult, SimpleNamespace(artifact=SimpleNamespace(card=SimpleNamespace(training=training)),
                                                test_accuracy=accuracy))  # fmt: skip


def test_each_stage_is_told_with_its_epochs() -> None:
    assert twin_training({"stage": "baseline", "baseline": {"epochs": 20}}) == "20 baseline epochs"
    oe = {"stage": "oe", "baseline": {"epochs": 6}, "oe": {"epochs": 5}}
    assert twin_training(oe) == "6 baseline epochs, then 5 OE epochs"
    matched = {"stage": "matched", "baseline": {"epochs": 6}, "oe": None, "matched_fine_tune": {"epochs": 4}}
    assert twin_training(matched).startswith("6 baseline epochs, then 4 epochs of the OE stage's schedule")
    assert "differs from +OE by the OE term only" in twin_training(matched)
    assert twin_training({"note": "random weights"}) == "not recorded in the card"


def test_the_twins_line_gives_both_accuracies_and_their_difference() -> None:
    baseline = _result({"stage": "matched", "baseline": {"epochs": 6}, "matched_fine_tune": {"epochs": 6}}, 0.8189)
    primary = _result({"stage": "oe", "baseline": {"epochs": 6}, "oe": {"epochs": 6}}, 0.8071)
    line, blank = twins_section(baseline, primary)
    assert blank == ""
    assert line.startswith("Training: Baseline = 6 baseline epochs, then 6 epochs of the OE stage's")
    assert "; +OE = 6 baseline epochs, then 6 OE epochs. " in line
    assert line.endswith("Test accuracy: Baseline 81.89%, +OE 80.71% (-1.18 points).")

"""Metric tests on small hand-computed cases (anomalies positive, higher score = more anomalous)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    CalibrationErrors,
    DetectionMetrics,
    adaptive_bins,
    aupr,
    auroc,
    calibration_errors,
    detection_figures,
    detection_metrics,
    fpr_at_recall,
    reliability_bins,
    risk_coverage,
    roc_curve,
    selective_risk,
    soft_f1,
)


def _labels_and_scores(out_scores: list[float], in_scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    is_anomaly = np.r_[np.ones(len(out_scores), dtype=bool), np.zeros(len(in_scores), dtype=bool)]
    return is_anomaly, np.array(out_scores + in_scores, dtype=np.float64)


# --- detection ---------------------------------------------------------------------------------------------------


def test_perfect_separation() -> None:
    result = detection_metrics(np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8]))
    assert result == DetectionMetrics(auroc=1.0, aupr=1.0, fpr=0.0, recall_level=0.95)


def test_perfectly_wrong_ranking() -> None:
    # Anomalies score lowest. PR points: t=0.1 -> P=1/4, R=1/2; t=0.0 -> P=2/5, R=1. AP = 0.5/4 + 0.5*2/5.
    is_anomaly, scores = _labels_and_scores([0.0, 0.1], [0.5, 0.6, 0.7])
    assert auroc(is_anomaly, scores) == 0.0
    assert aupr(is_anomaly, scores) == pytest.approx(0.325, abs=1e-15)
    assert fpr_at_recall(is_anomaly, scores) == 1.0


def test_ties_count_half_and_collapse_thresholds() -> None:
    # Pairs (anomaly, in): (3,2)=1 (3,1)=1 (2,2)=1/2 (2,1)=1 (2,2)=1/2 (2,1)=1 -> AUROC = 5/6.
    # PR: t=3 -> P=1, R=1/3; t=2 -> P=3/4, R=1 (ties enter together). AP = 1/3 + 2/3 * 3/4 = 5/6.
    # Recall 0.95 is closest to the full-recall point t=2, which flags 1 of 2 in-distribution inputs.
    is_anomaly, scores = _labels_and_scores([3.0, 2.0, 2.0], [2.0, 1.0])
    assert auroc(is_anomaly, scores) == pytest.approx(5 / 6, abs=1e-15)
    assert aupr(is_anomaly, scores) == pytest.approx(5 / 6, abs=1e-15)
    assert fpr_at_recall(is_anomaly, scores) == 0.5


def test_all_scores_tied() -> None:
    is_anomaly, scores = _labels_and_scores([1.0], [1.0] * 5)
    assert auroc(is_anomaly, scores) == 0.5
    assert aupr(is_anomaly, scores) == pytest.approx(1 / 6, abs=1e-15)  # the base rate
    assert fpr_at_recall(is_anomaly, scores) == 1.0


def test_random_scores_give_chance_auroc() -> None:
    rng = np.random.default_rng(0)
    is_anomaly = rng.random(20_000) < 1 / 6
    scores = rng.normal(size=20_000)
    assert auroc(is_anomaly, scores) == pytest.approx(0.5, abs=0.02)
    assert aupr(is_anomaly, scores) == pytest.approx(float(is_anomaly.mean()), abs=0.02)
    assert fpr_at_recall(is_anomaly, scores) == pytest.approx(0.95, abs=0.02)


def test_auroc_is_antisymmetric_in_the_score_sign() -> None:
    is_anomaly, scores = _labels_and_scores([3.0, 2.0, 2.0, 0.5], [2.0, 1.0, 0.5])
    assert auroc(is_anomaly, scores) + auroc(is_anomaly, -scores) == pytest.approx(1.0, abs=1e-15)


def test_known_fpr_at_recall_levels() -> None:
    # 20 anomalies scored 1..20; in-distribution scores 0, 0, 5.5, 10.5, 25.
    # 95% recall = 19 anomalies flagged at t = 2, which also flags 5.5, 10.5, 25: FPR = 3/5.
    # 50% recall: t = 11 and t = 10.5 both flag 10 anomalies; the lower t also flags 10.5: FPR = 2/5.
    # 99% is closest to full recall (t = 1): 3/5.
    is_anomaly, scores = _labels_and_scores([float(s) for s in range(1, 21)], [0.0, 0.0, 5.5, 10.5, 25.0])
    assert fpr_at_recall(is_anomaly, scores, 0.95) == 0.6
    assert fpr_at_recall(is_anomaly, scores, 0.5) == 0.4
    assert fpr_at_recall(is_anomaly, scores, 0.99) == 0.6


def test_fpr_at_recall_takes_the_lowest_threshold_of_equal_recall_like_the_reference() -> None:
    # Anomalies 1..20, in-distribution 0.5, 1.5, ..., 9.5. Both t = 2 and t = 1.5 flag 19 anomalies (recall 0.95);
    # the reference (and we) take the lower one, t = 1.5, which flags 9 of 10 in-distribution inputs, not 8.
    is_anomaly, scores = _labels_and_scores([float(s) for s in range(1, 21)], [i + 0.5 for i in range(10)])
    assert fpr_at_recall(is_anomaly, scores, 0.95) == 0.9


def test_fpr_at_recall_picks_the_closest_recall_not_at_least() -> None:
    # Recall 1/3 at t = 3 (no false positive), 2/3 at t = 2 (flags the tied in-distribution 2), 1 at t = 1.
    # 0.4 is closest to 1/3: FPR 0, although an "at least 40%" rule would take t = 2 and give 1/2.
    is_anomaly, scores = _labels_and_scores([3.0, 2.0, 1.0], [2.0, 0.0])
    assert fpr_at_recall(is_anomaly, scores, 0.4) == 0.0
    assert fpr_at_recall(is_anomaly, scores, 0.6) == 0.5


def test_roc_curve_points_and_area() -> None:
    # Same tied case as above: thresholds 3, 2, 1 give (FPR, TPR) = (0, 1/3), (1/2, 1), (1, 1).
    is_anomaly, scores = _labels_and_scores([3.0, 2.0, 2.0], [2.0, 1.0])
    fpr, tpr = roc_curve(is_anomaly, scores)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, [0.0, 1 / 3, 1.0, 1.0], rtol=0, atol=1e-15)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(is_anomaly, scores), abs=1e-15)


@pytest.mark.parametrize(
    ("is_anomaly", "scores", "message"),
    [
        ([1, 1], [0.1, 0.2], "both anomalies and in-distribution"),
        ([0, 0], [0.1, 0.2], "both anomalies and in-distribution"),
        ([0, 1], [0.1], "entries"),
        ([0, 2], [0.1, 0.2], "boolean or 0/1"),
        ([0, 1], [0.1, float("nan")], "finite"),
    ],
)
def test_detection_inputs_are_validated(is_anomaly: list[int], scores: list[float], message: str) -> None:
    for metric in (auroc, aupr, fpr_at_recall):
        with pytest.raises(ValueError, match=message):
            metric(np.array(is_anomaly), np.array(scores))


def test_recall_level_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="recall"):
        fpr_at_recall(np.array([0, 1]), np.array([0.0, 1.0]), recall=95)


# --- calibration -------------------------------------------------------------------------------------------------


def test_adaptive_bins_give_the_remainder_to_the_last_bin() -> None:
    assert adaptive_bins(250, 100) == [(0, 100), (100, 250)]
    assert adaptive_bins(200, 100) == [(0, 100), (100, 200)]
    assert adaptive_bins(40, 100) == [(0, 40)]


def test_perfectly_calibrated_toy_has_zero_error() -> None:
    # 100 samples at confidence 0.3 with 30 right, 100 at 0.8 with 80 right.
    confidence = np.r_[np.full(100, 0.3), np.full(100, 0.8)]
    correct = np.r_[np.arange(100) < 30, np.arange(100) < 80]
    errors = calibration_errors(confidence, correct)
    assert errors.rms == pytest.approx(0.0, abs=1e-15)
    assert errors.mav == pytest.approx(0.0, abs=1e-15)


def test_rms_and_mav_weight_each_bin_by_its_share() -> None:
    # Bin gaps 0.1 (conf 0.3, 20% right) and 0.3 (conf 0.9, 60% right), equal shares.
    confidence = np.r_[np.full(100, 0.3), np.full(100, 0.9)]
    correct = np.r_[np.arange(100) < 20, np.arange(100) < 60]
    errors = calibration_errors(confidence, correct)
    assert errors.mav == pytest.approx(0.5 * 0.1 + 0.5 * 0.3, abs=1e-12)
    assert errors.rms == pytest.approx(math.sqrt(0.5 * 0.01 + 0.5 * 0.09), abs=1e-12)


def test_the_last_most_confident_bin_counts() -> None:
    # 250 samples -> bins of 100 and 150. The first is calibrated; the last (confidence 0.9, all wrong) has gap 0.9
    # and weight 150/250. The reference calib_err skips it by an off-by-one and reports 0.
    confidence = np.r_[np.full(100, 0.5), np.full(150, 0.9)]
    correct = np.r_[np.arange(100) < 50, np.zeros(150, dtype=bool)]
    errors = calibration_errors(confidence, correct)
    assert errors.mav == pytest.approx(0.6 * 0.9, abs=1e-12)
    assert errors.rms == pytest.approx(math.sqrt(0.6 * 0.81), abs=1e-12)
    reference = calibration_errors(confidence, correct, include_last_bin=False)
    assert reference == CalibrationErrors(rms=0.0, mav=0.0)


def test_reliability_bins_sort_by_confidence() -> None:
    confidence = np.r_[np.full(150, 0.9), np.full(100, 0.5)]  # unsorted on purpose
    correct = np.r_[np.zeros(150, dtype=bool), np.arange(100) < 50]
    bins = reliability_bins(confidence, correct)
    np.testing.assert_allclose(bins.confidence, [0.5, 0.9], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(bins.accuracy, [0.5, 0.0])
    np.testing.assert_array_equal(bins.counts, [100, 150])


def test_fewer_samples_than_a_bin_make_one_bin() -> None:
    errors = calibration_errors(np.full(4, 0.9), np.array([1, 0, 1, 1]))
    assert errors.rms == pytest.approx(0.15, abs=1e-12)
    assert errors.mav == pytest.approx(0.15, abs=1e-12)


def test_soft_f1_hand_computed() -> None:
    # wrong = [0, 1, 0, 1]; TP = sum (1-c) w = 1 + 0.5; FP = sum (1-c)(1-w) = 0.5; FN = sum c w = 0.5.
    # F1 = 2 * 1.5 / (3 + 0.5 + 0.5) = 0.75.
    assert soft_f1(np.array([1.0, 0.0, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.75
    assert soft_f1(np.array([1.0, 0.0, 1.0]), np.array([1, 0, 1])) == 1.0
    assert soft_f1(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0


def test_calibration_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_errors(np.array([1.5]), np.array([1]))
    with pytest.raises(ValueError, match="0/1"):
        soft_f1(np.array([0.5]), np.array([0.5]))
    with pytest.raises(ValueError, match="at least one"):
        calibration_errors(np.array([]), np.array([]))


# --- selective prediction ----------------------------------------------------------------------------------------


def test_risk_coverage_hand_computed() -> None:
    # Accept at 0.9: 1 in, 0 wrong. At 0.8 (tied pair enters together): 3 in, 1 wrong. At 0.1: 4 in, 2 wrong.
    curve = risk_coverage(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 1, 0, 0]))
    np.testing.assert_array_equal(curve.coverage, [0.25, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 1 / 3, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(curve.thresholds, [0.9, 0.8, 0.1])
    assert curve.aurc == pytest.approx(0.25 * 0 + 0.5 / 3 + 0.25 * 0.5, abs=1e-15)


def test_selective_risk_at_one_decision() -> None:
    correct = np.array([1, 1, 0, 0])
    assert selective_risk(correct, np.array([True, True, True, False])) == (0.75, pytest.approx(1 / 3))
    assert selective_risk(correct, np.zeros(4, dtype=bool)) == (0.0, 0.0)


def test_detection_figures_count_an_anomaly_at_the_threshold_as_rejected() -> None:
    # The gate rejects score >= threshold, so an anomaly scoring exactly the threshold is not accepted.
    in_scores = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    anomalies = np.array([0.2, 0.5, 0.5, 0.9], np.float32)
    figures = detection_figures(in_scores, anomalies, 0.5)
    assert figures["accepted_fraction"] == 0.25
    assert figures["auroc"] == pytest.approx((1 * 0.5 + 1 + 3 * 4) / 16)
    assert detection_figures(in_scores, anomalies, 0.50001)["accepted_fraction"] == 0.75

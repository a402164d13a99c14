"""Metrics against independent oracles: brute-force pairwise AUROC, explicit threshold loops for PR, ROC, FPR at
recall and risk-coverage, and per-bin loops for calibration, on random data with many ties. The oracles use plain
Python loops and counting, none of the vectorized tricks (ranks, cumulative sums, np.unique) of the
implementation. Then every validator, at and either side of its limits."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from training.evaluation.metrics import (
    adaptive_bins,
    aupr,
    auroc,
    calibration_errors,
    detection_metrics,
    fpr_at_recall,
    reliability_bins,
    risk_coverage,
    roc_curve,
    selective_risk,
    soft_f1,
)

SEEDS = range(8)


def tied_detection_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """30-80 samples, about a third anomalies, scores on a coarse grid so that many are tied (both classes)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 80))
    is_anomaly = rng.random(n) < 0.35
    is_anomaly[:2] = [True, False]
    scores = np.round(rng.normal(size=n) + 0.8 * is_anomaly, 1)
    return is_anomaly, scores


def thresholds_descending(scores: np.ndarray) -> list[float]:
    return sorted({float(s) for s in scores}, reverse=True)


def counts_at(is_anomaly: np.ndarray, scores: np.ndarray, t: float) -> tuple[int, int]:
    """(true positives, false positives) when flagging score >= t, by counting."""
    tp = sum(1 for a, s in zip(is_anomaly, scores, strict=True) if s >= t and a)
    fp = sum(1 for a, s in zip(is_anomaly, scores, strict=True) if s >= t and not a)
    return tp, fp


def auroc_oracle(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    positives = [s for a, s in zip(is_anomaly, scores, strict=True) if a]
    negatives = [s for a, s in zip(is_anomaly, scores, strict=True) if not a]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def aupr_oracle(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    total_positives = int(np.sum(is_anomaly))
    area, previous_recall = 0.0, 0.0
    for t in thresholds_descending(scores):
        tp, fp = counts_at(is_anomaly, scores, t)
        recall = tp / total_positives
        area += (recall - previous_recall) * (tp / (tp + fp))
        previous_recall = recall
    return area


def fpr_at_recall_oracle(is_anomaly: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The reference's rule: thresholds from the highest down to the first with full recall; the closest recall
    wins, then the higher recall, then the lower threshold."""
    total_positives = int(np.sum(is_anomaly))
    total_negatives = len(is_anomaly) - total_positives
    best: tuple[float, float, float] | None = None  # (distance, -recall, t)
    best_fp = 0
    for t in thresholds_descending(scores):
        tp, fp = counts_at(is_anomaly, scores, t)
        recall = tp / total_positives
        key = (abs(recall - target), -recall, t)
        if best is None or key <= best:
            best, best_fp = key, fp
        if tp == total_positives:
            break
    return best_fp / total_negatives


def risk_coverage_oracle(confidence: np.ndarray, correct: np.ndarray) -> tuple[list[float], list[float], float]:
    n = len(confidence)
    coverage, risk = [], []
    for t in thresholds_descending(confidence):
        accepted = [c for v, c in zip(confidence, correct, strict=True) if v >= t]
        coverage.append(len(accepted) / n)
        risk.append(sum(1 for c in accepted if not c) / len(accepted))
    aurc = sum((coverage[i] - (coverage[i - 1] if i else 0.0)) * risk[i] for i in range(len(coverage)))
    return coverage, risk, aurc


def calibration_oracle(confidence: np.ndarray, correct: np.ndarray, bin_size: int, last: bool) -> tuple[float, float]:
    pairs = sorted(zip(confidence.tolist(), correct.tolist(), strict=True), key=lambda p: p[0])
    n = len(pairs)
    count = max(1, n // bin_size)
    squares, absolutes = 0.0, 0.0
    for b in range(count if last else count - 1):
        members = pairs[b * bin_size : n if b == count - 1 else (b + 1) * bin_size]
        gap = abs(sum(c for c, _ in members) / len(members) - sum(w for _, w in members) / len(members))
        squares += len(members) / n * gap**2
        absolutes += len(members) / n * gap
    return math.sqrt(squares), absolutes


@pytest.mark.parametrize("seed", SEEDS)
def test_detection_metrics_match_brute_force_on_tied_random_data(seed: int) -> None:
    is_anomaly, scores = tied_detection_data(seed)
    assert auroc(is_anomaly, scores) == pytest.approx(auroc_oracle(is_anomaly, scores), abs=1e-12)
    assert aupr(is_anomaly, scores) == pytest.approx(aupr_oracle(is_anomaly, scores), abs=1e-12)
    for target in (0.2, 0.5, 0.8, 0.95, 1.0):
        assert fpr_at_recall(is_anomaly, scores, target) == pytest.approx(
            fpr_at_recall_oracle(is_anomaly, scores, target), abs=1e-12
        ), target


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_curve_matches_the_threshold_loop(seed: int) -> None:
    is_anomaly, scores = tied_detection_data(seed)
    positives, negatives = int(is_anomaly.sum()), int((~is_anomaly).sum())
    expected_fpr, expected_tpr = [0.0], [0.0]
    for t in thresholds_descending(scores):
        tp, fp = counts_at(is_anomaly, scores, t)
        expected_tpr.append(tp / positives)
        expected_fpr.append(fp / negatives)
    fpr, tpr = roc_curve(is_anomaly, scores)
    np.testing.assert_allclose(fpr, expected_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, expected_tpr, rtol=0, atol=1e-12)


def test_detection_metrics_puts_the_anomalies_on_the_positive_side() -> None:
    is_anomaly, scores = tied_detection_data(0)
    result = detection_metrics(scores[~is_anomaly], scores[is_anomaly], recall=0.8)
    assert result.auroc == pytest.approx(auroc_oracle(is_anomaly, scores), abs=1e-12)
    assert result.aupr == pytest.approx(aupr_oracle(is_anomaly, scores), abs=1e-12)
    assert result.fpr == pytest.approx(fpr_at_recall_oracle(is_anomaly, scores, 0.8), abs=1e-12)
    assert result.recall_level == 0.8
    assert detection_metrics(scores[~is_anomaly], scores[is_anomaly]).recall_level == 0.95


@pytest.mark.parametrize("seed", SEEDS)
def test_risk_coverage_matches_the_acceptance_loop(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 60))
    confidence = np.round(rng.random(n), 1)  # ties
    correct = rng.random(n) < confidence
    correct[0] = False  # at least one error...
    confidence[0] = 1.0  # ...at the first step, so that the first step's weight counts
    coverage, risk, aurc = risk_coverage_oracle(confidence, correct)
    curve = risk_coverage(confidence, correct)
    np.testing.assert_allclose(curve.coverage, coverage, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.risk, risk, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(curve.thresholds, thresholds_descending(confidence))
    assert curve.aurc == pytest.approx(aurc, abs=1e-12)


def test_the_first_risk_coverage_step_is_weighted_by_its_coverage() -> None:
    # Accept 0.9, 0.9 (one wrong): coverage 1/2, risk 1/2. Then all four (two wrong): coverage 1, risk 1/2.
    # AURC = 1/2 * 1/2 + (1 - 1/2) * 1/2 = 1/2.
    curve = risk_coverage(np.array([0.9, 0.9, 0.2, 0.1]), np.array([0, 1, 1, 0]))
    np.testing.assert_array_equal(curve.coverage, [0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.5, 1 / 3, 0.5], rtol=0, atol=1e-15)
    assert curve.aurc == pytest.approx(0.5 * 0.5 + 0.25 / 3 + 0.25 * 0.5, abs=1e-15)
    # One step only: the area is the risk itself.
    assert risk_coverage(np.array([0.3, 0.3]), np.array([0, 1])).aurc == 0.5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("last", [True, False])
def test_calibration_errors_match_the_bin_loop(seed: int, last: bool) -> None:
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(25, 70))
    confidence = np.round(rng.random(n), 2)
    correct = rng.random(n) < confidence**2  # miscalibrated, so every gap differs from 0
    rms, mav = calibration_oracle(confidence, correct, 10, last)
    errors = calibration_errors(confidence, correct, bin_size=10, include_last_bin=last)
    assert errors.rms == pytest.approx(rms, abs=1e-12)
    assert errors.mav == pytest.approx(mav, abs=1e-12)
    assert mav > 0


def test_reference_mode_drops_the_last_bin_but_keeps_dividing_by_all_samples() -> None:
    # Bins of 100 (conf 0.5, 20% right: gap 0.3) and 150 (conf 0.9, all wrong: gap 0.9). The reference counts only
    # the first bin, still weighted 100/250: MAV 0.4 * 0.3, RMS sqrt(0.4 * 0.09).
    confidence = np.r_[np.full(100, 0.5), np.full(150, 0.9)]
    correct = np.r_[np.arange(100) < 20, np.zeros(150, dtype=bool)]
    reference = calibration_errors(confidence, correct, include_last_bin=False)
    assert reference.mav == pytest.approx(0.4 * 0.3, abs=1e-12)
    assert reference.rms == pytest.approx(math.sqrt(0.4 * 0.09), abs=1e-12)
    full = calibration_errors(confidence, correct)
    assert full.mav == pytest.approx(0.4 * 0.3 + 0.6 * 0.9, abs=1e-12)
    assert full.rms == pytest.approx(math.sqrt(0.4 * 0.09 + 0.6 * 0.81), abs=1e-12)


def test_reliability_bins_match_the_bin_loop_and_keep_ties_in_input_order() -> None:
    confidence = np.r_[np.full(5, 0.7), np.full(3, 0.2), np.full(4, 0.7)]
    correct = np.r_[np.ones(5), np.zeros(3), np.zeros(4)]
    bins = reliability_bins(confidence, correct, bin_size=4)
    # Sorted stably: three 0.2 (wrong), five 0.7 (right), four 0.7 (wrong) -> bins [0:4], [4:8], [8:12].
    np.testing.assert_allclose(bins.confidence, [(3 * 0.2 + 0.7) / 4, 0.7, 0.7], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bins.accuracy, [1 / 4, 1.0, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(bins.counts, [4, 4, 4])
    assert bins.counts.dtype == np.int64


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [(0, 3, [(0, 0)]), (5, 1, [(i, i + 1) for i in range(5)]), (7, 3, [(0, 3), (3, 7)]), (6, 3, [(0, 3), (3, 6)])],
)
def test_adaptive_bins_bounds(n: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert adaptive_bins(n, size) == expected


def test_soft_f1_matches_its_tp_fp_fn_definition() -> None:
    rng = np.random.default_rng(7)
    confidence, correct = rng.random(40), rng.random(40) < 0.6
    wrong = 1.0 - correct
    tp = float(np.sum((1 - confidence) * wrong))
    fp = float(np.sum((1 - confidence) * (1 - wrong)))
    fn = float(np.sum(confidence * wrong))
    assert soft_f1(confidence, correct) == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)


def test_selective_risk_matches_counting() -> None:
    correct = np.array([1, 0, 1, 1, 0, 0, 1])
    accept = np.array([1, 1, 0, 1, 0, 1, 1], dtype=bool)
    assert selective_risk(correct, accept) == (5 / 7, pytest.approx(2 / 5, abs=1e-15))
    assert selective_risk(np.array([0, 1]), np.array([True, True])) == (1.0, 0.5)


# --- validators, at and either side of each limit -------------------------------------------------------------


def test_recall_one_is_a_valid_level_and_zero_or_above_one_are_not() -> None:
    is_anomaly, scores = np.array([1, 1, 0, 0]), np.array([0.9, 0.1, 0.5, 0.0])
    assert fpr_at_recall(is_anomaly, scores, 1.0) == 0.5  # full recall needs t = 0.1, which flags 0.5
    # The smallest positive level is valid: recall 1/2 is closest, and of its two thresholds the lower one (0.5).
    assert fpr_at_recall(is_anomaly, scores, float(np.nextafter(0.0, 1.0))) == 0.5
    for bad in (0.0, -0.5, float(np.nextafter(1.0, 2.0)), 95.0):
        with pytest.raises(ValueError, match=re.escape(f"recall must be in (0, 1], got {bad}")):
            fpr_at_recall(is_anomaly, scores, bad)


@pytest.mark.parametrize(
    ("is_anomaly", "scores", "message"),
    [
        ([1, 1], [0.1, 0.2], "detection metrics need both anomalies and in-distribution inputs"),
        ([0, 0], [0.1, 0.2], "detection metrics need both anomalies and in-distribution inputs"),
        ([0, 1], [0.1], "is_anomaly has 2 entries but scores has 1"),
        ([0, 1, 1], [0.1, 0.2], "is_anomaly has 3 entries but scores has 2"),
        ([0, 2], [0.1, 0.2], "is_anomaly must be boolean or 0/1"),
        ([0, -1], [0.1, 0.2], "is_anomaly must be boolean or 0/1"),
        ([0, 1], [0.1, float("nan")], "scores must be finite"),
        ([0, 1], [float("-inf"), 0.2], "scores must be finite"),
    ],
)
def test_detection_validators_give_exact_messages(is_anomaly: list[int], scores: list[float], message: str) -> None:
    for metric in (auroc, aupr, fpr_at_recall, roc_curve):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            metric(np.array(is_anomaly), np.array(scores))


def test_confidence_of_exactly_zero_and_one_is_valid_and_one_ulp_outside_is_not() -> None:
    assert calibration_errors(np.array([0.0, 1.0]), np.array([0, 1])).mav == 0.0
    assert soft_f1(np.array([0.0, 1.0]), np.array([0, 1])) == 1.0
    for bad in (float(np.nextafter(0.0, -1.0)), float(np.nextafter(1.0, 2.0))):
        for metric in (calibration_errors, soft_f1, reliability_bins):
            with pytest.raises(ValueError, match=r"^confidence must lie in \[0, 1\]$"):
                metric(np.array([0.5, bad]), np.array([1, 0]))


@pytest.mark.parametrize(
    ("confidence", "correct", "message"),
    [
        ([0.5], [1, 0], "confidence has 1 entries but correct has 2"),
        ([0.5, 0.2], [1], "confidence has 2 entries but correct has 1"),
        ([], [], "calibration metrics need at least one sample"),
        ([0.5], [0.5], "correct must be boolean or 0/1"),
        ([0.5], [2], "correct must be boolean or 0/1"),
    ],
)
def test_calibration_validators_give_exact_messages(
    confidence: list[float], correct: list[float], message: str
) -> None:
    for metric in (calibration_errors, soft_f1, reliability_bins):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            metric(np.array(confidence), np.array(correct))


def test_bin_size_must_be_positive() -> None:
    assert adaptive_bins(3, 1) == [(0, 1), (1, 2), (2, 3)]
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"^bin_size must be >= 1, got {bad}$"):
            adaptive_bins(10, bad)


@pytest.mark.parametrize(
    ("confidence", "correct", "message"),
    [
        ([], [], "confidence and correct must be non-empty and the same length"),
        ([0.5], [1, 0], "confidence and correct must be non-empty and the same length"),
        ([0.5, float("nan")], [1, 0], "confidence must be finite and correct must be boolean or 0/1"),
        ([0.5, float("inf")], [1, 0], "confidence must be finite and correct must be boolean or 0/1"),
        ([0.5, 0.4], [1, 0.5], "confidence must be finite and correct must be boolean or 0/1"),
    ],
)
def test_risk_coverage_validators(confidence: list[float], correct: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        risk_coverage(np.array(confidence), np.array(correct))


def test_risk_coverage_takes_any_finite_score_not_only_probabilities() -> None:
    curve = risk_coverage(np.array([-3.5, 7.0, 120.0]), np.array([0, 1, 1]))
    np.testing.assert_array_equal(curve.thresholds, [120.0, 7.0, -3.5])
    np.testing.assert_allclose(curve.risk, [0.0, 0.0, 1 / 3], rtol=0, atol=1e-15)


def test_selective_risk_validators() -> None:
    for correct, accept in (([], []), ([1, 0], [True])):
        with pytest.raises(ValueError, match=r"^correct and accept must be non-empty and the same length$"):
            selective_risk(np.array(correct), np.array(accept, dtype=bool))


# --- input types: the metrics compute in float64 whatever they are given ------------------------------------------


def test_boolean_scores_rank_like_zero_one_scores() -> None:
    # A detector that only says yes/no (e.g. the gate's reject flag) still has an AUROC.
    is_anomaly = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    flags = np.array([True, False, False, True, True, False])
    as_numbers = flags.astype(np.float64)
    assert auroc(is_anomaly, flags) == auroc(is_anomaly, as_numbers) == pytest.approx(auroc_oracle(is_anomaly, flags))
    assert aupr(is_anomaly, flags) == aupr(is_anomaly, as_numbers)
    assert fpr_at_recall(is_anomaly, flags, 0.5) == fpr_at_recall(is_anomaly, as_numbers, 0.5)
    np.testing.assert_array_equal(roc_curve(is_anomaly, flags)[1], roc_curve(is_anomaly, as_numbers)[1])
    in_flags, out_flags = flags[~is_anomaly], flags[is_anomaly]
    assert detection_metrics(in_flags, out_flags) == detection_metrics(
        in_flags.astype(np.float64), out_flags.astype(np.float64)
    )


def test_roc_ends_at_full_recall_when_the_lowest_score_is_an_anomaly() -> None:
    # Anomalies 0.9 and 0.1, in-distribution 0.5: (FPR, TPR) = (0, 0), (0, 1/2), (1, 1/2), (1, 1).
    fpr, tpr = roc_curve(np.array([1, 1, 0]), np.array([0.9, 0.1, 0.5]))
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 0.5, 1.0])


def test_float32_confidences_are_averaged_in_float64() -> None:
    rng = np.random.default_rng(11)
    confidence = rng.random(300).astype(np.float32)  # as the ONNX graph emits them
    correct = rng.random(300) < 0.7
    wide = confidence.astype(np.float64)
    rms, mav = calibration_oracle(wide, correct, 100, True)
    errors = calibration_errors(confidence, correct)
    assert errors.rms == pytest.approx(rms, abs=1e-15)
    assert errors.mav == pytest.approx(mav, abs=1e-15)
    bins = reliability_bins(confidence, correct)
    assert bins.confidence.dtype == np.float64
    np.testing.assert_array_equal(bins.confidence, reliability_bins(wide, correct).confidence)


def test_ties_keep_input_order_in_large_bins() -> None:
    # 150 samples at 0.5 (all wrong), then 150 at 0.2: the first 100 of those right, the last 50 wrong. A stable
    # sort keeps tied samples in input order, so the first bin holds exactly the 100 right ones; an unstable sort
    # (numpy's default on large arrays) mixes them.
    confidence = np.r_[np.full(150, 0.5), np.full(150, 0.2)]
    correct = np.r_[np.zeros(150), np.ones(100), np.zeros(50)]
    bins = reliability_bins(confidence, correct)
    np.testing.assert_array_equal(bins.accuracy, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(bins.confidence, [0.2, 0.35, 0.5], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(bins.counts, [100, 100, 100])


def test_adaptive_bins_default_to_100_samples() -> None:
    assert adaptive_bins(250) == [(0, 100), (100, 250)]
    assert adaptive_bins(199) == [(0, 199)]


def test_selective_risk_takes_zero_one_accept_flags() -> None:
    correct = np.array([1, 0, 0, 1])
    assert selective_risk(correct, np.array([1, 0, 0, 1])) == (0.5, 0.0)  # flags, not indices
    assert selective_risk(correct, np.array([0, 1, 1, 0])) == (0.5, 1.0)

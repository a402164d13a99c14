"""Detection, calibration and selective-prediction metrics, as in Outlier Exposure (Hendrycks, Mazeika, Dietterich,
ICLR 2019, "Deep Anomaly Detection with Outlier Exposure").

Conventions, everywhere in this module:
- Detection: anomalies are the *positive* class and scores are *higher = more anomalous*; an input is flagged when
  its score is >= the operating threshold. `is_anomaly` is a boolean (or 0/1) array aligned with `scores`.
- Calibration: `confidence` in [0, 1] is the predicted probability of being right; `correct` is 1 when the
  prediction was right (anomalies always count as wrong).
- Inputs are numpy arrays; every metric returns a plain float in [0, 1]. Both classes must be present.

Reference code: hendrycks/outlier-exposure, `utils/display_results.py` (AUROC and AUPR via scikit-learn, FPR at N%
recall) and `utils/calibration_tools.py` (`calib_err`, `soft_f1`). Differences are stated where they occur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectionMetrics:
    """AUROC, AUPR and FPR at `recall_level` recall for one in-distribution vs anomaly comparison."""

    auroc: float
    aupr: float
    fpr: float
    recall_level: float


@dataclass(frozen=True)
class CalibrationErrors:
    """RMS and mean-absolute-value (MAV) calibration error over adaptive bins."""

    rms: float
    mav: float


@dataclass(frozen=True)
class ReliabilityBins:
    """Per adaptive bin, in increasing confidence: mean confidence, accuracy (fraction correct), sample count."""

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class RiskCoverage:
    """Selective prediction: accept the most confident inputs first.

    `coverage[i]` is the fraction accepted at the i-th distinct confidence threshold (descending), `risk[i]` the
    error rate among the accepted, `thresholds[i]` the confidence at which they were accepted (`confidence >= t`).
    `aurc` is the area under the step curve, sum_i (coverage_i - coverage_{i-1}) * risk_i (lower is better).
    """

    coverage: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray
    aurc: float


def _binary_inputs(is_anomaly: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(is_anomaly).ravel()
    values = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != values.shape:
        raise ValueError(f"is_anomaly has {labels.size} entries but scores has {values.size}")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("is_anomaly must be boolean or 0/1")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("detection metrics need both anomalies and in-distribution inputs")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    return labels, values


def _descending_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positive counts at each distinct threshold t (flag `score >= t`), t descending; tied scores
    enter together. Returns (tps, fps, thresholds); the last entry flags everything."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    last_of_each_value = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tps = np.cumsum(sorted_labels, dtype=np.float64)[last_of_each_value]
    fps = 1.0 + last_of_each_value - tps
    return tps, fps, sorted_scores[last_of_each_value]


def auroc(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, P(score_anomaly > score_in) + 0.5 * P(tie) (the Mann-Whitney U statistic).

    Ties are handled with average ranks, which equals the trapezoid over the tie-collapsed ROC curve, so this
    matches `sklearn.metrics.roc_auc_score` as used by the OE reference code. 1 = perfect separation, 0.5 = chance.
    """
    labels, values = _binary_inputs(is_anomaly, scores)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct value: (first rank + last rank) / 2.
    ends = np.cumsum(counts, dtype=np.float64)
    average_rank = ends - (counts - 1) / 2.0
    n_pos = float(labels.sum())
    n_neg = float(labels.size) - n_pos
    rank_sum = float(average_rank[inverse][labels].sum())
    return (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)


def aupr(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (anomalies positive) as average precision, the step-wise sum
    AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds, descending (no interpolation).

    This is `sklearn.metrics.average_precision_score`, the paper's AUPR. Its chance level is the anomaly base rate
    (1/6 at the paper's 1:5 mix), not 0.5.
    """
    labels, values = _binary_inputs(is_anomaly, scores)
    tps, fps, _ = _descending_curve(labels, values)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_recall(is_anomaly: np.ndarray, scores: np.ndarray, recall: float = 0.95) -> float:
    """Fraction of in-distribution inputs flagged at the threshold where `recall` of the anomalies are flagged
    (the paper's FPR95 for recall = 0.95).

    Same semantics as `fpr_and_fdr_at_recall` in hendrycks/outlier-exposure `utils/display_results.py`: thresholds
    t are the distinct scores (flag `score >= t`, tied scores flagged together), from the highest down to the first
    that reaches full recall. Pick the t whose recall is *closest* to `recall` (not "at least"); among equally
    close ones the higher recall, and among equal recalls the lowest t (the one that flags the most
    in-distribution inputs). Return its false positives / all in-distribution inputs.
    Reference: https://github.com/hendrycks/outlier-exposure/blob/master/utils/display_results.py
    """
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    labels, values = _binary_inputs(is_anomaly, scores)
    tps, fps, _ = _descending_curve(labels, values)
    achieved = tps / tps[-1]
    first_full = int(np.searchsorted(tps, tps[-1]))
    # Reversed like the reference, so np.argmin's first-minimum rule prefers the higher recall.
    achieved = achieved[first_full::-1]
    fps = fps[first_full::-1]
    cutoff = int(np.argmin(np.abs(achieved - recall)))
    return float(fps[cutoff] / np.sum(~labels))


def roc_curve(is_anomaly: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold (flag `score >= t`), from (0, 0) to
    (1, 1); the trapezoid under it equals `auroc`. For plots (the paper's Figure 1)."""
    labels, values = _binary_inputs(is_anomaly, scores)
    tps, fps, _ = _descending_curve(labels, values)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray, recall: float = 0.95) -> DetectionMetrics:
    """AUROC, AUPR and FPR at `recall` with the anomalies (`out_scores`) as the positive class; scores are
    higher = more anomalous. The base rate is whatever the two arrays' sizes make it (the paper uses 1:5)."""
    in_values = np.asarray(in_scores, dtype=np.float64).ravel()
    out_values = np.asarray(out_scores, dtype=np.float64).ravel()
    scores = np.concatenate([out_values, in_values])
    is_anomaly = np.r_[np.ones(out_values.size, dtype=bool), np.zeros(in_values.size, dtype=bool)]
    return DetectionMetrics(
        auroc=auroc(is_anomaly, scores),
        aupr=aupr(is_anomaly, scores),
        fpr=fpr_at_recall(is_anomaly, scores, recall),
        recall_level=recall,
    )


def _calibration_inputs(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hits = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hits.shape:
        raise ValueError(f"confidence has {conf.size} entries but correct has {hits.size}")
    if conf.size == 0:
        raise ValueError("calibration metrics need at least one sample")
    if not np.all((conf >= 0.0) & (conf <= 1.0)):
        raise ValueError("confidence must lie in [0, 1]")
    if not np.all((hits == 0.0) | (hits == 1.0)):
        raise ValueError("correct must be boolean or 0/1")
    return conf, hits


def adaptive_bins(n: int, bin_size: int = 100) -> list[tuple[int, int]]:
    """[start, end) bounds over n samples sorted by confidence: n // bin_size bins of `bin_size`, the last one
    taking the remainder (so between bin_size and 2 * bin_size - 1 samples); one bin when n < bin_size."""
    if bin_size < 1:
        raise ValueError(f"bin_size must be >= 1, got {bin_size}")
    count = max(1, n // bin_size)
    bounds = [(i * bin_size, (i + 1) * bin_size) for i in range(count)]
    bounds[-1] = (bounds[-1][0], n)
    return bounds


def calibration_errors(
    confidence: np.ndarray, correct: np.ndarray, bin_size: int = 100, include_last_bin: bool = True
) -> CalibrationErrors:
    """RMS and MAV calibration error with adaptive bins (paper, appendix C; Nguyen & O'Connor, 2015).

    Sort by confidence, cut into bins of about `bin_size` samples (`adaptive_bins`), and with b's share
    w_b = n_b / n and gap d_b = |mean confidence_b - accuracy_b|: RMS = sqrt(sum_b w_b d_b^2), MAV = sum_b w_b d_b.
    0 for a perfectly calibrated predictor.

    The reference `calib_err` (hendrycks/outlier-exposure `utils/calibration_tools.py`) loops over
    `range(len(bins) - 1)` and so drops the last, most confident bin while still dividing by all n: an off-by-one.
    We count every bin; `include_last_bin=False` reproduces the reference numbers for comparison only.
    """
    bins = reliability_bins(confidence, correct, bin_size)
    weights = bins.counts / bins.counts.sum()
    gaps = np.abs(bins.confidence - bins.accuracy)
    if not include_last_bin:
        weights, gaps = weights[:-1], gaps[:-1]
    return CalibrationErrors(rms=float(np.sqrt(np.sum(weights * gaps**2))), mav=float(np.sum(weights * gaps)))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bin_size: int = 100) -> ReliabilityBins:
    """Mean confidence, accuracy and size of each adaptive bin (`adaptive_bins` over the samples sorted by
    confidence with a stable sort, so tied confidences keep their input order): the reliability diagram's points."""
    conf, hits = _calibration_inputs(confidence, correct)
    order = np.argsort(conf, kind="mergesort")
    conf, hits = conf[order], hits[order]
    bounds = adaptive_bins(conf.size, bin_size)
    return ReliabilityBins(
        confidence=np.array([conf[start:end].mean() for start, end in bounds]),
        accuracy=np.array([hits[start:end].mean() for start, end in bounds]),
        counts=np.array([end - start for start, end in bounds], dtype=np.int64),
    )


def soft_f1(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Soft F1 of detecting *errors* with (1 - confidence) as the soft prediction (paper, appendix C):
    F1 = 2 TP / (2 TP + FP + FN) with TP = sum (1 - c) w, FP = sum (1 - c)(1 - w), FN = sum c w, w = 1 - correct,
    which simplifies to 2 sum (1 - c) w / sum (1 - c + w), as `soft_f1` in the reference `calibration_tools.py`.
    Higher is better; 0/0 (all correct and all fully confident) is returned as 0."""
    conf, hits = _calibration_inputs(confidence, correct)
    wrong = 1.0 - hits
    denominator = float(np.sum(1.0 - conf + wrong))
    if denominator == 0.0:
        return 0.0
    return float(2.0 * np.sum((1.0 - conf) * wrong) / denominator)


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Risk-coverage curve (Geifman & El-Yaniv, 2017): accept inputs with `confidence >= t` for each distinct t,
    descending (ties accepted together); coverage = accepted / n, risk = errors among accepted / accepted.

    `confidence` here is any score where higher = accept first (need not lie in [0, 1]: pass -anomaly_score to
    rank by the gate's score). Without ties AURC equals the mean of the risk over the n prefixes.
    """
    values = np.asarray(confidence, dtype=np.float64).ravel()
    hits = np.asarray(correct, dtype=np.float64).ravel()
    if values.shape != hits.shape or values.size == 0:
        raise ValueError("confidence and correct must be non-empty and the same length")
    if not np.all(np.isfinite(values)) or not np.all((hits == 0.0) | (hits == 1.0)):
        raise ValueError("confidence must be finite and correct must be boolean or 0/1")
    # Errors are the "positives" of the curve; everything at or above t is accepted.
    errors, correct_accepted, thresholds = _descending_curve(hits == 0.0, values)
    accepted = errors + correct_accepted
    coverage = accepted / values.size
    risk = errors / accepted
    aurc = float(np.sum(np.diff(np.r_[0.0, coverage]) * risk))
    return RiskCoverage(coverage=coverage, risk=risk, thresholds=thresholds, aurc=aurc)


def selective_risk(correct: np.ndarray, accept: np.ndarray) -> tuple[float, float]:
    """(coverage, risk) of one accept decision: the fraction accepted and the error rate among the accepted
    (0 when nothing is accepted)."""
    hits = np.asarray(correct, dtype=np.float64).ravel()
    mask = np.asarray(accept, dtype=bool).ravel()
    if mask.shape != hits.shape or mask.size == 0:
        raise ValueError("correct and accept must be non-empty and the same length")
    coverage = float(mask.mean())
    risk = float(1.0 - hits[mask].mean()) if mask.any() else 0.0
    return coverage, risk


def detection_figures(in_scores: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPR and FPR at 95% recall of anomalies `scores` against in-distribution `in_scores`, and the share of
    the anomalies the gate accepts at `threshold` (anomaly_score < threshold)."""
    m = detection_metrics(in_scores, scores, recall=0.95)
    accepted = float(np.mean(scores < np.float32(threshold)))
    return {"auroc": m.auroc, "aupr": m.aupr, "fpr95": m.fpr, "accepted_fraction": accepted}

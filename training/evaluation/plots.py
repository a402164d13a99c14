"""The evaluation report's figures (matplotlib, Agg backend, small PNGs meant to be committed).

- `roc.png`: ROC per anomaly set for each artifact, like Figure 1 of the OE paper (Hendrycks et al., ICLR 2019);
  full anomaly pool vs the whole test split (ROC curves do not depend on the base rate).
- `histograms[_baseline].png`: served anomaly score of the test split vs each anomaly set, with the threshold.
- `reliability.png`: reliability diagram (accuracy vs confidence over adaptive bins) on the pooled 1:5 mix.
- `risk_coverage.png`: error rate among accepted inputs vs fraction accepted on the pooled mix.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, files only
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from training.evaluation.evaluate import SERVED_SCORE, ArtifactResult, Evaluation
from training.evaluation.metrics import reliability_bins, roc_curve

DPI = 100
MAX_CURVE_POINTS = 400
RELIABILITY_METHODS = {
    "softmax": "softmax (T = 1)",
    "temperature": "temperature T",
    "artifact": "T + 0-1 rescaling (artifact)",
}


def role_labels(evaluation: Evaluation) -> list[tuple[str, ArtifactResult]]:
    """(legend label, result) per artifact, baseline first: "Baseline" / "+OE" as in the paper when comparing."""
    primary = evaluation.primary
    if evaluation.baseline is None:
        return [(_name(primary), primary)]
    return [(f"Baseline ({_name(evaluation.baseline)})", evaluation.baseline), (f"+OE ({_name(primary)})", primary)]


def _name(result: ArtifactResult) -> str:
    return f"{result.artifact.card.name}/{result.artifact.card.version}"


def _grid(count: int, width: float = 3.0) -> tuple[Any, list[Any]]:
    cols = min(4, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, width * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _save(fig: Any, path: Path) -> Path:
    """Save as a 256-colour palette PNG: plots have few colours, and the file is ~3x smaller to commit."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def roc_figure(evaluation: Evaluation, path: Path) -> Path:
    names = list(evaluation.primary.sets)
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=True):
        for label, result in role_labels(evaluation):
            test, pool = result.test.scores[SERVED_SCORE], result.sets[name].outputs.scores[SERVED_SCORE]
            is_anomaly = np.r_[np.ones(pool.size, dtype=bool), np.zeros(test.size, dtype=bool)]
            fpr, tpr = roc_curve(is_anomaly, np.r_[pool, test])
            keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, MAX_CURVE_POINTS).astype(int), fpr.size - 1])
            fpr, tpr = fpr[keep], tpr[keep]  # thinned for a small PNG; every drawn point is a real ROC point
            auroc = result.sets[name].detection[SERVED_SCORE].auroc.mean
            ax.plot(fpr, tpr, label=f"{label.split(' (')[0]} {100 * auroc:.1f}")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        # A little margin, so a perfect curve along the axes stays visible.
        ax.set(title=name, xlabel="FPR (in-dist. flagged)", ylabel="TPR (anomalies flagged)")
        ax.set(xlim=(-0.02, 1.0), ylim=(0.0, 1.02))
        ax.legend(title="AUROC %", fontsize="small", loc="lower right")
    fig.suptitle("ROC, anomalies positive, score KL[U||p]")
    return _save(fig, path)


def histogram_figure(result: ArtifactResult, path: Path) -> Path:
    names = list(result.sets)
    threshold = result.artifact.card.threshold.value
    bins = np.linspace(0.0, 1.0, 51)
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=True):
        ax.hist(result.test.scores[SERVED_SCORE], bins=bins, density=True, alpha=0.6, label="in-distribution test")
        ax.hist(result.sets[name].outputs.scores[SERVED_SCORE], bins=bins, density=True, alpha=0.6, label=name)
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="reject threshold")
        ax.set(title=name, xlabel="anomaly score 1/(1+KL)", ylabel="density", yscale="log")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{_name(result)}: anomaly scores, in vs out (reject if score >= {threshold:.4g})")
    return _save(fig, path)


def reliability_figure(evaluation: Evaluation, path: Path) -> Path:
    roles = role_labels(evaluation)
    fig, axes = _grid(len(roles), width=4.0)
    for ax, (label, result) in zip(axes, roles, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8, label="perfect calibration")
        for method, legend in RELIABILITY_METHODS.items():
            points = reliability_bins(
                result.pooled.confidence[method], result.pooled_correct, evaluation.config.bin_size
            )
            ax.plot(points.confidence, points.accuracy, marker=".", linewidth=1, label=legend)
        ax.set(title=label, xlabel="confidence (bin mean)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize="small", loc="upper left")
    fig.suptitle(f"Reliability, test + anomalies (1:{evaluation.config.ratio}, anomalies wrong)")
    return _save(fig, path)


def risk_coverage_figure(evaluation: Evaluation, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, result in role_labels(evaluation):
        curve = result.selective
        keep = np.unique(np.linspace(0, curve.coverage.size - 1, MAX_CURVE_POINTS).astype(int))
        (line,) = ax.step(
            curve.coverage[keep], curve.risk[keep], where="post", label=f"{label}, AURC {100 * curve.aurc:.2f}%"
        )
        coverage, risk = result.selective_at_threshold
        ax.plot([coverage], [risk], marker="o", color=line.get_color())
    ax.set(xlabel="coverage (fraction accepted)", ylabel="risk (error rate among accepted)", xlim=(0, 1))
    ax.set_ylim(bottom=0)
    ax.set_title("Risk-coverage by anomaly score (dot: card threshold)", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    return _save(fig, path)


def write_figures(evaluation: Evaluation, out: Path) -> list[Path]:
    """All figures into `out`; returns their paths."""
    paths = [
        roc_figure(evaluation, out / "roc.png"),
        histogram_figure(evaluation.primary, out / "histograms.png"),
    ]
    if evaluation.baseline is not None:
        paths.append(histogram_figure(evaluation.baseline, out / "histograms_baseline.png"))
    else:
        (out / "histograms_baseline.png").unlink(missing_ok=True)  # stale from an earlier --compare run
    paths.append(reliability_figure(evaluation, out / "reliability.png"))
    paths.append(risk_coverage_figure(evaluation, out / "risk_coverage.png"))
    return paths

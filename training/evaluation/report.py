"""The evaluation report: `report.md` (the paper's tables), `metrics.json` (every number) and the figures.

Tables follow Hendrycks, Mazeika & Dietterich (ICLR 2019): Table 1 (Baseline vs +OE: FPR at N% recall, AUROC,
AUPR per anomaly set, then the mean), Table 2 (scores side by side) and appendix C (RMS / MAV calibration error,
soft F1). Percentages, 2 decimals, mean ± std over the 1:5 draws.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.evaluation.evaluate import (
    CONFIDENCE_METHODS,
    SCORE_NAMES,
    SERVED_SCORE,
    ArtifactResult,
    CalibrationSpread,
    DetectionSpread,
    Evaluation,
    Spread,
)
from training.evaluation.report_sections import (
    ReportExtras,
    loso_section,
    near_far_section,
    reference_section,
    seed_section,
    threshold_section,
    twins_section,
    validation_section,
)

METRICS_SCHEMA_VERSION = 1
JSON_DIGITS = 6
EXACT_KEYS = frozenset({"threshold", "temperature"})
SCORE_LABELS = {
    SERVED_SCORE: "KL[U‖p] (served)",
    "msp": "MSP",
    "kl_uniform": "KL[U‖p]",
    "max_logit": "max-logit",
    "energy": "energy",
}
CONFIDENCE_LABELS = {
    "softmax": "softmax, T = 1 (no calibration)",
    "temperature": "temperature T only",
    "temperature_rescaled": "temperature T + 0-1 rescaling",
    "artifact": "artifact `confidence` output",
}


def conventions(evaluation: Evaluation) -> list[str]:
    cfg, n = evaluation.config, evaluation.test_samples
    unit = _unit(evaluation)
    recall = round(100 * cfg.recall)
    return [
        "Anomalies are the positive class; every detection score is higher = more anomalous. The served score is "
        "the graph's `anomaly_score` = 1 / (1 + KL[U‖p]), which ranks inputs exactly as KL[U‖p] with "
        "KL[U‖p] = -log k - (1/k) Σ log p_i (large = confident = in-distribution). MSP, KL[U‖p], max-logit and "
        "energy are recomputed from the artifact's logits at T = 1 and negated where needed.",
        f"Base rate 1:{cfg.ratio}: all {n} in-distribution test {unit} against {n // cfg.ratio} {unit} of one "
        f"anomaly set, drawn {cfg.draws} times (seed {cfg.seed}; disjoint draws when the set is large enough). "
        "Per-set numbers are mean ± std (population std, np.std) over the draws; the Mean row averages the "
        "per-set means.",
        "AUROC and AUPR as scikit-learn's `roc_auc_score` and `average_precision_score` (ties by average rank / "
        "step-wise precision; AUPR's chance level is the anomaly base rate, 1/6). "
        f"FPR{recall} = fraction of in-distribution {unit} flagged at the threshold whose recall of anomalies is "
        f"closest to {recall}% (the reference `fpr_and_fdr_at_recall`: among equal recalls the lowest threshold).",
        "Gate: an input is rejected when `anomaly_score >= threshold` (the card's threshold, chosen on held-out "
        "in-distribution data for its acceptance target). 'Anomalies accepted' is measured on every input of the "
        "set, not on draws; 'test acceptance' on the whole test split.",
        f"Calibration (appendix C): the test split plus each draw of anomalies, anomalies counted as wrong; "
        f"adaptive bins of {cfg.bin_size} samples sorted by confidence, the last bin taking the remainder. The last "
        "(most confident) bin is counted: the reference `calib_err` drops it by an off-by-one "
        "(`range(len(bins) - 1)`), so its numbers can be lower. The artifact's `confidence` output is the "
        "temperature + 0-1 rescaling computed inside the graph, so those two rows should agree.",
        "Selective prediction: a pooled mix (test split + "
        f"{n // cfg.ratio} anomalies split evenly over the sets, first draw), ranked by the served score; risk = "
        "error rate among accepted inputs (anomalies are always errors), coverage = fraction accepted.",
        "All outputs come from the exported ONNX graph run by onnxruntime (the service's graph), not from torch.",
    ]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _spread(s: Spread) -> str:
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _name(result: ArtifactResult) -> str:
    return f"{result.artifact.card.name}/{result.artifact.card.version}"


def _detection_table(result: ArtifactResult, score: str, fpr_name: str) -> list[str]:
    rows = [
        [name, _spread(d.fpr), _spread(d.auroc), _spread(d.aupr)]
        for name, d in ((n, s.detection[score]) for n, s in result.sets.items())
    ]
    mean = result.mean_detection(score)
    rows.append(["**Mean**", _pct(mean["fpr"]), _pct(mean["auroc"]), _pct(mean["aupr"])])
    return _table(["Anomaly set", f"{fpr_name} ↓", "AUROC ↑", "AUPR ↑"], rows)


def _compare_table(baseline: ArtifactResult, primary: ArtifactResult, score: str, fpr_name: str) -> list[str]:
    header = ["Anomaly set"] + [f"{m} {role}" for m in (fpr_name, "AUROC", "AUPR") for role in ("Baseline", "+OE")]
    rows = []
    for name in primary.sets:
        b, p = baseline.sets[name].detection[score], primary.sets[name].detection[score]
        rows.append([name] + [_spread(getattr(r, m)) for m in ("fpr", "auroc", "aupr") for r in (b, p)])
    means = [baseline.mean_detection(score), primary.mean_detection(score)]
    rows.append(["**Mean**"] + [_pct(r[m]) for m in ("fpr", "auroc", "aupr") for r in means])
    return _table(header, rows)


def _score_tables(result: ArtifactResult, fpr_name: str) -> list[str]:
    lines: list[str] = []
    scores = [s for s in SCORE_NAMES if s != SERVED_SCORE]
    for metric, title in (("fpr", f"{fpr_name} ↓"), ("auroc", "AUROC ↑"), ("aupr", "AUPR ↑")):
        rows = [
            [name] + [_pct(getattr(s.detection[k], metric).mean) for k in scores] for name, s in result.sets.items()
        ]
        rows.append(["**Mean**"] + [_pct(result.mean_detection(k)[metric]) for k in scores])
        header = ["Anomaly set", *(SCORE_LABELS[k] for k in scores)]
        lines += [f"{title}, {_name(result)}:", "", *_table(header, rows)]
    return lines


def _gate_tables(roles: list[tuple[str, ArtifactResult]]) -> list[str]:
    def row(label: str, get: Any) -> list[str]:
        return [label] + [get(r) for _, r in roles]

    header = [""] + [label for label, _ in roles]
    lines = _table(header, [
        row("threshold (reject if anomaly_score >=)", lambda r: f"{r.artifact.card.threshold.value:.6g}"),
        row("acceptance target", lambda r: _pct(r.artifact.card.threshold.acceptance_target) + "%"),
        row("acceptance on calibration split (card)", lambda r: _pct(r.artifact.card.threshold.calibration_acceptance)
            + "%"),
        row("**acceptance achieved on test**", lambda r: _pct(r.test_acceptance) + "%"),
        row("test accuracy, all", lambda r: _pct(r.test_accuracy) + "%"),
        row("test accuracy, accepted only", lambda r: _pct(r.accepted_test_accuracy) + "%"),
    ])  # fmt: skip
    rows = [row(name, lambda r, n=name: _pct(r.sets[n].accepted_fraction)) for name in roles[-1][1].sets]
    rows.append(row("**Mean**", lambda r: _pct(sum(s.accepted_fraction for s in r.sets.values()) / len(r.sets))))
    note = "Anomalies **accepted** at the card threshold (%, lower is better):"
    return [*lines, note, "", *_table(["Anomaly set", *header[1:]], rows)]


def _calibration_table(roles: list[tuple[str, ArtifactResult]]) -> list[str]:
    rows = []
    for label, result in roles:
        for method in CONFIDENCE_METHODS:
            m = result.mean_calibration(method)
            rows.append([label, CONFIDENCE_LABELS[method], _pct(m["rms"]), _pct(m["mav"]), _pct(m["soft_f1"])])
    return _table(["Artifact", "Confidence", "RMS calib. error ↓", "MAV calib. error ↓", "Soft F1 ↑"], rows)


def _selective_table(roles: list[tuple[str, ArtifactResult]]) -> list[str]:
    rows = []
    for label, r in roles:
        coverage, risk = r.selective_at_threshold
        rows.append([label, _pct(r.selective.aurc), _pct(coverage), _pct(risk), str(len(r.pooled_correct))])
    return _table(["Artifact", "AURC ↓", "coverage at threshold", "risk at threshold", "samples"], rows)


def _unit(evaluation: Evaluation) -> str:
    return "texts" if evaluation.primary.artifact.card.task == "text" else "images"


def render_markdown(evaluation: Evaluation, command: str | None = None, extras: ReportExtras | None = None) -> str:
    extras = extras or ReportExtras()
    primary, baseline, cfg = evaluation.primary, evaluation.baseline, evaluation.config
    fpr_name = f"FPR{round(100 * cfg.recall)}"
    roles = [(_name(primary), primary)] if baseline is None else [("Baseline", baseline), ("+OE", primary)]
    title = _name(primary) + (f" vs {_name(baseline)}" if baseline is not None else "")
    lines = [f"# Evaluation: {title}", ""]
    if command:
        lines += [f"Generated by `{command}`.", ""]
    lines += ["## Validation sets (every choice was made here)", "", *validation_section(roles)]
    lines += [
        "## Test data, read once",
        "",
        f"In-distribution: `{evaluation.in_distribution}` test split, {evaluation.test_samples} {_unit(evaluation)} "
        f"(data seed {evaluation.data_seed}). Anomaly sets: "
        + ", ".join(f"{n} ({s.pool_samples} {_unit(evaluation)}{'' if s.disjoint_draws else ', draws overlap'})"
                    for n, s in primary.sets.items()) + ".",
        "",
        f"## Detection: served score KL[U‖p], {_name(primary)}",
        "",
        *_detection_table(primary, SERVED_SCORE, fpr_name),
    ]  # fmt: skip
    if baseline is not None:
        lines += [
            "## Baseline vs +OE (the paper's Table 1 layout)",
            "",
            *twins_section(baseline, primary),
            f"Baseline = `{baseline.path}`, +OE = `{primary.path}`; served score KL[U‖p]:",
            "",
            *_compare_table(baseline, primary, SERVED_SCORE, fpr_name),
            "The same with MSP as the score for both (the paper's Table 1 detector):",
            "",
            *_compare_table(baseline, primary, "msp", fpr_name),
        ]
    near_far = near_far_section(roles, fpr_name)
    if near_far:
        lines += ["## Near-OOD (held-out topics) and far-OOD", "", *near_far]
    seeds = seed_section(evaluation, extras, fpr_name)
    if seeds:
        lines += ["## Spread over training seeds", "", *seeds]
    reference = reference_section(roles, fpr_name)
    if reference:
        lines += ["## Beside the paper's code (published MNIST outputs)", "", *reference]
    if extras.loso is not None:
        lines += ["## Leave-one-source-out: kinds of input OE never saw", "", *loso_section(extras.loso)]
    lines += ["## Scores side by side (the paper's Table 2, extended)", "", *_score_tables(primary, fpr_name)]
    lines += ["## The gate at the card's threshold", "", *threshold_section(roles), *_gate_tables(roles)]
    lines += [
        "## Calibration (appendix C)",
        "",
        f"Test split + anomalies counted as wrong (1:{cfg.ratio}), mean over the anomaly sets (%):",
        "",
        *_calibration_table(roles),
        "## Selective prediction",
        "",
        *_selective_table(roles),
        "## Figures",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Anomaly score histograms](histograms.png)",
        "",
    ]
    if baseline is not None:
        lines += ["![Anomaly score histograms, baseline](histograms_baseline.png)", ""]
    lines += ["![Reliability diagram](reliability.png)", "", "![Risk-coverage curve](risk_coverage.png)", ""]
    lines += ["## Conventions", ""] + [f"- {c}" for c in conventions(evaluation)] + [""]
    lines += ["Every number, with per-draw values and standard deviations, is in `metrics.json`.", ""]
    return "\n".join(lines)


def _spread_dict(s: Spread) -> dict[str, Any]:
    return {"mean": s.mean, "std": s.std, "values": list(s.values)}


def _group_dict(group: DetectionSpread | CalibrationSpread) -> dict[str, Any]:
    return {key: _spread_dict(getattr(group, key)) for key in group.__dataclass_fields__}


def artifact_dict(result: ArtifactResult) -> dict[str, Any]:
    card = result.artifact.card
    coverage, risk = result.selective_at_threshold
    return {
        "path": str(result.path),
        "name": card.name,
        "version": card.version,
        "model_sha256": card.sha256["model.onnx"],
        "temperature": card.temperature,
        "threshold": card.threshold.model_dump(mode="json"),
        "test": {
            "accuracy": result.test_accuracy,
            "acceptance_at_threshold": result.test_acceptance,
            "accepted_accuracy": result.accepted_test_accuracy,
        },
        "anomaly_sets": {
            name: {
                "pool_samples": s.pool_samples,
                "draw_samples": s.draw_samples,
                "disjoint_draws": s.disjoint_draws,
                "accepted_fraction": s.accepted_fraction,
                "detection": {k: _group_dict(v) for k, v in s.detection.items()},
                "calibration": {k: _group_dict(v) for k, v in s.calibration.items()},
            }
            for name, s in result.sets.items()
        },
        "mean": {
            "detection": {k: result.mean_detection(k) for k in SCORE_NAMES},
            "calibration": {k: result.mean_calibration(k) for k in CONFIDENCE_METHODS},
            "accepted_fraction": sum(s.accepted_fraction for s in result.sets.values()) / len(result.sets),
        },
        "selective": {
            "pooled_samples": len(result.pooled_correct),
            "aurc": result.selective.aurc,
            "coverage_at_threshold": coverage,
            "risk_at_threshold": risk,
        },
    }


def metrics_dict(evaluation: Evaluation, command: str | None = None) -> dict[str, Any]:
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "command": command,
        "config": {**asdict(evaluation.config), "anomalies": list(evaluation.config.anomalies)},
        "in_distribution": {
            "spec": evaluation.in_distribution,
            "data_seed": evaluation.data_seed,
            "test_samples": evaluation.test_samples,
        },
        "scores": {k: SCORE_LABELS[k] for k in SCORE_NAMES},
        "confidence_methods": CONFIDENCE_LABELS,
        "conventions": conventions(evaluation),
        "artifacts": {
            "primary": artifact_dict(evaluation.primary),
            "baseline": artifact_dict(evaluation.baseline) if evaluation.baseline is not None else None,
        },
    }


def _rounded(value: Any, digits: int = JSON_DIGITS) -> Any:
    """Measured floats rounded to `digits` decimals (far below any difference the tables show), recursively;
    values copied from the card (threshold, temperature) stay exact."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: v if k in EXACT_KEYS else _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, digits) for v in value]
    return value


def write_report(
    evaluation: Evaluation, out: Path, command: str | None = None, extras: ReportExtras | None = None
) -> list[Path]:
    """Write report.md, metrics.json and the PNGs into `out` (created if needed); returns the paths written."""
    from training.evaluation.plots import write_figures  # matplotlib is only needed here

    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.json"
    metrics.write_text(json.dumps(_rounded(metrics_dict(evaluation, command)), indent=2) + "\n")
    report = out / "report.md"
    report.write_text(render_markdown(evaluation, command, extras))
    return [report, metrics, *write_figures(evaluation, out)]

"""Report sections beyond one evaluation run: validation sets, the threshold's promise, seed spread, LOSO and the
reference code's published numbers. `report.py` places them; each function returns markdown lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.evaluation.evaluate import SERVED_SCORE, ArtifactResult, Evaluation

# The published outputs of the paper's code for MNIST (hendrycks/outlier-exposure, MNIST/snapshots/baseline_test.txt
# and oe_tune_test.txt: the ConvNet, MSP score, 1:5 base rate): set -> (FPR95, AUROC, AUPR) in %.
REFERENCE_SOURCE = "hendrycks/outlier-exposure `MNIST/snapshots/{baseline,oe_tune}_test.txt` (MSP, the paper's code)"
MNIST_SPECS = frozenset({"mnist", "mnist5k"})
REFERENCE_BASELINE = {
    "gaussian": (0.21, 99.96, 99.81),
    "bernoulli": (1.04, 99.81, 99.01),
    "fashion-mnist": (2.96, 99.31, 96.31),
    "negative": (5.20, 98.55, 91.91),
    "notmnist": (16.64, 96.04, 84.89),
    "omniglot": (14.81, 96.23, 83.85),
}
REFERENCE_OE = {
    "gaussian": (0.00, 100.00, 100.00),
    "bernoulli": (0.00, 100.00, 100.00),
    "fashion-mnist": (0.65, 99.90, 99.52),
    "negative": (0.68, 99.90, 99.50),
    "notmnist": (6.99, 98.37, 93.69),
    "omniglot": (16.57, 95.94, 83.49),
}
SET_LIST_NOTE = (
    "Set list vs the paper's MNIST table: no CIFAR-10-bw and no Icons-50 (not available offline here); Blobs "
    "added; Fashion-MNIST is the real `dataset-fashion-mnist` test split; notMNIST and Omniglot are analogues "
    "rendered from Debian fonts (`training/image/anomalies/rendered_sets.py`), not the original sets; "
    "Rademacher is left out because on [0, 1] pixels it has the law of Bernoulli (it would count one distribution "
    "twice)."
)


@dataclass(frozen=True)
class ReportExtras:
    """What `python -m training evaluate` adds to the report besides the main evaluation."""

    seed_runs: list[Evaluation] = field(default_factory=list)  # other training seeds, same config
    loso: dict[str, Any] | None = None  # loso.json of `python -m training loso`


VALIDATION_SOURCES = {
    "image": "the validation split and noise (`training/image/anomalies/validation_sets.py`)",
    "text": "the training data, noise and a held-out slice of the OE corpus (`training/text/anomalies.py`)",
}
NEAR_OOD_SETS = frozenset({"near-ood"})
"""Text anomaly sets of the same kind of text as the in-distribution data (held-out chatterbot categories)."""


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def validation_section(roles: list[tuple[str, ArtifactResult]]) -> list[str]:
    """The validation anomaly sets as each card records them: what every choice was made on."""
    cards = [(label, result.artifact.card) for label, result in roles]
    sets = [name for name in cards[-1][1].evaluation.get("val_anomalies", {})]
    if not sets:
        return ["The cards hold no validation-set summary (artifacts published before the validation protocol).", ""]
    head = " -> ".join(label for label, _ in cards)
    lines = [
        "From each card (`evaluation.val_anomalies`): the validation split against anomaly sets built from "
        f"{VALIDATION_SOURCES[cards[-1][1].task]}, at the card's threshold. "
        "These, not the test sets below, are what the threshold, temperature and every recipe choice were made on. "
        f"{head}, %:",
        "",
        "| validation set | AUROC ↑ | FPR95 ↓ | accepted ↓ |",
        "|---|---:|---:|---:|",
    ]
    for name in sets:
        cells = []
        for key in ("auroc", "fpr95", "accepted_fraction"):
            values = [card.evaluation.get("val_anomalies", {}).get(name, {}).get(key) for _, card in cards]
            cells.append(" -> ".join("–" if v is None else _pct(v) for v in values))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [card.evaluation.get("mean_auroc") for _, card in cards]
    lines += ["", "Mean validation AUROC: " + " -> ".join("–" if m is None else _pct(m) for m in means) + ".", ""]
    return lines


def twin_training(training: dict[str, Any]) -> str:
    """How a card's net was trained, in the words of the twins' comparison (epochs per stage)."""
    stage, baseline = training.get("stage"), (training.get("baseline") or {}).get("epochs")
    if stage == "oe":
        return f"{baseline} baseline epochs, then {(training.get('oe') or {}).get('epochs')} OE epochs"
    if stage == "matched":
        epochs = (training.get("matched_fine_tune") or {}).get("epochs")
        return (
            f"{baseline} baseline epochs, then {epochs} epochs of the OE stage's schedule and batches with "
            "cross-entropy alone (the matched twin: it differs from +OE by the OE term only)"
        )
    if stage == "baseline":
        return f"{baseline} baseline epochs"
    return "not recorded in the card"


def twins_section(baseline: ArtifactResult, primary: ArtifactResult) -> list[str]:
    """What each twin's training was and their test accuracies: whether the pair compares at equal accuracy."""
    difference = 100 * (primary.test_accuracy - baseline.test_accuracy)
    return [
        f"Training: Baseline = {twin_training(baseline.artifact.card.training)}; "
        f"+OE = {twin_training(primary.artifact.card.training)}. Test accuracy: Baseline "
        f"{_pct(baseline.test_accuracy)}%, +OE {_pct(primary.test_accuracy)}% ({difference:+.2f} points).",
        "",
    ]


def threshold_section(roles: list[tuple[str, ArtifactResult]]) -> list[str]:
    """Each card's threshold rule, what it promises, and the acceptance measured on the (unseen) test split."""
    lines = [
        "| Artifact | rule | n | delta | acceptance promised | validation acceptance | **test acceptance** |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    promises = []
    for label, result in roles:
        t = result.artifact.card.threshold
        promises.append(f"- {label} (`{t.method}`): {t.promise or 'acceptance >= target on average (conformal)'}")
        lines.append(
            f"| {label} | {t.method} | {t.calibration_samples} | {t.delta if t.delta is not None else '–'} | "
            f">= {_pct(t.acceptance_target or 0)}% | {_pct(t.calibration_acceptance or 0)}% | "
            f"**{_pct(result.test_acceptance)}%** |"
        )
    return [
        *lines,
        "",
        "What each rule promises (for inputs exchangeable with the calibration split):",
        "",
        *promises,
        "",
    ]


def seed_section(main: Evaluation, extras: ReportExtras, fpr_name: str) -> list[str]:
    """Per-set served-score AUROC and FPR, mean ± std over training seeds (seed 0 is the committed artifact)."""
    runs = [main, *extras.seed_runs]
    if len(runs) < 2:
        return []
    seeds = [int(run.primary.artifact.card.training.get("seed", -1)) for run in runs]
    lines = [
        f"Seeds {', '.join(map(str, seeds))} (same config, each its own baseline and OE fine-tune; seed "
        f"{seeds[0]} is the committed artifact). Mean ± std over seeds of the per-set means (served score, %):",
        "",
        f"| set | Baseline AUROC | +OE AUROC | Baseline {fpr_name} | +OE {fpr_name} | +OE accepted at threshold |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def spread(values: list[float]) -> str:
        return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"

    have_baseline = all(run.baseline is not None for run in runs)
    for name in main.primary.sets:
        oe = [run.primary.sets[name] for run in runs]
        base = [run.baseline.sets[name] for run in runs if run.baseline is not None]
        lines.append(
            f"| {name} | {spread([b.detection[SERVED_SCORE].auroc.mean for b in base]) if have_baseline else '–'} | "
            f"{spread([o.detection[SERVED_SCORE].auroc.mean for o in oe])} | "
            f"{spread([b.detection[SERVED_SCORE].fpr.mean for b in base]) if have_baseline else '–'} | "
            f"{spread([o.detection[SERVED_SCORE].fpr.mean for o in oe])} | "
            f"{spread([o.accepted_fraction for o in oe])} |"
        )
    mean = lambda run, key: run.mean_detection(SERVED_SCORE)[key]  # noqa: E731
    base_runs = [run.baseline for run in runs if run.baseline is not None]
    lines.append(
        f"| **mean** | {spread([mean(b, 'auroc') for b in base_runs]) if have_baseline else '–'} | "
        f"{spread([mean(r.primary, 'auroc') for r in runs])} | "
        f"{spread([mean(b, 'fpr') for b in base_runs]) if have_baseline else '–'} | "
        f"{spread([mean(r.primary, 'fpr') for r in runs])} | "
        f"{spread([float(np.mean([s.accepted_fraction for s in r.primary.sets.values()])) for r in runs])} |"
    )
    lines += [
        "",
        "Test accuracy: +OE "
        + spread([r.primary.test_accuracy for r in runs])
        + ("; Baseline " + spread([b.test_accuracy for b in base_runs]) if have_baseline else "")
        + ". Test acceptance at the threshold: +OE "
        + spread([r.primary.test_acceptance for r in runs])
        + ".",
        "",
    ]
    return lines


def reference_section(roles: list[tuple[str, ArtifactResult]], fpr_name: str) -> list[str]:
    """Our twins beside the reference code's published MNIST numbers, MSP score as there, sets both have."""
    results = dict(roles)
    ours = [(label, results[label]) for label in ("Baseline", "+OE") if label in results]
    shared = [name for name in REFERENCE_BASELINE if all(name in r.sets for _, r in ours)]
    trained_on = ours[0][1].artifact.card.training.get("data", {}).get("in_distribution") if ours else None
    if not shared or fpr_name != "FPR95" or trained_on not in MNIST_SPECS:
        return []  # the reference numbers are MNIST's: beside another model they would compare nothing
    lines = [
        f"MSP score (as the reference), {fpr_name} / AUROC / AUPR in %. Reference: {REFERENCE_SOURCE}. Their "
        "notMNIST and Omniglot are the original sets; ours are font-rendered analogues, so those rows compare "
        "kinds, not the same images.",
        "",
        "| set | reference baseline | our baseline | reference OE | our +OE |",
        "|---|---|---|---|---|",
    ]
    for name in shared:
        cells = []
        for reference, label in ((REFERENCE_BASELINE, "Baseline"), (REFERENCE_OE, "+OE")):
            cells.append(" / ".join(f"{v:.2f}" for v in reference[name]))
            if label in results:
                d = results[label].sets[name].detection["msp"]
                cells.append(f"{_pct(d.fpr.mean)} / {_pct(d.auroc.mean)} / {_pct(d.aupr.mean)}")
            else:
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, "", SET_LIST_NOTE, ""]


def loso_section(loso: dict[str, Any]) -> list[str]:
    """The leave-one-source-out table of `python -m training loso` (training data only)."""
    return [
        "Each group of the OE pool's sources held out in turn: OE fine-tuned without it, then that group scored as "
        "anomalies. This estimates how the gate does on kinds of input it never saw. Only training data is used "
        f"(the pool and the validation split). Command: `{loso.get('command', '?')}`.",
        "",
        loso_table(loso),
        "",
    ]


LOSO_TWINS = ("oe", "baseline", "whole_oe", "whole_baseline", "in_pool_oe")


def loso_summary(rows: dict[str, Any]) -> dict[str, Any]:
    """Per twin recorded in every row: mean and worst AUROC, mean FPR95, mean and worst accepted share."""
    if not rows:
        return {}
    summary: dict[str, Any] = {}
    for twin in LOSO_TWINS:
        if not all(twin in row for row in rows.values()):
            continue
        aurocs = [row[twin]["auroc"] for row in rows.values()]
        accepted = [row[twin]["accepted_fraction"] for row in rows.values()]
        summary[twin] = {
            "mean_auroc": float(np.mean(aurocs)),
            "worst_auroc": float(np.min(aurocs)),
            "mean_fpr95": float(np.mean([row[twin]["fpr95"] for row in rows.values()])),
            "mean_accepted_fraction": float(np.mean(accepted)),
            "worst_accepted_fraction": float(np.max(accepted)),
        }
    return summary


def _loso_rows(result: dict[str, Any], oe: str, baseline: str) -> list[str]:
    lines = [
        "| held-out group | images | AUROC ↑ | FPR95 ↓ | accepted at the threshold ↓ |",
        "|---|---:|---:|---:|---:|",
    ]
    count = "group_images" if oe == "oe" else "whole_images"
    for name, row in result["groups"].items():
        b, o = row[baseline], row[oe]
        lines.append(
            f"| {name} | {row[count]:,} | {100 * b['auroc']:.2f} -> {100 * o['auroc']:.2f} | "
            f"{100 * b['fpr95']:.2f} -> {100 * o['fpr95']:.2f} | "
            f"{100 * b['accepted_fraction']:.2f} -> {100 * o['accepted_fraction']:.2f} |"
        )
    s = result["summary"]
    if oe in s and baseline in s:
        b, o = s[baseline], s[oe]
        lines.append(
            f"| **mean** (worst) | | {100 * b['mean_auroc']:.2f} -> {100 * o['mean_auroc']:.2f} "
            f"({100 * o['worst_auroc']:.2f}) | {100 * b['mean_fpr95']:.2f} -> {100 * o['mean_fpr95']:.2f} | "
            f"{100 * b['mean_accepted_fraction']:.2f} -> {100 * o['mean_accepted_fraction']:.2f} "
            f"({100 * o['worst_accepted_fraction']:.2f}) |"
        )
    return lines


def _fpr_ratio(oe: float, baseline: float) -> str:
    """OE's FPR95 as a multiple of the baseline's (the text goal: at most 0.5 on every unseen set)."""
    return f"{oe / baseline:.2f}" if baseline > 0 else ("0.00" if oe == 0 else "inf")


def _text_loso_table(result: dict[str, Any]) -> str:
    """Text LOSO: per left-out group, baseline -> OE without the group, the FPR95 ratio, and OE on the whole corpus
    (the group seen) on the same held-out sentences."""
    lines = [
        f"OE fine-tuned {result['oe_epochs']} epochs on the corpus `{result['pool']}` minus the left-out group "
        f"(reference: the whole corpus, {result['corpus_sentences']:,} sentences); temperature and threshold "
        f"({result['threshold_method']} rule at {result['acceptance_target']:.0%} acceptance) fitted on "
        f"{result['in_distribution']}; up to {result['held_out_samples_per_group']} sentences of the group's held-out "
        "slice (never trained on by any run) scored against the validation texts. Torch fp32 scores, %.",
        "",
        "| left-out group | texts | AUROC: baseline -> OE without it (with it) ↑ | FPR95: baseline -> OE without it "
        "(with it) ↓ | FPR95 OE / baseline ↓ | accepted at the threshold: baseline -> OE without it (with it) ↓ |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["groups"].items():
        b, o, p = row["baseline"], row["oe"], row["in_pool_oe"]
        lines.append(
            f"| {name} | {row['group_texts']:,} | {100 * b['auroc']:.2f} -> {100 * o['auroc']:.2f} "
            f"({100 * p['auroc']:.2f}) | {100 * b['fpr95']:.2f} -> {100 * o['fpr95']:.2f} ({100 * p['fpr95']:.2f}) | "
            f"{_fpr_ratio(o['fpr95'], b['fpr95'])} | {100 * b['accepted_fraction']:.2f} -> "
            f"{100 * o['accepted_fraction']:.2f} ({100 * p['accepted_fraction']:.2f}) |"
        )
    s = result["summary"]
    if {"oe", "baseline", "in_pool_oe"} <= set(s):
        b, o, p = s["baseline"], s["oe"], s["in_pool_oe"]
        lines.append(
            f"| **mean** (worst) | | {100 * b['mean_auroc']:.2f} -> {100 * o['mean_auroc']:.2f} "
            f"({100 * p['mean_auroc']:.2f}); worst {100 * o['worst_auroc']:.2f} | {100 * b['mean_fpr95']:.2f} -> "
            f"{100 * o['mean_fpr95']:.2f} ({100 * p['mean_fpr95']:.2f}) | "
            f"{_fpr_ratio(o['mean_fpr95'], b['mean_fpr95'])} | {100 * b['mean_accepted_fraction']:.2f} -> "
            f"{100 * o['mean_accepted_fraction']:.2f} ({100 * p['mean_accepted_fraction']:.2f}); worst "
            f"{100 * o['worst_accepted_fraction']:.2f} |"
        )
    return "\n".join(lines)


def loso_table(result: dict[str, Any]) -> str:
    """The LOSO tables in markdown, one row per held-out group, baseline -> OE: for images the group's pool samples,
    then its pictures whole (when recorded); for text (`task = "text"`) one table with the reference run."""
    if result.get("task") == "text":
        return _text_loso_table(result)
    lines = [
        f"OE fine-tuned {result['oe_epochs']} epochs on the pool `{result['pool']}` minus the held-out group; "
        f"threshold: {result['threshold_method']} rule at {result['acceptance_target']:.0%} acceptance on "
        f"{result['in_distribution']}; up to {result['held_out_samples_per_group']} images of the held-out group "
        "scored against the validation digits. Baseline -> OE, %.",
        "",
        "The held-out group's pool samples (the recipe's random views):",
        "",
        *_loso_rows(result, "oe", "baseline"),
    ]
    if all("whole_oe" in row for row in result["groups"].values()) and result["groups"]:
        lines += [
            "",
            "The held-out group's pictures whole, as a user would send them (on white, and inverted):",
            "",
            *_loso_rows(result, "whole_oe", "whole_baseline"),
        ]
    return "\n".join(lines)


def near_far_section(roles: list[tuple[str, ArtifactResult]], fpr_name: str) -> list[str]:
    """Text: near-OOD (held-out categories of the same corpus) apart from the mean over the far-OOD sets."""
    sets = list(roles[-1][1].sets)
    near = [n for n in sets if n in NEAR_OOD_SETS]
    far = [n for n in sets if n not in NEAR_OOD_SETS]
    if not near or not far:
        return []
    lines = [
        f"Near-OOD = held-out topic categories of the in-distribution corpus ({', '.join(near)}); far-OOD = "
        f"the mean over the other sets ({', '.join(far)}). Served score KL[U‖p], %:",
        "",
        f"| | near-OOD AUROC ↑ | near-OOD {fpr_name} ↓ | far-OOD mean AUROC ↑ | far-OOD mean {fpr_name} ↓ |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, result in roles:
        near_rows = [result.sets[n].detection[SERVED_SCORE] for n in near]
        far_rows = [result.sets[n].detection[SERVED_SCORE] for n in far]
        cells = [
            _pct(sum(r.auroc.mean for r in near_rows) / len(near_rows)),
            _pct(sum(r.fpr.mean for r in near_rows) / len(near_rows)),
            _pct(sum(r.auroc.mean for r in far_rows) / len(far_rows)),
            _pct(sum(r.fpr.mean for r in far_rows) / len(far_rows)),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]

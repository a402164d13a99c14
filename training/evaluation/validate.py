"""`python -m training validate`: score published artifacts (text or image) on validation anomaly sets, never on
test data.

For comparing recipes after the fact on sets a card does not hold (for example one OE group's held-out slice, for
a leave-one-source-out estimate, or a validation set added after the artifact was published): the in-distribution
validation split is rebuilt from the card (the test split stays sealed), every input runs through the artifact's own
graph (and tokenizer), and each set is scored against the validation split as the pipeline does (AUROC, FPR95, share
accepted at the card's threshold).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.image.anomalies.validation_sets import DEFAULT_VALIDATION_SET_NAMES, VALIDATION_SET_NAMES
from training.text.anomalies import TEXT_VALIDATION_SETS, load_text_validation_anomalies
from training.text.corpora import load_text_in_distribution

MEAN_KEYS = ("auroc", "fpr95", "accepted_fraction")


def _text_validation_data(card: Any) -> Any:
    """The card's text in-distribution data rebuilt with its seed and fractions, the test split sealed."""
    summary = card.training.get("data", {})
    test_file = summary.get("test_file")
    return load_text_in_distribution(
        summary["in_distribution"], seed=int(card.training.get("seed", 0)),
        val_fraction=float(summary.get("val_fraction", 0.15)), test_fraction=float(summary.get("test_fraction", 0.2)),
        test_path=Path(test_file) if test_file else None, held_out_classes=summary.get("held_out_classes") or (),
    ).sealed()  # fmt: skip


def _image_validation_data(card: Any) -> Any:
    """The card's image in-distribution data rebuilt with its seed and validation fraction, the test split sealed."""
    from training.data.registry import load_in_distribution

    summary = card.training.get("data", {})
    return load_in_distribution(
        summary["in_distribution"], seed=int(card.training.get("seed", 0)),
        val_fraction=float(summary.get("val_fraction", 0.1)), held_out_classes=summary.get("held_out_classes") or (),
    ).sealed()  # fmt: skip


def validation_run(artifact: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(the card's in-distribution data rebuilt, test split sealed; a loaded artifact's outputs on its validation
    split), text or image."""
    from training.data.base import as_float

    if artifact.card.task == "text":
        text_data = _text_validation_data(artifact.card)
        return text_data, artifact.run_texts(text_data.val.texts)
    image_data = _image_validation_data(artifact.card)
    return image_data, artifact.run(as_float(image_data.val.images))


def threshold_for_acceptance(val_scores: np.ndarray, target: float) -> float:
    """The threshold that accepts the ceil(target * n) lowest-scoring validation inputs (reject = score >= it):
    what a gate at that acceptance target would use, fitted on the validation split alone (ties aside)."""
    ranked = np.sort(np.asarray(val_scores, np.float64))
    k = int(np.ceil(target * len(ranked) - 1e-9))
    return float(ranked[k]) if k < len(ranked) else float("inf")


def accepted_at_targets(
    val_scores: np.ndarray, anomaly_scores: np.ndarray, targets: Sequence[float]
) -> dict[float, tuple[float, float]]:
    """{target: (threshold, share of the anomalies accepted there)} for thresholds fitted on the validation scores."""
    out = {}
    for target in targets:
        threshold = threshold_for_acceptance(val_scores, target)
        out[target] = (threshold, float(np.mean(np.asarray(anomaly_scores) < threshold)))
    return out


def validate_artifact(
    artifact_dir: Path, sets: list[str], samples: int, targets: Sequence[float] = ()
) -> dict[str, Any]:
    """Validation accuracy and, per set, detection figures of one artifact, text or image (validation data only),
    and with `targets` the share of each set accepted by thresholds fitted on the validation split."""
    from training.artifact import load_artifact  # onnxruntime and torch only when the command runs
    from training.data.base import as_float
    from training.data.registry import load_anomalies
    from training.evaluation.metrics import detection_figures

    artifact = load_artifact(artifact_dir)
    card = artifact.card
    seed = int(card.training.get("seed", 0))
    data, val = validation_run(artifact)
    assert data.val.labels is not None

    def set_scores(name: str) -> np.ndarray:
        if card.task == "text":
            return artifact.run_texts(load_text_validation_anomalies(name, data, size=samples, seed=seed))[
                "anomaly_score"
            ]
        return artifact.run(as_float(load_anomalies(name, data, n=samples, seed=seed)))["anomaly_score"]

    scores = {name: set_scores(name) for name in sets}
    return {
        "artifact": f"{card.name}/{card.version}",
        "val_accuracy": float(np.mean(val["logits"].argmax(1) == data.val.labels)),
        "sets": {name: detection_figures(val["anomaly_score"], s, card.threshold.value) for name, s in scores.items()},
        "at_targets": {name: accepted_at_targets(val["anomaly_score"], s, targets) for name, s in scores.items()},
    }


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, action="append", required=True, metavar="DIR", help="repeatable")
    parser.add_argument(
        "--sets", nargs="+", choices=sorted({*TEXT_VALIDATION_SETS, *VALIDATION_SET_NAMES}), metavar="SET",
        help=f"validation anomaly sets; text: {', '.join(TEXT_VALIDATION_SETS)} (default val-oe-heldout); image: "
        f"{', '.join(VALIDATION_SET_NAMES)} (default: all but val-heldout-classes, which needs classes held out, "
        "and val-glyphs, val-glyphs-cyrillic, val-printed-cyrillic, drawn from fonts)",
    )  # fmt: skip
    parser.add_argument("--samples", type=int, help="inputs per set (at most; default 500 texts, 2000 images)")
    parser.add_argument(
        "--acceptance", type=_acceptance_target, nargs="+", default=[], metavar="TARGET",
        help="also print, per set, the share accepted by a threshold fitted on the validation split to accept "
        "TARGET of it (e.g. 0.95 0.9 0.8): how a lower acceptance target trades in-distribution acceptance for "
        "refusals",
    )  # fmt: skip


def _acceptance_target(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"an acceptance target is a share in (0, 1], not {text}")
    return value


def _validate_one(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from training.artifact import read_card

    card = read_card(path)
    if card.task == "text":
        sets = args.sets or ["val-oe-heldout"]
        wrong = sorted(set(sets) - set(TEXT_VALIDATION_SETS))
        if wrong:
            raise ValueError(f"{path} is a text artifact: {', '.join(wrong)} are image validation sets")
        return validate_artifact(path, sets, args.samples or 500, args.acceptance)
    sets = args.sets or list(DEFAULT_VALIDATION_SET_NAMES)
    wrong = sorted(set(sets) - set(VALIDATION_SET_NAMES))
    if wrong:
        raise ValueError(f"{path} is an image artifact: {', '.join(wrong)} are text validation sets")
    return validate_artifact(path, sets, args.samples or 2000, args.acceptance)


def run_validate(args: argparse.Namespace) -> int:
    results = [_validate_one(path, args) for path in args.artifact]
    names = list(results[0]["sets"])
    if any(list(r["sets"]) != names for r in results):
        raise ValueError("compare artifacts of one task at a time (their validation sets differ)")
    print(
        "| artifact | val accuracy | "
        + " | ".join(f"{s} AUROC / FPR95 / accepted" for s in names)
        + " | mean AUROC / FPR95 / accepted |"
    )
    print("|---|---:|" + "---:|" * (len(names) + 1))
    for path, r in zip(args.artifact, results, strict=True):
        cells = [
            f"{100 * f['auroc']:.2f} / {100 * f['fpr95']:.2f} / {100 * f['accepted_fraction']:.2f}"
            for f in r["sets"].values()
        ]
        means = [100 * float(np.mean([f[key] for f in r["sets"].values()])) for key in MEAN_KEYS]
        cells.append(" / ".join(f"{m:.2f}" for m in means))
        print(f"| {r['artifact']} (`{path}`) | {100 * r['val_accuracy']:.2f} | " + " | ".join(cells) + " |")
    if args.acceptance:
        print()
        print(
            "| artifact | set | " + " | ".join(f"threshold / accepted at {100 * t:g}%" for t in args.acceptance) + " |"
        )
        print("|---|---|" + "---:|" * len(args.acceptance))
        for path, r in zip(args.artifact, results, strict=True):
            for name, at in r["at_targets"].items():
                cells = [f"{threshold:.4f} / {100 * share:.2f}" for threshold, share in at.values()]
                print(f"| {r['artifact']} (`{path}`) | {name} | " + " | ".join(cells) + " |")
    return 0

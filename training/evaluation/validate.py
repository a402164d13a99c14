"""`python -m training validate`: score published text artifacts on validation anomaly sets, never on test data.

For comparing recipes after the fact on sets a card does not hold (for example one OE group's held-out slice, for
a leave-one-source-out estimate): the in-distribution validation split is rebuilt from the card (the test split
stays sealed), every input runs through the artifact's own graph and tokenizer, and each set is scored against the
validation split as the pipeline does (AUROC, FPR95, share accepted at the card's threshold).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from training.text.anomalies import TEXT_VALIDATION_SETS, load_text_validation_anomalies
from training.text.corpora import load_text_in_distribution


def validate_text_artifact(artifact_dir: Path, sets: list[str], samples: int) -> dict[str, Any]:
    """Validation accuracy and, per set, detection figures of one text artifact (validation data only)."""
    from training.artifact import load_artifact  # onnxruntime and torch only when the command runs
    from training.evaluation.metrics import detection_figures

    artifact = load_artifact(artifact_dir)
    card = artifact.card
    summary = card.training.get("data", {})
    seed = int(card.training.get("seed", 0))
    test_file = summary.get("test_file")
    data = load_text_in_distribution(
        summary["in_distribution"], seed=seed, val_fraction=float(summary.get("val_fraction", 0.15)),
        test_fraction=float(summary.get("test_fraction", 0.2)), test_path=Path(test_file) if test_file else None,
    ).sealed()  # fmt: skip
    assert data.val.labels is not None
    val = artifact.run_texts(data.val.texts)
    in_scores = val["anomaly_score"]
    figures = {
        name: detection_figures(
            in_scores,
            artifact.run_texts(load_text_validation_anomalies(name, data, size=samples, seed=seed))["anomaly_score"],
            card.threshold.value,
        )
        for name in sets
    }
    accuracy = float(np.mean(val["logits"].argmax(1) == data.val.labels))
    return {"artifact": f"{card.name}/{card.version}", "val_accuracy": accuracy, "sets": figures}


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, action="append", required=True, metavar="DIR", help="repeatable")
    parser.add_argument(
        "--sets", nargs="+", default=["val-oe-heldout"], choices=sorted(TEXT_VALIDATION_SETS), metavar="SET",
        help=f"validation anomaly sets (one of: {', '.join(TEXT_VALIDATION_SETS)})",
    )  # fmt: skip
    parser.add_argument("--samples", type=int, default=500, help="texts per set (at most; default 500)")


def run_validate(args: argparse.Namespace) -> int:
    results = [validate_text_artifact(path, args.sets, args.samples) for path in args.artifact]
    print("| artifact | val accuracy | " + " | ".join(f"{s} AUROC / FPR95 / accepted" for s in args.sets) + " |")
    print("|---|---:|" + "---:|" * len(args.sets))
    for r in results:
        cells = [
            f"{100 * f['auroc']:.2f} / {100 * f['fpr95']:.2f} / {100 * f['accepted_fraction']:.2f}"
            for f in r["sets"].values()
        ]
        print(
            f"| {r['artifact']} (`{args.artifact[results.index(r)]}`) | {100 * r['val_accuracy']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return 0

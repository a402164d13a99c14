"""What both modalities' retraining share: scoring a version for the promotion rule, and mixing captures in.

A version is scored by `score(inputs) -> (anomaly_score, predicted class)` on the same inputs for candidate and
live: float32 NCHW images in [0, 1], or a list of texts. Each version is judged at its own threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.artifact import Artifact, load_artifact
from training.captures.promotion import PromotionRule, check

Inputs = Any  # float32 [N, C, H, W] images, or a sequence of texts: anything `score` takes and `len` measures
Score = Callable[[Inputs], tuple[np.ndarray, np.ndarray]]


def figures(
    score: Score,
    threshold: float,
    val: tuple[Inputs, np.ndarray],
    anomalies: Mapping[str, Inputs],
    heldout: tuple[Inputs, Inputs, np.ndarray],
) -> dict[str, Any]:
    """One version's figures: validation accuracy and acceptance, AUROC per validation anomaly set, and on the
    held-back captures the share of outliers rejected and of in-distribution ones accepted (and classified right)."""
    from training.evaluation.metrics import detection_figures

    val_inputs, val_labels = val
    val_scores, val_predicted = score(val_inputs)
    cut = np.float32(threshold)
    outliers, valid, valid_labels = heldout
    result: dict[str, Any] = {
        "threshold": threshold,
        "val_accuracy": float(np.mean(val_predicted == val_labels)),
        "val_acceptance": float(np.mean(val_scores < cut)),
        "val_anomalies": {
            name: detection_figures(val_scores, score(inputs)[0], threshold) for name, inputs in anomalies.items()
        },
    }
    captures: dict[str, Any] = {"outliers": len(outliers), "in_distribution": len(valid)}
    if len(outliers):
        captures["outliers_rejected"] = float(np.mean(score(outliers)[0] >= cut))
    if len(valid):
        valid_scores, valid_predicted = score(valid)
        captures["in_distribution_accepted"] = float(np.mean(valid_scores < cut))
        captures["in_distribution_accuracy"] = float(np.mean(valid_predicted == valid_labels))
    result["captures"] = captures
    return result


def capture_repeats(base: int, captures: int, share: float) -> int:
    """How often the outlier captures are repeated to make up about `share` of base + repeated captures."""
    return max(1, math.ceil(share * base / ((1.0 - share) * captures))) if captures else 0


def pool_record(base: int, outliers: int, repeats: int, in_distribution: int) -> dict[str, Any]:
    """The card's record of how captures joined the OE pool (or corpus) and the training data."""
    mixed = base + outliers * repeats
    return {
        "base_pool_samples": base,
        "outlier_captures": outliers,
        "outlier_capture_repeats": repeats,
        "outlier_capture_share": round(outliers * repeats / mixed, 4) if mixed else 0.0,
        "in_distribution_captures": in_distribution,
    }


def promotion_record(
    rule: PromotionRule, candidate: dict[str, Any], live_figures: dict[str, Any], live: Artifact, live_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """(the card's `evaluation.promotion`, the rule's rows, passed)."""
    rows = check(rule, candidate, live_figures)
    passed = all(row["passed"] for row in rows)
    record = {
        "rule": rule.model_dump(mode="json"),
        "live": {"path": str(live_dir), "name": live.card.name, "version": live.card.version},
        "candidate": candidate,
        "live_figures": live_figures,
        "checks": rows,
        "passed": passed,
    }
    return record, rows, passed


def trained_on_note(live: Artifact, in_distribution: str) -> list[str]:
    """A note when the live version was trained on other data than the candidate (its figures may be optimistic)."""
    live_data = live.card.training.get("data", {}).get("in_distribution")
    if live_data == in_distribution:
        return []
    return [
        f"the live version was trained on {live_data!r}, the candidate on {in_distribution!r}: the validation split "
        "is the candidate's, which the live version may have trained on (its figures may be optimistic)"
    ]


def live_version(live_dir: Path, task: str, export_name: str) -> Artifact:
    """The live version retraining starts from; ValueError unless it is a `task` model named `export_name` (the
    candidate must be a new version of that model, of the config's modality)."""
    live = load_artifact(live_dir)
    if live.card.task != task:
        raise ValueError(f"{live_dir} is {_a(live.card.task)} model, and the config is {_a(task)} config")
    if export_name != live.card.name:
        raise ValueError(
            f"the live version is {live.card.name!r} but export.name is {export_name!r}: the candidate must be "
            f"a new version of the live model (--set export.name={live.card.name})"
        )
    return live


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"

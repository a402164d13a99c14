"""Evaluation like the Outlier Exposure paper (Hendrycks, Mazeika & Dietterich, ICLR 2019, Sec. 4 and App. C),
run on the exported artifact through onnxruntime, i.e. the graph the service runs.

Protocol (as the reference `MNIST/test.py` of hendrycks/outlier-exposure):
- every in-distribution test image is scored once; each anomaly set is scored once as a pool, then subsampled to
  len(test) // 5 images (base rate 1:5) `draws` times with seeded draws (disjoint when the pool is large enough);
  every per-set number is the mean ± (population) std over the draws, and the "mean" row averages the per-set means.
- detection: anomalies are the positive class, scores higher = more anomalous (`training.evaluation.metrics`);
- the gate: anomalies accepted = fraction of the whole pool with `anomaly_score < card threshold`;
- calibration: the test set with each draw of anomalies counted as wrong (1:5);
- selective prediction: one pooled mix (test + len(test) // 5 anomalies split evenly over the sets, first draw).

`report.py` writes the tables, `plots.py` the figures, `command.py` is `python -m training evaluate`; none of
them is imported here, so the report depends on the evaluation and never the other way round.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from training.artifact import Artifact, load_artifact
from training.data.base import DataError, InDistribution, as_float
from training.data.registry import anomaly_set_size, load_anomalies, load_in_distribution
from training.evaluation.metrics import (
    CalibrationErrors,
    RiskCoverage,
    calibration_errors,
    detection_metrics,
    risk_coverage,
    selective_risk,
    soft_f1,
)
from training.scores import ANOMALY_SCORES, rescaled_confidence
from training.text.anomalies import TEXT_ANOMALY_SET_NAMES, load_text_anomalies, text_anomaly_set_size
from training.text.corpora import load_text_in_distribution
from training.text.data import TextInDistribution

log = logging.getLogger(__name__)

PUBLIC_ANOMALY_SETS = ("gaussian", "bernoulli", "blobs", "negative", "fashion-mnist", "notmnist", "omniglot")
"""The default test anomaly sets. Not `rademacher`: on [0, 1] pixels it has the law of `bernoulli`
(`data/synthetic.py`), so the mean would count one distribution twice."""
SERVED_SCORE = "anomaly_score"
"""The graph's `anomaly_score` = 1 / (1 + KL[U||p]): the gate's score, ranked exactly as KL[U||p]."""
SCORE_NAMES = (SERVED_SCORE, *ANOMALY_SCORES)
CONFIDENCE_METHODS = ("softmax", "temperature", "temperature_rescaled", "artifact")
"""Confidence in [0, 1]: max softmax(z) (T = 1); max softmax(z / T); its 0-1 rescaling (c - 1/k) / (1 - 1/k);
the graph's own `confidence` output (by construction the same rescaling, computed inside the graph)."""


class EvaluationError(ValueError):
    """Evaluation cannot run as asked: no in-distribution spec, artifacts that cannot be compared, too few images."""


@dataclass(frozen=True)
class EvaluationConfig:
    anomalies: tuple[str, ...] = ()  # default: PUBLIC_ANOMALY_SETS (images) or TEXT_ANOMALY_SET_NAMES (text)
    recall: float = 0.95
    draws: int = 10
    seed: int = 0
    ratio: int = 5  # in-distribution : anomalies
    bin_size: int = 100
    in_distribution: str | None = None  # default: the primary card's training data
    data_seed: int | None = None  # default: the primary card's training seed (it fixes seeded splits)


@dataclass(frozen=True)
class Spread:
    """A number measured over draws: mean, population std (np.std, as the reference prints), the values."""

    mean: float
    std: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(float(np.mean(values)), float(np.std(values)), tuple(float(v) for v in values))


@dataclass(frozen=True)
class Outputs:
    """One artifact's per-image outputs on one image set; every detection score is higher = more anomalous."""

    scores: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    predictions: np.ndarray

    def take(self, index: np.ndarray) -> Outputs:
        return Outputs(
            {k: v[index] for k, v in self.scores.items()},
            {k: v[index] for k, v in self.confidence.items()},
            self.predictions[index],
        )

    @staticmethod
    def concat(parts: Sequence[Outputs]) -> Outputs:
        return Outputs(
            {k: np.concatenate([p.scores[k] for p in parts]) for k in parts[0].scores},
            {k: np.concatenate([p.confidence[k] for p in parts]) for k in parts[0].confidence},
            np.concatenate([p.predictions for p in parts]),
        )


def artifact_outputs(artifact: Artifact, inputs: np.ndarray | Sequence[str]) -> Outputs:
    """Run the graph on float32 [0, 1] images or on texts; derive the comparison scores from its logits."""
    out = artifact.run(inputs) if isinstance(inputs, np.ndarray) else artifact.run_texts(inputs)
    logits = torch.from_numpy(out["logits"].astype(np.float64))
    scores = {SERVED_SCORE: out["anomaly_score"]}
    scores.update({name: fn(logits).numpy() for name, fn in ANOMALY_SCORES.items()})
    top = out["probs"].astype(np.float64).max(axis=1)
    k = artifact.card.num_classes
    confidence = {
        "softmax": torch.softmax(logits, dim=-1).amax(dim=-1).numpy(),
        "temperature": top,
        "temperature_rescaled": rescaled_confidence(torch.from_numpy(top), k).numpy(),
        "artifact": out["confidence"].astype(np.float64),
    }
    # Float rounding can put a confidence a hair outside [0, 1] (e.g. rescaling a max prob of 1/k - eps).
    confidence = {name: np.clip(c, 0.0, 1.0) for name, c in confidence.items()}
    return Outputs(scores, confidence, out["logits"].argmax(axis=1))


@dataclass(frozen=True)
class DetectionSpread:
    auroc: Spread
    aupr: Spread
    fpr: Spread


@dataclass(frozen=True)
class CalibrationSpread:
    rms: Spread
    mav: Spread
    soft_f1: Spread


@dataclass(frozen=True)
class SetResult:
    name: str
    pool_samples: int
    draw_samples: int
    disjoint_draws: bool
    detection: dict[str, DetectionSpread]  # SCORE_NAMES -> metrics
    calibration: dict[str, CalibrationSpread]  # CONFIDENCE_METHODS -> metrics
    accepted_fraction: float  # of the pool, anomaly_score < threshold
    outputs: Outputs = field(repr=False)


@dataclass(frozen=True)
class ArtifactResult:
    path: Path
    artifact: Artifact = field(repr=False)
    test: Outputs = field(repr=False)
    test_accuracy: float
    test_acceptance: float  # in-distribution test images with anomaly_score < threshold
    accepted_test_accuracy: float
    sets: dict[str, SetResult]
    pooled: Outputs = field(repr=False)  # the pooled mix: test + anomalies split evenly over the sets
    pooled_correct: np.ndarray = field(repr=False)  # anomalies count as wrong
    selective: RiskCoverage = field(repr=False)  # on the pooled mix, ranked by the served score (accept low first)
    selective_at_threshold: tuple[float, float]  # (coverage, risk) of the card threshold on the pooled mix

    def mean_detection(self, score: str) -> dict[str, float]:
        """The paper's "mean" row: per-set means averaged over the anomaly sets."""
        rows = [s.detection[score] for s in self.sets.values()]
        return {m: float(np.mean([getattr(r, m).mean for r in rows])) for m in ("auroc", "aupr", "fpr")}

    def mean_calibration(self, method: str) -> dict[str, float]:
        rows = [s.calibration[method] for s in self.sets.values()]
        return {m: float(np.mean([getattr(r, m).mean for r in rows])) for m in ("rms", "mav", "soft_f1")}


@dataclass(frozen=True)
class Evaluation:
    config: EvaluationConfig
    in_distribution: str
    data_seed: int
    test_samples: int
    primary: ArtifactResult
    baseline: ArtifactResult | None


def _draw_indices(pool: int, size: int, draws: int, rng: np.random.Generator) -> tuple[list[np.ndarray], bool]:
    """`draws` index sets of `size` (at most the pool): disjoint slices of one permutation when the pool holds
    them all (as the reference draws its synthetic sets), else independent draws without replacement."""
    size = min(size, pool)
    if pool >= size * draws:
        order = rng.permutation(pool)
        return [order[i * size : (i + 1) * size] for i in range(draws)], True
    return [rng.choice(pool, size=size, replace=False) for _ in range(draws)], False


def _anomaly_pool(name: str, data: InDistribution, wanted: int, seed: int) -> np.ndarray:
    """`wanted` images of the set, or all of them when it holds fewer."""
    available = anomaly_set_size(name, data)
    return load_anomalies(name, data, n=wanted if available is None else min(wanted, available), seed=seed)


def _check_shape(images: np.ndarray, expected: tuple[int, ...], what: str) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
        got = "x".join(map(str, images.shape[1:])) if images.ndim == 4 else f"an array of shape {images.shape}"
        raise DataError(f"{what}: images are {got}, the artifact expects {'x'.join(map(str, expected))} (CxHxW)")


def _set_result(
    name: str, pool: Outputs, draws: list[np.ndarray], disjoint: bool, test: Outputs, test_correct: np.ndarray,
    threshold: float, config: EvaluationConfig,
) -> SetResult:  # fmt: skip
    detection: dict[str, DetectionSpread] = {}
    for score in SCORE_NAMES:
        runs = [detection_metrics(test.scores[score], pool.scores[score][d], config.recall) for d in draws]
        detection[score] = DetectionSpread(
            *(Spread.of([getattr(r, m) for r in runs]) for m in ("auroc", "aupr", "fpr"))
        )
    calibration: dict[str, CalibrationSpread] = {}
    for method in CONFIDENCE_METHODS:
        errors: list[CalibrationErrors] = []
        f1s: list[float] = []
        for d in draws:
            confidence = np.r_[test.confidence[method], pool.confidence[method][d]]
            correct = np.r_[test_correct, np.zeros(d.size, dtype=bool)]
            errors.append(calibration_errors(confidence, correct, config.bin_size))
            f1s.append(soft_f1(confidence, correct))
        calibration[method] = CalibrationSpread(
            Spread.of([e.rms for e in errors]), Spread.of([e.mav for e in errors]), Spread.of(f1s)
        )
    accepted = float(np.mean(pool.scores[SERVED_SCORE] < np.float32(threshold)))
    return SetResult(name, len(pool.predictions), draws[0].size, disjoint, detection, calibration, accepted, pool)


def _artifact_result(
    artifact: Artifact, test: Outputs, labels: np.ndarray, pools: dict[str, Outputs],
    draws: dict[str, tuple[list[np.ndarray], bool]], config: EvaluationConfig,
) -> ArtifactResult:  # fmt: skip
    threshold = artifact.card.threshold.value
    correct = test.predictions == labels
    accept = test.scores[SERVED_SCORE] < np.float32(threshold)
    sets = {n: _set_result(n, pool, *draws[n], test, correct, threshold, config) for n, pool in pools.items()}
    per_set = max(1, len(test.predictions) // config.ratio // len(pools))
    mixed = Outputs.concat([test, *(pool.take(draws[n][0][0][:per_set]) for n, pool in pools.items())])
    mixed_correct = np.r_[correct, np.zeros(len(mixed.predictions) - len(correct), dtype=bool)]
    mixed_score = mixed.scores[SERVED_SCORE]
    return ArtifactResult(
        path=artifact.path, artifact=artifact, test=test, test_accuracy=float(correct.mean()),
        test_acceptance=float(accept.mean()),
        accepted_test_accuracy=float(correct[accept].mean()) if accept.any() else 0.0,
        sets=sets, pooled=mixed, pooled_correct=mixed_correct,
        selective=risk_coverage(-mixed_score.astype(np.float64), mixed_correct),
        selective_at_threshold=selective_risk(mixed_correct, mixed_score < np.float32(threshold)),
    )  # fmt: skip


def _load_artifacts(artifact_dir: Path, compare: Path | None) -> list[Artifact]:
    artifacts = [load_artifact(artifact_dir)] + ([load_artifact(compare)] if compare is not None else [])
    first = artifacts[0]
    for other in artifacts[1:]:
        if other.card.input != first.card.input or other.card.labels != first.card.labels:
            raise EvaluationError(f"cannot compare {other.path} with {first.path}: different inputs or labels")
    return artifacts


def _load_text_test_split(artifact: Artifact, config: EvaluationConfig) -> tuple[TextInDistribution, str, int]:
    card = artifact.card
    data_summary = card.training.get("data")
    summary = data_summary if isinstance(data_summary, dict) else {}
    spec = config.in_distribution or summary.get("in_distribution")
    if not spec:
        raise EvaluationError(f"{artifact.path}: the card names no in-distribution data; pass --in-distribution")
    data_seed = config.data_seed if config.data_seed is not None else int(card.training.get("seed", 0))
    test_file = summary.get("test_file")
    data = load_text_in_distribution(
        spec, seed=data_seed, val_fraction=float(summary.get("val_fraction", 0.15)),
        test_fraction=float(summary.get("test_fraction", 0.2)), test_path=Path(test_file) if test_file else None,
        held_out_classes=summary.get("held_out_classes") or (),
    )  # fmt: skip
    labels = data.test.labels
    if labels is None or len(labels) < config.ratio or int(labels.max()) >= card.num_classes:
        raise EvaluationError(
            f"{spec}: the test split needs >= {config.ratio} texts labelled in [0, {card.num_classes})"
        )
    if list(data.class_names) != card.labels:
        raise EvaluationError(f"{spec}: labels {list(data.class_names)} differ from the card's {card.labels}")
    return data, spec, data_seed


def _text_anomaly_pool(name: str, wanted: int, seed: int) -> list[str]:
    return list(load_text_anomalies(name, size=min(wanted, text_anomaly_set_size(name)), seed=seed))


def _load_test_split(artifact: Artifact, config: EvaluationConfig) -> tuple[InDistribution, str, int]:
    card = artifact.card
    data_summary = card.training.get("data")
    spec = config.in_distribution or (data_summary.get("in_distribution") if isinstance(data_summary, dict) else None)
    if not spec:
        raise EvaluationError(f"{artifact.path}: the card names no in-distribution data; pass --in-distribution")
    data_seed = config.data_seed if config.data_seed is not None else int(card.training.get("seed", 0))
    val_fraction = data_summary.get("val_fraction", 0.1) if isinstance(data_summary, dict) else 0.1
    held = data_summary.get("held_out_classes") if isinstance(data_summary, dict) else None
    data = load_in_distribution(spec, seed=data_seed, val_fraction=float(val_fraction), held_out_classes=held or ())
    _check_shape(data.test.images, artifact.image_input.shape, f"in-distribution {spec} test split")
    labels = data.test.labels
    if labels is None or len(labels) < config.ratio or int(labels.max()) >= card.num_classes:
        raise EvaluationError(
            f"{spec}: the test split needs >= {config.ratio} images labelled in [0, {card.num_classes})"
        )
    return data, spec, data_seed


def same_source_warnings(in_distribution: str, anomalies: Sequence[str]) -> list[str]:
    """Anomaly sets read from the in-distribution data's own files: they measure nothing but a leak."""
    _, _, data_path = in_distribution.partition(":")
    if not data_path:
        return []
    root = Path(data_path).resolve()
    warnings = []
    for name in anomalies:
        _, _, path = name.partition(":")
        if path and (Path(path).resolve() == root or root in Path(path).resolve().parents):
            warnings.append(
                f"anomaly set {name} is read from the in-distribution data ({in_distribution}): its inputs are "
                "training or test inputs of the model, not anomalies; its figures measure nothing"
            )
    return warnings


def evaluate(artifact_dir: Path, config: EvaluationConfig, compare: Path | None = None) -> Evaluation:
    """Load the artifact(s) and the data, score everything through onnxruntime and compute every table."""
    if not 0.0 < config.recall < 1.0 or min(config.draws, config.ratio, config.bin_size) < 1:
        raise EvaluationError("need a recall in (0, 1), and draws, ratio and bin size >= 1")
    artifacts = _load_artifacts(artifact_dir, compare)
    text = artifacts[0].card.task == "text"
    if not config.anomalies:
        config = replace(config, anomalies=TEXT_ANOMALY_SET_NAMES if text else PUBLIC_ANOMALY_SETS)
    test_inputs: np.ndarray | list[str]
    if text:
        text_data, spec, data_seed = _load_text_test_split(artifacts[0], config)
        test_inputs, test_labels = list(text_data.test.texts), text_data.test.labels
    else:
        data, spec, data_seed = _load_test_split(artifacts[0], config)
        test_inputs, test_labels = as_float(data.test.images), data.test.labels
    for warning in same_source_warnings(spec, config.anomalies):
        log.warning("%s", warning)
    size = len(test_inputs) // config.ratio
    pools: dict[str, list[Outputs]] = {}
    draws: dict[str, tuple[list[np.ndarray], bool]] = {}
    for name in dict.fromkeys(config.anomalies):
        inputs: np.ndarray | list[str]
        if text:
            inputs = _text_anomaly_pool(name, size * config.draws, config.seed)
        else:
            inputs = as_float(_anomaly_pool(name, data, size * config.draws, config.seed))
            _check_shape(inputs, artifacts[0].image_input.shape, f"anomaly set {name}")
        log.info("anomaly set %s: %d inputs", name, len(inputs))
        pools[name] = [artifact_outputs(a, inputs) for a in artifacts]
        draws[name] = _draw_indices(
            len(inputs), size, config.draws, np.random.default_rng([config.seed, zlib.crc32(name.encode())])
        )
    assert test_labels is not None  # checked when the test split was loaded
    results = [
        _artifact_result(
            a, artifact_outputs(a, test_inputs), test_labels, {n: p[i] for n, p in pools.items()}, draws, config
        )
        for i, a in enumerate(artifacts)
    ]
    return Evaluation(config, spec, data_seed, len(test_inputs), results[0], results[1] if compare else None)

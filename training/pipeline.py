"""Stages wired together: data -> baseline -> OE fine-tune -> calibrate -> validation summary -> export.

The test split is sealed from the start (`InDistribution.sealed`) and no test anomaly set is loaded: every choice
here is made on the validation split and validation anomaly sets; `python -m training evaluate` reads the test
data once, at the end.

`python -m training pipeline` runs them all; `train`, `finetune-oe` and `export` run one each. Every stage reads the
same typed config, so a stage run alone behaves exactly as inside the pipeline.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from training.artifact import read_card
from training.calibrate import Threshold, choose_threshold, fit_temperature, nll
from training.card import ImageInputSpec
from training.checkpoint import load_checkpoint
from training.config import PipelineConfig, Stage
from training.cpus import usable_cpus
from training.data.base import DataError, InDistribution, as_float
from training.data.registry import anomaly_set_size, load_anomalies, load_in_distribution, load_outlier_pool
from training.evaluation.metrics import detection_figures
from training.export import Gate, publish_artifact
from training.image.nets import NetConfig, build_net
from training.image.pool.fragments import fragments
from training.scores import anomaly_score_from_kl, kl_uniform
from training.train import Normalizer, checkpoint_path, predict_logits, train_stage

log = logging.getLogger(__name__)


@dataclass
class Context:
    cfg: PipelineConfig
    data: InDistribution
    normalize: Normalizer
    run_dir: Path
    command: str
    resume: bool
    started: float

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint carries besides weights, so `export` can rebuild the net from it alone."""
        return {
            "config": self.cfg.model_dump(mode="json"),
            "class_names": list(self.data.class_names),
            "input_shape": list(self.data.shape),
            "normalizer": {"mean": self.normalize.mean, "std": self.normalize.std},
        }

    def new_net(self) -> nn.Module:
        torch.manual_seed(self.cfg.run.seed)
        c, h, w = self.data.shape
        return build_net(self.cfg.net, c, self.data.num_classes, h, w)


IGNORED_ON_RESUME = frozenset({"run.threads"})
"""Config fields that may change between a run and its resumption: they change speed, not results."""


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_fields(recorded: dict[str, Any], cfg: BaseModel) -> list[str]:
    """`field: old -> new` for every field (but IGNORED_ON_RESUME) where `cfg` differs from a recorded config."""
    old, new = _flatten(recorded), _flatten(json.loads(cfg.model_dump_json()))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if key not in IGNORED_ON_RESUME and old.get(key) != new.get(key)
    ]


def prepare(
    cfg: PipelineConfig, command: str, *, resume: bool = False, force: bool = False, record: bool = True
) -> Context:
    """Load the data, fit the normalizer, create the run directory and record the resolved config in it.

    Resuming under a config other than the recorded one is refused (a checkpoint built on the old baseline would be
    continued silently) unless `force`. `record=False` (export) leaves the run's config.json as the run wrote it.
    """
    set_threads(cfg.run.threads)
    # The test split is sealed: nothing before `python -m training evaluate` can read it (training/data/base.py).
    data = load_in_distribution(
        cfg.data.in_distribution, seed=cfg.run.seed, val_fraction=cfg.data.val_fraction,
        held_out_classes=cfg.data.held_out_classes,
    ).sealed()  # fmt: skip
    for name in cfg.data.val_anomalies:  # fail now, not after hours of training, if a set is unknown or missing
        anomaly_set_size(name, data)
    run_dir = open_run_dir(cfg, cfg.run.directory, resume=resume, force=force, record=record)
    log.info("%s: train %d, val %d, test %d", data.name, len(data.train), len(data.val), len(data.test))
    normalize = Normalizer.fit(data.train.images) if cfg.net.standardize else Normalizer.identity(data.shape[0])
    return Context(cfg, data, normalize, run_dir, command, resume, time.monotonic())


def set_threads(requested: int) -> int:
    """torch's intra-op threads: `requested`, or 0 = one per CPU this process may use (`training/cpus.py`: affinity
    and cgroup quota, which torch's own default ignores); logged, returned."""
    threads = requested or usable_cpus()
    torch.set_num_threads(threads)
    log.info("torch intra-op threads: %d (%s)", threads, "run.threads" if requested else "usable CPUs")
    return threads


def open_run_dir(cfg: BaseModel, run_dir: Path, *, resume: bool, force: bool, record: bool) -> Path:
    """Create the run directory, record the resolved config in it (unless `record` is false) and log into it.

    Resuming under a config other than the recorded one is refused (a checkpoint built on the old baseline would be
    continued silently) unless `force`.
    """
    recorded = run_dir / "config.json"
    if resume and not force and recorded.is_file():
        changes = changed_fields(json.loads(recorded.read_text()), cfg)
        if changes:
            raise ValueError(
                f"--resume under a changed config ({'; '.join(changes)}): the checkpoints in {run_dir} were made "
                "with the recorded one. Rerun with the same config, use a new run directory, or pass --force"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if record:
        recorded.write_text(cfg.model_dump_json(indent=2) + "\n")
    log_to(run_dir / "train.log")
    return run_dir


def log_to(path: Path) -> None:
    """Send the `training` loggers' records to the run directory too (replacing an earlier run's file, if any)."""
    logger = logging.getLogger("training")
    for handler in [h for h in logger.handlers if getattr(h, "oegate_run_log", False)]:
        logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.oegate_run_log = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))


def run_baseline(ctx: Context) -> nn.Module:
    net = ctx.new_net()
    train_stage(
        stage="baseline", net=net, normalize=ctx.normalize, train=ctx.data.train, val=ctx.data.val,
        cfg=ctx.cfg.baseline, run_dir=ctx.run_dir, seed=ctx.cfg.run.seed, extra_state=ctx.extra_state(),
        resume=ctx.resume,
    )  # fmt: skip
    return net


def load_pool(ctx: Context) -> np.ndarray:
    data = ctx.cfg.data
    pool = load_outlier_pool(
        data.outlier_pool, ctx.data.shape, seed=ctx.cfg.run.seed, limit=data.outlier_pool_limit,
        exclude=data.outlier_pool_exclude, glyph_samples=data.glyph_samples,
    )  # fmt: skip
    log.info("outlier pool %s: %d images", ctx.cfg.data.outlier_pool, len(pool))
    return with_fragments(ctx, pool)


def with_fragments(ctx: Context, pool: np.ndarray) -> np.ndarray:
    """`pool` plus `oe.fragments` images recombined from the training split (`pool/fragments.py`), seeded by the run."""
    count = ctx.cfg.oe.fragments
    if not count:
        return pool
    train = ctx.data.train
    made = fragments(
        train.images, train.labels, count, seed=ctx.cfg.run.seed,
        faintest=ctx.cfg.oe.fragment_ink, full_ink_share=ctx.cfg.oe.fragment_full_ink_share,
    )  # fmt: skip
    if pool.shape[1:] != made.shape[1:]:
        raise DataError(f"outlier pool images are {pool.shape[1:]}, training images {made.shape[1:]}")
    log.info("outlier pool: %d fragments recombined from the training split added", count)
    return np.concatenate([pool, made if pool.dtype == np.uint8 else as_float(made).astype(pool.dtype)])


def screen_pool(ctx: Context, net: nn.Module, pool: np.ndarray) -> np.ndarray:
    """The pool minus the images `net` classifies with top softmax probability >= `oe.screen_confidence` (when set):
    pool images that are really in-distribution would teach OE to reject its own classes."""
    threshold = ctx.cfg.oe.screen_confidence
    if threshold is None or len(pool) == 0:
        return pool
    confidence = torch.softmax(predict_logits(net, ctx.normalize, pool), dim=1).amax(dim=1).numpy()
    keep = confidence < threshold
    log.info(
        "outlier pool screen: %d of %d images dropped (the net reads them as a class with p >= %g)",
        int((~keep).sum()), len(pool), threshold,
    )  # fmt: skip
    return pool[keep]


def run_outlier_exposure(ctx: Context, start_from: nn.Module, pool: np.ndarray | None = None) -> tuple[nn.Module, int]:
    """Fine-tune a copy of `start_from` with OE (on the pool screened by `start_from`, when `oe.screen_confidence` is
    set); returns the net and the number of pool images used."""
    pool = screen_pool(ctx, start_from, load_pool(ctx) if pool is None else pool)
    net = copy.deepcopy(start_from)
    train_stage(
        stage="oe", net=net, normalize=ctx.normalize, train=ctx.data.train, val=ctx.data.val, cfg=ctx.cfg.oe,
        run_dir=ctx.run_dir, seed=ctx.cfg.run.seed, extra_state=ctx.extra_state(), outliers=pool, resume=ctx.resume,
    )  # fmt: skip
    return net, len(pool)


def net_from_checkpoint(path: Path, ctx: Context) -> nn.Module:
    state = load_checkpoint(path)
    if list(state["input_shape"]) != list(ctx.data.shape) or state["class_names"] != list(ctx.data.class_names):
        raise ValueError(
            f"{path} was trained on other data ({state['input_shape']}, {len(state['class_names'])} "
            f"classes) than {ctx.cfg.data.in_distribution} {ctx.data.shape}"
        )
    c, h, w = state["input_shape"]
    net = build_net(NetConfig.model_validate(state["config"]["net"]), c, len(state["class_names"]), h, w)
    net.load_state_dict(state["net_state"])
    return net


@dataclass(frozen=True)
class Calibration:
    temperature: float
    threshold: Threshold
    evaluation: dict[str, Any]


def validation_detection(
    ctx: Context, net: nn.Module, in_scores: np.ndarray, threshold: float
) -> dict[str, dict[str, float]]:
    """Detection on each validation anomaly set against the validation split's scores (no test data)."""
    results: dict[str, dict[str, float]] = {}
    for name in ctx.cfg.data.val_anomalies:
        images = load_anomalies(name, ctx.data, n=ctx.cfg.data.val_anomaly_samples, seed=ctx.cfg.run.seed)
        results[name] = detection_figures(
            in_scores, anomaly_scores(predict_logits(net, ctx.normalize, images)), threshold
        )
    return results


def calibrate_and_evaluate(ctx: Context, net: nn.Module) -> Calibration:
    """Temperature and threshold on the validation split, and a detection summary on the validation anomaly sets.

    Nothing here reads the test split (sealed in `prepare`) or a test anomaly set: test figures come from
    `python -m training evaluate`, once, at the end.
    """
    data, cal = ctx.data, ctx.cfg.calibration
    assert data.val.labels is not None
    val_logits = predict_logits(net, ctx.normalize, data.val.images)
    val_labels = torch.from_numpy(data.val.labels.astype(np.int64))
    temperature = fit_temperature(val_logits, val_labels)
    val_scores = anomaly_scores(val_logits)
    threshold = choose_threshold(val_scores, cal.acceptance_target, cal.threshold_method, cal.delta)
    anomalies = validation_detection(ctx, net, val_scores, threshold.value)
    evaluation = validation_summary_record(
        val_scores, threshold, anomalies,
        accuracy=float((val_logits.argmax(1) == val_labels).float().mean()), nll_value=nll(val_logits, val_labels, 1.0),
        inputs=f"all {len(data.val)} validation images vs {ctx.cfg.data.val_anomaly_samples} per validation anomaly "
        "set (built from the validation split and noise)",
    )  # fmt: skip
    evaluation["val_nll_temperature_scaled"] = nll(val_logits, val_labels, temperature)
    return Calibration(temperature, threshold, evaluation)


def validation_summary_record(
    val_scores: np.ndarray,
    threshold: Threshold,
    anomalies: dict[str, dict[str, float]],
    *,
    accuracy: float,
    nll_value: float,
    inputs: str,
) -> dict[str, Any]:
    """The card's `evaluation` for either modality: validation figures only, never test figures."""
    return {
        "split": "val",
        "val_samples": len(val_scores),
        "val_accuracy": accuracy,
        "val_nll": nll_value,
        "val_acceptance_at_threshold": float(np.mean(val_scores < np.float32(threshold.value))),
        "val_anomalies": anomalies,
        "mean_auroc": float(np.mean([a["auroc"] for a in anomalies.values()])) if anomalies else None,
        "mean_fpr95": float(np.mean([a["fpr95"] for a in anomalies.values()])) if anomalies else None,
        "conventions": "score = KL[U||p] (anomalies positive, higher anomaly_score = more anomalous); "
        f"{inputs}. The threshold was fitted on the same validation split, so val acceptance is in-sample; "
        "test-split figures come from `python -m training evaluate` (reports/), never from the pipeline",
    }


def anomaly_scores(logits: torch.Tensor) -> np.ndarray:
    """The served anomaly score in float32, as the graph emits it."""
    return anomaly_score_from_kl(kl_uniform(logits.float())).numpy().astype(np.float32)


def publish(
    ctx: Context,
    net: nn.Module,
    *,
    name: str,
    stage: Stage,
    pool_size: int | None,
    calibration: Calibration | None = None,
    extra_training: dict[str, Any] | None = None,
    extra_evaluation: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Calibrate, evaluate and publish `net` as models_dir/name/version. When resuming, a version this same run
    already published (same run directory and stage) is kept rather than refused.

    A caller that already calibrated passes its `calibration`; `extra_training` and `extra_evaluation` join the
    card's records, `extra_files` (name -> bytes, e.g. a comparison report) are published, checksummed, with it."""
    done = _published_by_this_run(ctx, name, stage)
    if done is not None:
        log.info("%s was already published by this run; keeping it", done)
        return done
    cal = calibration if calibration is not None else calibrate_and_evaluate(ctx, net)
    gate = Gate(copy.deepcopy(net).eval(), ctx.normalize.mean, ctx.normalize.std, cal.temperature)
    c, h, w = ctx.data.shape
    rng = np.random.default_rng(ctx.cfg.run.seed)
    val_images = ctx.data.val.images
    check = np.concatenate([
        as_float(val_images[rng.choice(len(val_images), min(32, len(val_images)), replace=False)]),
        rng.random((16, c, h, w), dtype=np.float32),
    ])  # fmt: skip
    cfg = ctx.cfg
    training = {
        "command": ctx.command,
        "seed": cfg.run.seed,
        "stage": stage,
        "wall_time_seconds": round(time.monotonic() - ctx.started, 1),
        "run_dir": str(ctx.run_dir),
        "data": {
            "in_distribution": cfg.data.in_distribution,
            "val_fraction": cfg.data.val_fraction,
            "held_out_classes": list(cfg.data.held_out_classes),
            "description": ctx.data.description,
            "train_samples": len(ctx.data.train),
            "val_samples": len(ctx.data.val),
            "test_samples": len(ctx.data.test),
            "outlier_pool": cfg.data.outlier_pool if stage == "oe" else None,
            "outlier_pool_samples": pool_size if stage == "oe" else None,
            "outlier_pool_excluded_groups": list(cfg.data.outlier_pool_exclude) if stage == "oe" else None,
        },
        "net": cfg.net.model_dump(mode="json"),
        "baseline": cfg.baseline.model_dump(mode="json"),
        "oe": cfg.oe.model_dump(mode="json") if stage == "oe" else None,
        **(extra_training or {}),
    }
    path = publish_artifact(
        gate,
        models_dir=cfg.export.models_dir,
        name=name,
        version=cfg.export.version,
        labels=list(ctx.data.class_names),
        input_spec=ImageInputSpec(channels=c, height=h, width=w, mean=ctx.normalize.mean, std=ctx.normalize.std),
        threshold=cal.threshold,
        calibration_split=f"{cfg.data.in_distribution}:val ({len(ctx.data.val)} images)",
        evaluation={**cal.evaluation, **(extra_evaluation or {})},
        training=training,
        check_images=check,
        extra_files=extra_files,
    )
    log.info("published %s (T=%.3f, threshold=%.4f)", path, cal.temperature, cal.threshold.value)
    return path


def _published_by_this_run(ctx: Context, name: str, stage: Stage) -> Path | None:
    if not ctx.resume or ctx.cfg.export.version is None:
        return None
    existing = ctx.cfg.export.models_dir / name / str(ctx.cfg.export.version)
    if not existing.exists():
        return None
    training = read_card(existing).training
    return existing if (training.get("run_dir"), training.get("stage")) == (str(ctx.run_dir), stage) else None


def run_pipeline(cfg: PipelineConfig, *, command: str, resume: bool = False, force: bool = False) -> list[Path]:
    """The one-shot pipeline; returns the published version directories (baseline first when asked for)."""
    ctx = prepare(cfg, command, resume=resume, force=force)
    pool = load_pool(ctx) if cfg.oe.enabled else None  # before training: a missing pool should fail fast
    baseline = run_baseline(ctx)
    oe_net, pool_size = run_outlier_exposure(ctx, baseline, pool) if pool is not None else (None, None)
    published: list[Path] = []
    if cfg.export.enabled:
        if cfg.export.baseline_name:
            published.append(publish(ctx, baseline, name=cfg.export.baseline_name, stage="baseline", pool_size=None))
        if oe_net is not None:
            published.append(publish(ctx, oe_net, name=cfg.export.name, stage="oe", pool_size=pool_size))
    summary = {"published": [str(p) for p in published], "checkpoints": {
        stage: str(checkpoint_path(ctx.run_dir, stage)) for stage in ("baseline", "oe")
    }}  # fmt: skip
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return published

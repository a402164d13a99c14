"""The text pipeline: data -> baseline -> OE fine-tune (and its matched twin) -> calibrate on the served graph ->
export, as for images. The baseline twin is, by default (`oe.matched_twin`), the baseline fine-tuned by the OE stage
without the OE term, so the two published nets differ by OE alone.

The test split is sealed from the start and no test anomaly set is loaded: temperature, threshold and the card's
validation summary come from the validation split and the validation anomaly sets (`training/text/anomalies.py`);
`python -m training evaluate` reads the test data once, at the end. `python -m training pipeline --config
configs/topics-oe.toml` runs it (a config with `task = "text"`).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.calibrate import Threshold, choose_threshold, fit_temperature, nll
from training.checkpoint import load_checkpoint
from training.config import Stage
from training.evaluation.metrics import detection_figures
from training.pipeline import open_run_dir, set_threads, validation_summary_record
from training.text.anomalies import load_text_validation_anomalies
from training.text.config import TextOptimConfig, TextPipelineConfig
from training.text.corpora import load_text_in_distribution, load_text_oe_corpus
from training.text.data import TextInDistribution
from training.text.encoder import pretrained_dir
from training.text.export import ExtraFiles, GraphRunner, Summarize, TextGate, publish_text_artifact
from training.text.nets import TextClassifier, TextNetConfig, build_text_net
from training.text.splices import splices
from training.text.swaps import swaps
from training.text.tokenize import TextTokenizer
from training.text.train import predict_text_logits, text_checkpoint_path, train_text_stage

log = logging.getLogger(__name__)
CHECK_TEXTS = 32


@dataclass
class TextContext:
    cfg: TextPipelineConfig
    data: TextInDistribution
    tokenizer: TextTokenizer
    run_dir: Path
    command: str
    resume: bool
    started: float

    def extra_state(self) -> dict[str, Any]:
        return {"config": self.cfg.model_dump(mode="json"), "class_names": list(self.data.class_names)}

    def new_net(self) -> TextClassifier:
        return build_text_net(self.cfg.net, self.data.num_classes, self.cfg.run.seed)


def prepare_text(
    cfg: TextPipelineConfig, command: str, *, resume: bool = False, force: bool = False, record: bool = True
) -> TextContext:
    """Load and seal the data, check the validation sets, create the run directory and record the config."""
    set_threads(cfg.run.threads)
    d = cfg.data
    data = load_text_in_distribution(
        d.in_distribution, seed=cfg.run.seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
        test_path=d.test_file, held_out_classes=d.held_out_classes,
    ).sealed()  # fmt: skip
    run_dir = open_run_dir(cfg, cfg.run.directory, resume=resume, force=force, record=record)
    log.info("%s: train %d, val %d, test %d", data.name, len(data.train), len(data.val), len(data.test))
    tokenizer = TextTokenizer(pretrained_dir() / "tokenizer.json", cfg.net.max_length)
    return TextContext(cfg, data, tokenizer, run_dir, command, resume, time.monotonic())


def load_corpus(ctx: TextContext, exclude: Sequence[str] | None = None) -> tuple[str, ...]:
    """The config's OE corpus without the groups in `exclude` (default: `data.oe_corpus_exclude`), plus the
    sentences derived from training texts."""
    d = ctx.cfg.data
    corpus = load_text_oe_corpus(
        d.oe_corpus, seed=ctx.cfg.run.seed, limit=d.oe_corpus_limit,
        exclude=list(d.oe_corpus_exclude if exclude is None else exclude),
    )  # fmt: skip
    log.info("OE corpus %s: %d sentences", d.oe_corpus, len(corpus))
    return with_derived_sentences(ctx, corpus)


def with_derived_sentences(ctx: TextContext, corpus: tuple[str, ...]) -> tuple[str, ...]:
    """`corpus` plus the OE sentences made from training texts that the config asks for: `oe.splices` splices and
    `oe.swaps` swaps (none by default)."""
    oe, train, seed = ctx.cfg.oe, ctx.data.train, ctx.cfg.run.seed
    if oe.splices:
        log.info("OE corpus: %d splices of training texts added", oe.splices)
        corpus = (*corpus, *splices(train.texts, train.labels, oe.splices, seed=seed))
    if oe.swaps:
        log.info("OE corpus: %d swaps of training texts added", oe.swaps)
        corpus = (*corpus, *swaps(train.texts, oe.swaps, seed=seed))
    return corpus


def run_text_baseline(ctx: TextContext) -> TextClassifier:
    net = ctx.new_net()
    train_text_stage(
        stage="baseline", net=net, tokenizer=ctx.tokenizer, train=ctx.data.train, val=ctx.data.val,
        cfg=ctx.cfg.baseline, run_dir=ctx.run_dir, seed=ctx.cfg.run.seed, extra_state=ctx.extra_state(),
        resume=ctx.resume,
    )  # fmt: skip
    return net


def run_text_outlier_exposure(ctx: TextContext, start_from: nn.Module, corpus: Sequence[str]) -> tuple[nn.Module, int]:
    """Fine-tune a copy of `start_from` with OE on `corpus`; returns the net and the corpus size."""
    net = copy.deepcopy(start_from)
    train_text_stage(
        stage="oe", net=net, tokenizer=ctx.tokenizer, train=ctx.data.train, val=ctx.data.val, cfg=ctx.cfg.oe,
        run_dir=ctx.run_dir, seed=ctx.cfg.run.seed, extra_state=ctx.extra_state(), outliers=corpus,
        resume=ctx.resume,
    )  # fmt: skip
    return net, len(corpus)


def run_text_matched_twin(ctx: TextContext, start_from: nn.Module, run_dir: Path | None = None) -> nn.Module:
    """Fine-tune a copy of `start_from` as the OE stage does (its config, seed and in-distribution batches), with
    cross-entropy alone: the baseline twin that differs from the OE twin by the OE term only. Checkpoints go to
    `run_dir` (default: the run's directory)."""
    net = copy.deepcopy(start_from)
    train_text_stage(
        stage="matched", net=net, tokenizer=ctx.tokenizer, train=ctx.data.train, val=ctx.data.val, cfg=ctx.cfg.oe,
        run_dir=run_dir or ctx.run_dir, seed=ctx.cfg.run.seed, extra_state=ctx.extra_state(), resume=ctx.resume,
    )  # fmt: skip
    return net


def text_net_from_checkpoint(path: Path, ctx: TextContext) -> TextClassifier:
    """The classifier a text checkpoint holds (its own net config), checked against the context's labels."""
    state = load_checkpoint(path)
    if state["class_names"] != list(ctx.data.class_names):
        raise ValueError(f"{path} was trained on other labels ({state['class_names']}) than {ctx.data.class_names}")
    net_cfg = TextNetConfig.model_validate(state["config"]["net"])
    net = build_text_net(net_cfg, len(state["class_names"]), ctx.cfg.run.seed, pretrained=False)
    net.load_state_dict(state["net_state"])
    return net


def validation_summary(ctx: TextContext, run: GraphRunner) -> tuple[Threshold, dict[str, Any]]:
    """On the served graph: threshold from the validation split's scores, validation accuracy and NLL, and
    detection on each validation anomaly set (no test data)."""
    data, cal, d = ctx.data, ctx.cfg.calibration, ctx.cfg.data
    assert data.val.labels is not None
    val = run(data.val.texts)
    labels = data.val.labels.astype(np.int64)
    val_scores = val["anomaly_score"].astype(np.float32)
    threshold = choose_threshold(val_scores, cal.acceptance_target, cal.threshold_method, cal.delta)
    anomalies: dict[str, dict[str, float]] = {}
    for name in d.val_anomalies:
        texts = load_text_validation_anomalies(name, data, size=d.val_anomaly_samples, seed=ctx.cfg.run.seed)
        anomalies[name] = detection_figures(val_scores, run(texts)["anomaly_score"], threshold.value)
    logits = torch.from_numpy(val["logits"].astype(np.float64))
    evaluation = validation_summary_record(
        val_scores, threshold, anomalies,
        accuracy=float(np.mean(val["logits"].argmax(1) == labels)), nll_value=nll(logits, torch.from_numpy(labels)),
        inputs=f"all {len(data.val)} validation texts vs up to {d.val_anomaly_samples} per validation anomaly set "
        "(built from the training data, noise and held-out slices of the OE corpus), on the served graph",
    )  # fmt: skip
    return threshold, evaluation


def matched_record(cfg: TextPipelineConfig) -> dict[str, Any]:
    """The card's account of a matched twin's second stage: the OE stage's optimisation, without its OE term."""
    fields = TextOptimConfig.model_fields
    return {
        **{key: value for key, value in cfg.oe.model_dump(mode="json").items() if key in fields},
        "oe_weight": 0.0,
        "outlier_batches": None,
        "note": "the OE stage's epochs, schedule, learning rates, in-distribution batches and seed; cross-entropy "
        "alone (oe.matched_twin)",
    }


def publish_text(
    ctx: TextContext,
    net: nn.Module,
    *,
    name: str,
    stage: Stage,
    corpus_size: int | None,
    summarize: Summarize | None = None,
    extra_training: dict[str, Any] | None = None,
    extra_files: ExtraFiles | None = None,
) -> Path:
    """Temperature on the validation split, then export, calibrate on the served graph and publish.

    `summarize` replaces `validation_summary` (retraining with captures adds its comparison with the live version);
    `extra_training` joins the card's training record, `extra_files` are published, checksummed, with the graph."""
    data, cfg = ctx.data, ctx.cfg
    assert data.val.labels is not None
    val_logits = predict_text_logits(net, ctx.tokenizer, data.val.texts)
    temperature = fit_temperature(val_logits, torch.from_numpy(data.val.labels.astype(np.int64)))
    gate = TextGate(copy.deepcopy(net).eval(), temperature)
    rng = np.random.default_rng(cfg.run.seed)
    check = [data.val.texts[i] for i in rng.choice(len(data.val), min(CHECK_TEXTS, len(data.val)), replace=False)]
    training = {
        "command": ctx.command,
        "seed": cfg.run.seed,
        "stage": stage,
        "wall_time_seconds": round(time.monotonic() - ctx.started, 1),
        "run_dir": str(ctx.run_dir),
        "data": {
            "in_distribution": cfg.data.in_distribution,
            "test_file": str(cfg.data.test_file) if cfg.data.test_file else None,
            "val_fraction": cfg.data.val_fraction,
            "test_fraction": cfg.data.test_fraction,
            "held_out_classes": list(cfg.data.held_out_classes),
            "description": data.description,
            "train_samples": len(data.train),
            "val_samples": len(data.val),
            "test_samples": len(data.test),
            "oe_corpus": cfg.data.oe_corpus if stage == "oe" else None,
            "oe_corpus_samples": corpus_size if stage == "oe" else None,
            "oe_corpus_excluded_groups": list(cfg.data.oe_corpus_exclude) if stage == "oe" else None,
        },
        "net": cfg.net.model_dump(mode="json"),
        "baseline": cfg.baseline.model_dump(mode="json"),
        "oe": cfg.oe.model_dump(mode="json") if stage == "oe" else None,
        "matched_fine_tune": matched_record(cfg) if stage == "matched" else None,
        "temperature_fitted_on": "val (torch fp32 logits, NLL)",
        **(extra_training or {}),
    }
    path = publish_text_artifact(
        gate,
        models_dir=cfg.export.models_dir,
        name=name,
        version=cfg.export.version,
        labels=list(data.class_names),
        tokenizer=ctx.tokenizer,
        quantize=cfg.export.quantize,
        check_texts=check,
        summarize=summarize if summarize is not None else lambda run: validation_summary(ctx, run),
        calibration_split=f"{cfg.data.in_distribution}:val ({len(data.val)} texts)",
        training=training,
        extra_files=extra_files,
    )
    log.info("published %s (T=%.3f)", path, temperature)
    return path


def run_text_pipeline(
    cfg: TextPipelineConfig, *, command: str, resume: bool = False, force: bool = False
) -> list[Path]:
    """The one-shot text pipeline; returns the published version directories (baseline first when asked for)."""
    ctx = prepare_text(cfg, command, resume=resume, force=force)
    for name in cfg.data.val_anomalies:  # fail now, not after training, if a validation set cannot be built
        load_text_validation_anomalies(name, ctx.data, size=1, seed=cfg.run.seed)
    corpus = load_corpus(ctx) if cfg.oe.enabled else None
    baseline = run_text_baseline(ctx)
    oe_net, corpus_size = run_text_outlier_exposure(ctx, baseline, corpus) if corpus is not None else (None, None)
    twin: nn.Module = baseline
    twin_stage: Stage = "baseline"
    if corpus is not None and cfg.oe.matched_twin and cfg.export.enabled and cfg.export.baseline_name:
        twin, twin_stage = run_text_matched_twin(ctx, baseline), "matched"
    published: list[Path] = []
    if cfg.export.enabled:
        if cfg.export.baseline_name:
            published.append(publish_text(ctx, twin, name=cfg.export.baseline_name, stage=twin_stage, corpus_size=None))
        if oe_net is not None:
            published.append(publish_text(ctx, oe_net, name=cfg.export.name, stage="oe", corpus_size=corpus_size))
    summary = {"published": [str(p) for p in published], "checkpoints": {
        stage: str(text_checkpoint_path(ctx.run_dir, stage)) for stage in ("baseline", "oe", "matched")
        if stage != "matched" or twin_stage == "matched"
    }}  # fmt: skip
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return published

"""The flywheel's retraining for text models: `python -m training pipeline --config TEXT.toml --with-captures DIR`.

The steps of the image retraining (retrain.py), on texts:
1. curate the live model's labelled text captures (normalized-text duplicates out, a cap per source, a held-back
   slice);
2. start from the live version's checkpoint when its card's run directory still holds it and that checkpoint,
   exported the way the live version was (fp32, then int8 when the live graph is quantized), reproduces the live
   graph's anomaly scores within 1e-4 on validation texts; otherwise retrain the baseline from scratch first;
3. `in-distribution:<class>` captures join the labelled training texts; `outlier` captures join the OE corpus,
   repeated to about `captures.outlier_share` of it;
4. calibrate and summarize on the served graph (training/text/pipeline.py), score candidate and live on the same
   validation texts, validation anomaly sets and held-back captures, apply the promotion rule and publish the
   candidate to staging with `comparison.md`, checksummed with the graph.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training.artifact import Artifact, read_card, run_text_session, session_options
from training.captures.compare import (
    capture_repeats,
    figures,
    live_version,
    pool_record,
    promotion_record,
    trained_on_note,
)
from training.captures.curate import Curated, curate, text_lists
from training.captures.promotion import report
from training.text.anomalies import load_text_validation_anomalies
from training.text.config import TextPipelineConfig
from training.text.data import TextSet
from training.text.export import GraphRunner, TextGate, export_text_onnx, quantize_int8
from training.text.nets import TextClassifier
from training.text.pipeline import (
    TextContext,
    load_corpus,
    prepare_text,
    publish_text,
    run_text_baseline,
    run_text_outlier_exposure,
    text_net_from_checkpoint,
    validation_summary,
)
from training.text.train import text_checkpoint_path

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4
PARITY_TEXTS = 64


def _live_text_checkpoint(live: Artifact, ctx: TextContext) -> tuple[TextClassifier | None, str]:
    """(net, why) from the live version's checkpoint, or (None, why not)."""
    run_dir, stage = live.card.training.get("run_dir"), live.card.training.get("stage")
    if not run_dir or stage not in ("baseline", "oe", "matched"):
        return None, "the live card names no run directory or stage"
    path = text_checkpoint_path(Path(run_dir), stage)
    if not path.is_file():
        return None, f"the live version's checkpoint {path} is not on this machine"
    try:
        net = text_net_from_checkpoint(path, ctx)
    except ValueError as e:
        return None, f"the live version's checkpoint cannot be used: {e}"
    texts = ctx.data.val.texts[:PARITY_TEXTS]
    quantized = "quantization" in live.card.evaluation.get("graph", {})
    with tempfile.TemporaryDirectory() as scratch:
        graph = Path(scratch) / "model.fp32.onnx"
        export_text_onnx(TextGate(net, live.card.temperature).eval(), ctx.tokenizer.max_length, graph)
        if quantized:
            quantize_int8(graph, Path(scratch) / "model.onnx")
            graph = Path(scratch) / "model.onnx"
        session = ort.InferenceSession(str(graph), sess_options=session_options(), providers=["CPUExecutionProvider"])
        ours = run_text_session(session, ctx.tokenizer, texts)["anomaly_score"]
    difference = float(np.max(np.abs(ours - live.run_texts(texts)["anomaly_score"])))
    if not difference < PARITY_TOLERANCE:
        return None, f"{path} does not reproduce the live graph (max difference {difference:.2e})"
    exported = "exported and quantized" if quantized else "exported"
    return net, f"fine-tuned from the live version's checkpoint {path} ({exported}, reproduces it: {difference:.1e})"


def _with_text_captures(
    ctx: TextContext, curated: Curated, corpus: tuple[str, ...]
) -> tuple[TextContext, tuple[str, ...], dict[str, Any]]:
    """The context with in-distribution captures added to the training texts, and the corpus with outlier ones."""
    outliers, valid, valid_labels = text_lists(curated.train, list(ctx.data.class_names))
    train = ctx.data.train
    assert train.labels is not None
    if valid:
        train = TextSet((*train.texts, *valid), np.concatenate([train.labels, valid_labels]))
    repeats = capture_repeats(len(corpus), len(outliers), ctx.cfg.captures.outlier_share)
    mixed = (*corpus, *(outliers * repeats))
    record = pool_record(len(corpus), len(outliers), repeats, len(valid))
    return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, train=train)), mixed, record


def _score(run: GraphRunner) -> Any:
    def score(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not len(texts):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        outputs = run(texts)
        return outputs["anomaly_score"], outputs["probs"].argmax(1)

    return score


def run_text_with_captures(
    cfg: TextPipelineConfig,
    *,
    captures_dir: Path,
    labels_path: Path,
    live_dir: Path,
    command: str,
    resume: bool = False,
    force: bool = False,
) -> list[Path]:
    """Curate, retrain, compare with the live version and publish the candidate to staging (module doc)."""
    live = live_version(live_dir, "text", cfg.export.name)
    ctx = prepare_text(cfg, command, resume=resume, force=force)
    class_names = list(ctx.data.class_names)
    if list(live.card.labels) != class_names or live.text_input.max_length != ctx.tokenizer.max_length:
        raise ValueError(f"{live_dir} takes other labels or lengths than {cfg.data.in_distribution}")
    curated = curate(captures_dir, labels_path, live.card.name, cfg.captures, shape=None, class_names=class_names)
    kinds = {capture.input_kind for capture, _ in curated.train + curated.heldout}
    if kinds - {"text"}:
        raise ValueError(f"{live.card.name}'s labelled captures are not texts: {sorted(kinds)}")
    log.info(
        "captures: train %s, held back %s", curated.summary["counts"]["train"], curated.summary["counts"]["heldout"]
    )
    corpus = load_corpus(ctx)
    start, start_note = _live_text_checkpoint(live, ctx)
    ctx, corpus, mixing = _with_text_captures(ctx, curated, corpus)
    if start is not None:
        start_record = {"kind": "live-checkpoint", "note": start_note}
    else:
        log.info("retraining from scratch: %s", start_note)
        start_record = {"kind": "scratch", "note": f"retrained from scratch: {start_note}"}
        start = run_text_baseline(ctx)
    net, corpus_size = run_text_outlier_exposure(ctx, start, corpus)

    val = ctx.data.val
    assert val.labels is not None
    val_data = (list(val.texts), val.labels)
    anomalies = {
        name: list(load_text_validation_anomalies(name, ctx.data, size=cfg.data.val_anomaly_samples, seed=cfg.run.seed))
        for name in cfg.data.val_anomalies
    }
    heldout = text_lists(curated.heldout, class_names)
    theirs = figures(_score(live.run_texts), live.card.threshold.value, val_data, anomalies, heldout)
    title = f"{live.card.name}: candidate retrained on captures vs live version {live.card.version}"
    notes = [start_record["note"], f"corpus: {mixing}", *trained_on_note(live, cfg.data.in_distribution)]

    def summarize(run: GraphRunner) -> tuple[Any, dict[str, Any]]:
        """The pipeline's validation summary on the served graph, plus the comparison with the live version."""
        threshold, evaluation = validation_summary(ctx, run)
        ours = figures(_score(run), threshold.value, val_data, anomalies, heldout)
        promotion, _, _ = promotion_record(cfg.promotion, ours, theirs, live, live_dir)
        return threshold, {**evaluation, "promotion": promotion}

    def comparison(evaluation: dict[str, Any]) -> dict[str, bytes]:
        promotion = evaluation["promotion"]
        markdown = report(title, promotion["checks"], curated.summary, notes, promotion["passed"])
        return {"comparison.md": markdown.encode()}

    published = publish_text(
        ctx, net, name=cfg.export.name, stage="oe", corpus_size=corpus_size, summarize=summarize,
        extra_training={"captures": curated.summary, "start": start_record, "captures_corpus": mixing},
        extra_files=comparison,
    )  # fmt: skip
    shutil.copyfile(published / "comparison.md", ctx.run_dir / "comparison.md")
    passed = read_card(published).evaluation["promotion"]["passed"]
    log.info("promotion rule %s: %s", "passed" if passed else "FAILED", published / "comparison.md")
    return [published]

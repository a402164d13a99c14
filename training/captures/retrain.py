"""The flywheel's retraining of image models: `python -m training pipeline --config ... --with-captures DIR` (text
models: retrain_text.py; what both share: compare.py).

1. Curate the live model's labelled captures (curate.py): near-duplicates out, a cap per source, a held-back slice.
2. Start from the live version's own checkpoint when its card's run directory still holds it and the checkpoint
   reproduces the live graph's outputs (within 1e-4 on validation images): then only the OE fine-tune runs, from
   the weights that are live today. Otherwise (the run directory is gone, or it holds other weights) the whole
   config is retrained from scratch, baseline then OE, and the card says why.
3. Training data: the labelled training split plus the `in-distribution:<class>` captures; the OE pool: the
   config's pool plus the `outlier` captures, repeated so they make up about `captures.outlier_share` of it (a
   hundred captures in a pool of thousands would otherwise be seen a few times each).
4. Calibrate as the pipeline does (validation split only), score candidate and live on the same validation data
   and held-back captures, apply the promotion rule (promotion.py) and publish the candidate to staging with the
   comparison report (`comparison.md`, checksummed with the graph). The card records the curation (window, counts,
   hashes of what was trained on and held back, the labels file's hash), the start, and the rule with its verdict.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.artifact import Artifact
from training.captures.compare import (
    capture_repeats,
    figures,
    live_version,
    pool_record,
    promotion_record,
    trained_on_note,
)
from training.captures.curate import Curated, curate, image_arrays
from training.captures.promotion import report
from training.checkpoint import load_checkpoint
from training.config import PipelineConfig
from training.data.base import ImageSet, as_float
from training.data.registry import load_anomalies
from training.export import Gate
from training.pipeline import (
    Context,
    anomaly_scores,
    calibrate_and_evaluate,
    load_pool,
    net_from_checkpoint,
    prepare,
    publish,
    run_baseline,
    run_outlier_exposure,
)
from training.train import Normalizer, predict_logits

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4


def newest_version(models: Path, name: str) -> Path:
    """The served directory's newest version of `name` (what the service serves unless a version is pinned)."""
    versions = sorted((int(p.name), p) for p in (models / name).glob("*") if p.is_dir() and p.name.isdigit())
    if not versions:
        raise ValueError(f"no served version of {name} under {models} (name the live version with --live)")
    return versions[-1][1]


def _live_checkpoint(live: Artifact, ctx: Context) -> tuple[nn.Module | None, Normalizer | None, str]:
    """(net, normalizer, why) from the live version's checkpoint, or (None, None, why not)."""
    run_dir, stage = live.card.training.get("run_dir"), live.card.training.get("stage")
    if not run_dir or stage not in ("baseline", "oe"):
        return None, None, "the live card names no run directory or stage"
    path = Path(run_dir) / "checkpoints" / f"{stage}.pt"
    if not path.is_file():
        return None, None, f"the live version's checkpoint {path} is not on this machine"
    try:
        net = net_from_checkpoint(path, ctx)
    except ValueError as e:
        return None, None, f"the live version's checkpoint cannot be used: {e}"
    state = load_checkpoint(path)
    normalize = Normalizer(**state["normalizer"])
    images = as_float(ctx.data.val.images[:64])
    gate = Gate(copy.deepcopy(net).eval(), normalize.mean, normalize.std, live.card.temperature).eval()
    with torch.no_grad():
        ours = gate(torch.from_numpy(images))[3].numpy()
    difference = float(np.max(np.abs(ours - live.run(images)["anomaly_score"])))
    if not difference < PARITY_TOLERANCE:
        return None, None, f"{path} does not reproduce the live graph (max difference {difference:.2e})"
    return net, normalize, f"fine-tuned from the live version's checkpoint {path} (reproduces it: {difference:.1e})"


def _with_captures(ctx: Context, curated: Curated, pool: np.ndarray) -> tuple[Context, np.ndarray, dict[str, Any]]:
    """The context with in-distribution captures added to the training split, and the pool with outlier captures."""
    class_names = list(ctx.data.class_names)
    outliers, valid, valid_labels = image_arrays(curated.train, ctx.data.shape, class_names)
    train = ctx.data.train
    assert train.labels is not None
    if len(valid):
        train = ImageSet(np.concatenate([train.images, valid]), np.concatenate([train.labels, valid_labels]))
    repeats = capture_repeats(len(pool), len(outliers), ctx.cfg.captures.outlier_share)
    mixed = np.concatenate([pool, np.tile(outliers, (repeats, 1, 1, 1))]) if repeats else pool
    record = pool_record(len(pool), len(outliers), repeats, len(valid))
    return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, train=train)), mixed, record


def run_with_captures(
    cfg: PipelineConfig,
    *,
    captures_dir: Path,
    labels_path: Path,
    live_dir: Path,
    command: str,
    resume: bool = False,
    force: bool = False,
) -> list[Path]:
    """Curate, retrain, compare with the live version and publish the candidate to staging (module doc)."""
    live = live_version(live_dir, "image", cfg.export.name)
    ctx = prepare(cfg, command, resume=resume, force=force)
    if list(live.card.labels) != list(ctx.data.class_names) or live.image_input.shape != ctx.data.shape:
        raise ValueError(f"{live_dir} takes other inputs or labels than {cfg.data.in_distribution}")
    curated = curate(
        captures_dir, labels_path, live.card.name, cfg.captures, shape=ctx.data.shape,
        class_names=list(ctx.data.class_names),
    )  # fmt: skip
    log.info(
        "captures: train %s, held back %s", curated.summary["counts"]["train"], curated.summary["counts"]["heldout"]
    )
    pool = load_pool(ctx)
    start, normalize, start_note = _live_checkpoint(live, ctx)
    ctx, pool, mixing = _with_captures(ctx, curated, pool)
    if start is not None and normalize is not None:
        ctx = dataclasses.replace(ctx, normalize=normalize)
        start_record = {"kind": "live-checkpoint", "note": start_note}
    else:
        log.info("retraining from scratch: %s", start_note)
        start_record = {"kind": "scratch", "note": f"retrained from scratch: {start_note}"}
        start = run_baseline(ctx)
    net, pool_size = run_outlier_exposure(ctx, start, pool)

    cal = calibrate_and_evaluate(ctx, net)
    anomalies = {
        name: as_float(load_anomalies(name, ctx.data, n=cfg.data.val_anomaly_samples, seed=cfg.run.seed))
        for name in cfg.data.val_anomalies
    }
    outliers, valid, valid_labels = image_arrays(curated.heldout, ctx.data.shape, list(ctx.data.class_names))
    heldout = (as_float(outliers), as_float(valid), valid_labels)
    val = ctx.data.val
    assert val.labels is not None
    val_data = (as_float(val.images), val.labels)

    def candidate_score(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = predict_logits(net, ctx.normalize, images)
        return anomaly_scores(logits), logits.argmax(1).numpy()

    def live_score(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = live.run(images)
        return outputs["anomaly_score"], outputs["probs"].argmax(1)

    ours = figures(candidate_score, cal.threshold.value, val_data, anomalies, heldout)
    theirs = figures(live_score, live.card.threshold.value, val_data, anomalies, heldout)
    promotion, rows, passed = promotion_record(cfg.promotion, ours, theirs, live, live_dir)
    notes = [start_record["note"], f"pool: {mixing}", *trained_on_note(live, cfg.data.in_distribution)]
    title = f"{live.card.name}: candidate retrained on captures vs live version {live.card.version}"
    markdown = report(title, rows, curated.summary, notes, passed)
    (ctx.run_dir / "comparison.md").write_text(markdown)
    published = publish(
        ctx, net, name=cfg.export.name, stage="oe", pool_size=pool_size, calibration=cal,
        extra_training={"captures": curated.summary, "start": start_record, "captures_pool": mixing},
        extra_evaluation={"promotion": promotion}, extra_files={"comparison.md": markdown.encode()},
    )  # fmt: skip
    log.info("promotion rule %s: %s", "passed" if passed else "FAILED", published / "comparison.md")
    return [published]

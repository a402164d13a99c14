"""Leave-one-source-out (LOSO): how the gate does on kinds of input it never saw.

For each source group G of the default OE pool (`pool_sources.py`): fine-tune the baseline with OE on the pool
minus G, fit the reject threshold on the validation split as the pipeline does, then score G as anomalies. G is
then a kind of input that OE never showed the model, which is what users send. G is scored two ways: its pool
samples (random crops, the pool recipe's views) and its source pictures *whole*, as a user would send them (each
picture composited on white and resized to the input size, plus its inversion, light on dark like MNIST); the
whole pictures are the same images for every pool recipe, so they also compare recipes. Per group we record AUROC
and FPR at 95% recall against the validation digits, and the share of G accepted at the threshold.

Only training data is used (the pool and the validation split; the test split stays sealed), so LOSO figures may
guide choices such as the pool recipe. It is expensive (one OE fine-tune per group): `--set oe.epochs=N` runs
fewer epochs, and the result records that.

`python -m training loso --config configs/mnist-oe.toml` writes `runs/<name>/loso/loso.json` and `loso.md`.
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

from training.calibrate import choose_threshold
from training.checkpoint import load_checkpoint
from training.data.base import DataError
from training.data.registry import POOL_RECIPES
from training.data.splits import draw
from training.evaluation.metrics import detection_figures
from training.evaluation.report_sections import loso_summary, loso_table
from training.image.pool.build import DRAWN_GROUPS, full_view, load_default_pool_groups
from training.image.pool.sources import default_sources
from training.pipeline import Context, anomaly_scores, run_baseline, screen_pool, with_fragments
from training.train import predict_logits, train_stage

log = logging.getLogger(__name__)
HELD_OUT_SAMPLES = 2000  # images of the held-out group scored per run (all of it when it holds fewer)


def _recipe(pool_spec: str) -> str:
    if pool_spec not in POOL_RECIPES:
        raise ValueError(f"LOSO needs a default pool with source groups ({', '.join(POOL_RECIPES)}), not {pool_spec!r}")
    return POOL_RECIPES[pool_spec]


@dataclass(frozen=True)
class _Gate:
    """A net with its validation scores and the threshold fitted on them, computed once per net."""

    net: Any
    val_scores: np.ndarray
    threshold: float

    @classmethod
    def fit(cls, ctx: Context, net: Any) -> _Gate:
        cal = ctx.cfg.calibration
        val_scores = anomaly_scores(predict_logits(net, ctx.normalize, ctx.data.val.images))
        threshold = choose_threshold(val_scores, cal.acceptance_target, cal.threshold_method, cal.delta)
        return cls(net, val_scores, threshold.value)

    def figures(self, ctx: Context, held_out: np.ndarray) -> dict[str, float]:
        scores = anomaly_scores(predict_logits(self.net, ctx.normalize, held_out))
        figures = detection_figures(self.val_scores, scores, self.threshold)
        return {key: figures[key] for key in ("auroc", "fpr95", "accepted_fraction")} | {"threshold": self.threshold}


def _source_files() -> dict[str, tuple[Path, ...]]:
    """Each default source group's files; empty when the source packages are absent (e.g. a user-built pool)."""
    try:
        return {source.name: source.files for source in default_sources()}
    except DataError:
        return {}


def whole_pictures(
    files: tuple[Path, ...], shape: tuple[int, int, int], limit: int, seed: int, group: str
) -> np.ndarray | None:
    """The files' pictures, each whole on white and inverted (uint8), at most `limit` (seeded); None without files."""
    if not files:
        return None
    views = [view for view in (full_view(path, shape) for path in files) if view is not None]
    both = np.concatenate([np.stack(views), 255 - np.stack(views)])
    if len(both) > limit:
        both = both[np.sort(draw(limit, len(both), seed, f"whole {group}"))]
    return both


def run_loso(ctx: Context, *, groups: list[str] | None = None, baseline_checkpoint: Path | None = None) -> Path:
    """One OE fine-tune per held-out group; writes loso.json and loso.md under the run directory; returns the json."""
    cfg = ctx.cfg
    recipe = _recipe(cfg.data.outlier_pool)
    images, group_of, names = load_default_pool_groups(ctx.data.shape, recipe, cfg.data.glyph_samples)
    chosen = groups or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"unknown pool group(s) {', '.join(unknown)}; groups: {', '.join(names)}")
    if baseline_checkpoint is not None:
        baseline_net = ctx.new_net()
        baseline_net.load_state_dict(load_checkpoint(baseline_checkpoint)["net_state"])
    else:
        baseline_net = run_baseline(ctx)
    baseline = _Gate.fit(ctx, baseline_net)
    sources = _source_files()
    out_dir = ctx.run_dir / "loso"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    made = with_fragments(ctx, images[:0])  # fragments (`oe.fragments`) are no source: drawn once, kept in every run
    for name in chosen:
        started = time.monotonic()
        g = names.index(name)
        in_group = np.flatnonzero(group_of == g)
        pick = in_group[np.sort(draw(min(HELD_OUT_SAMPLES, in_group.size), in_group.size, cfg.run.seed, name))]
        held_out = images[pick]
        pool = images[group_of != g]
        if cfg.data.outlier_pool_limit is not None and cfg.data.outlier_pool_limit < len(pool):
            pool = pool[np.sort(draw(cfg.data.outlier_pool_limit, len(pool), cfg.run.seed, "LOSO pool"))]
        pool = screen_pool(ctx, baseline_net, np.concatenate([pool, made]))
        net = copy.deepcopy(baseline_net)
        train_stage(
            stage="oe", net=net, normalize=ctx.normalize, train=ctx.data.train, val=ctx.data.val, cfg=cfg.oe,
            run_dir=out_dir / name, seed=cfg.run.seed, extra_state=ctx.extra_state(), outliers=pool,
            resume=ctx.resume,
        )  # fmt: skip
        oe = _Gate.fit(ctx, net)
        rows[name] = {
            "group_images": int(in_group.size),
            "pool_without_group": len(pool),
            "oe": oe.figures(ctx, held_out),
            "baseline": baseline.figures(ctx, held_out),
        }
        # A drawn group (scribbles, glyphs) has no source pictures: its samples are already whole.
        whole = (
            held_out
            if name in DRAWN_GROUPS
            else whole_pictures(sources.get(name, ()), ctx.data.shape, HELD_OUT_SAMPLES, cfg.run.seed, name)
        )
        if whole is not None:
            rows[name]["whole_images"] = len(whole)
            rows[name]["whole_oe"] = oe.figures(ctx, whole)
            rows[name]["whole_baseline"] = baseline.figures(ctx, whole)
        rows[name]["seconds"] = round(time.monotonic() - started, 1)
        log.info("LOSO %s: %s", name, json.dumps(rows[name]))
    summary = loso_summary(rows)
    result = {
        "command": ctx.command,
        "pool": cfg.data.outlier_pool,
        "oe_epochs": cfg.oe.epochs,
        "threshold_method": cfg.calibration.threshold_method,
        "acceptance_target": cfg.calibration.acceptance_target,
        "held_out_samples_per_group": HELD_OUT_SAMPLES,
        "in_distribution": f"{cfg.data.in_distribution}:val ({len(ctx.data.val)} images)",
        "groups": rows,
        "summary": summary,
    }
    path = out_dir / "loso.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "loso.md").write_text(loso_table(result) + "\n")
    return path

"""Leave-one-source-out (LOSO) for text: how the text gate does on kinds of text OE never showed it.

For each group G of a packaged OE corpus recipe (`data.oe_corpus`; `default-wordnet` has ten: Wikipedia, news,
parliament speeches in four languages, Bulgarian Wikipedia, lorem ipsum, records, WordNet's examples): fine-tune the
baseline with OE on the corpus minus G, fit temperature and threshold on the validation split, then score G's
held-out slice (the 1-in-20 sentences that no run trains on, `corpora.is_oe_heldout`) as anomalies. G is then a kind
of text the model never saw, which is what users send. Beside it, per group:

- the baseline twin on the same sentences (what OE gains on an unseen kind; the text goal asks for at most half the
  baseline's FPR95 on every unseen set, so the ratio is recorded): the matched twin as the pipeline publishes it
  (`oe.matched_twin`: the baseline fine-tuned by the OE stage's settings with cross-entropy alone, in
  `loso/matched-twin/`), else the baseline itself;
- a reference OE run on the whole corpus (`in_pool`), scored on the same held-out sentences: the gap between it and
  the LOSO run is what OE loses when a kind is missing from its corpus.

Only training data is read (the OE corpus, the training and validation splits; the test split stays sealed), so the
figures may guide choices such as the corpus recipe. Scores are the torch fp32 net's KL[U||p] at the temperature
fitted on the validation split (the served graph is int8; its scores differ slightly). One OE fine-tune per group
plus the reference: `--set oe.epochs=N` runs fewer epochs, and the result records that.

`python -m training loso --config configs/topics-oe.toml --baseline runs/<name>/checkpoints/baseline.pt` writes
`runs/<name>/loso/loso.json` and `loso.md`.
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
from torch import nn

from training.calibrate import choose_threshold, fit_temperature
from training.data.base import DataError
from training.data.splits import draw
from training.evaluation.metrics import detection_figures
from training.evaluation.report_sections import loso_summary, loso_table
from training.pipeline import anomaly_scores
from training.text import corpora
from training.text.config import TextPipelineConfig
from training.text.pipeline import (
    TextContext,
    load_corpus,
    run_text_baseline,
    run_text_matched_twin,
    text_net_from_checkpoint,
)
from training.text.train import predict_text_logits, train_text_stage

log = logging.getLogger(__name__)
HELD_OUT_SAMPLES = 1000  # held-out-slice sentences of the left-out group scored per run (all when it holds fewer)
IN_POOL = "whole-corpus"  # run directory of the reference run, which leaves no group out
MATCHED_TWIN = "matched-twin"  # run directory of the baseline twin's matched fine-tune (oe.matched_twin)


def corpus_groups(spec: str) -> tuple[str, ...]:
    """The source groups of a packaged text OE corpus recipe; a user's `text:PATH` corpus has none."""
    recipes = corpora.OE_RECIPES
    if spec not in recipes:
        raise DataError(f"LOSO needs a packaged OE corpus with source groups ({', '.join(recipes)}), not {spec!r}")
    return recipes[spec]


def loso_groups(cfg: TextPipelineConfig, groups: list[str] | None) -> list[str]:
    """The groups to leave out in turn: `groups`, checked against the recipe's, else all of them (minus those the
    config already excludes from every run)."""
    kept = [g for g in corpus_groups(cfg.data.oe_corpus) if g not in cfg.data.oe_corpus_exclude]
    unknown = sorted(set(groups or ()) - set(kept))
    if unknown:
        raise DataError(f"unknown OE corpus group(s) {', '.join(unknown)}; groups: {', '.join(kept)}")
    return list(groups) if groups else kept


def held_out_texts(group: str, seed: int) -> tuple[str, ...]:
    """Up to HELD_OUT_SAMPLES sentences of `group`'s held-out slice (seeded draw, corpus order)."""
    slice_ = [s for s in corpora.oe_group_sentences(group) if corpora.is_oe_heldout(s)]
    if not slice_:
        raise DataError(f"OE group {group} has no held-out sentences to score")
    pick = np.sort(draw(min(HELD_OUT_SAMPLES, len(slice_)), len(slice_), seed, f"text LOSO {group}"))
    return tuple(slice_[i] for i in pick)


@dataclass(frozen=True)
class _TextGate:
    """A net with its temperature, validation scores and the threshold fitted on them, computed once per net."""

    net: nn.Module
    temperature: float
    val_scores: np.ndarray
    threshold: float

    @classmethod
    def fit(cls, ctx: TextContext, net: nn.Module) -> _TextGate:
        val = ctx.data.val
        assert val.labels is not None
        logits = predict_text_logits(net, ctx.tokenizer, val.texts)
        temperature = fit_temperature(logits, torch.from_numpy(val.labels.astype(np.int64)))
        scores = anomaly_scores(logits / temperature)
        cal = ctx.cfg.calibration
        threshold = choose_threshold(scores, cal.acceptance_target, cal.threshold_method, cal.delta)
        return cls(net, temperature, scores, threshold.value)

    def figures(self, ctx: TextContext, texts: tuple[str, ...]) -> dict[str, float]:
        scores = anomaly_scores(predict_text_logits(self.net, ctx.tokenizer, texts) / self.temperature)
        figures = detection_figures(self.val_scores, scores, self.threshold)
        return {key: figures[key] for key in ("auroc", "fpr95", "accepted_fraction")} | {"threshold": self.threshold}


def _fine_tune(ctx: TextContext, baseline: nn.Module, exclude: list[str], run_dir: Path) -> tuple[_TextGate, int]:
    corpus = load_corpus(ctx, exclude)
    net = copy.deepcopy(baseline)
    train_text_stage(
        stage="oe", net=net, tokenizer=ctx.tokenizer, train=ctx.data.train, val=ctx.data.val, cfg=ctx.cfg.oe,
        run_dir=run_dir, seed=ctx.cfg.run.seed, extra_state=ctx.extra_state(), outliers=corpus, resume=ctx.resume,
    )  # fmt: skip
    return _TextGate.fit(ctx, net), len(corpus)


def run_text_loso(
    ctx: TextContext, *, groups: list[str] | None = None, baseline_checkpoint: Path | None = None
) -> Path:
    """One OE fine-tune per left-out group plus one on the whole corpus; writes loso.json and loso.md under the run
    directory; returns the json."""
    cfg = ctx.cfg
    chosen = loso_groups(cfg, groups)
    baseline_net = (
        text_net_from_checkpoint(baseline_checkpoint, ctx) if baseline_checkpoint is not None
        else run_text_baseline(ctx)
    )  # fmt: skip
    out_dir = ctx.run_dir / "loso"
    out_dir.mkdir(parents=True, exist_ok=True)
    twin = run_text_matched_twin(ctx, baseline_net, out_dir / MATCHED_TWIN) if cfg.oe.matched_twin else baseline_net
    baseline = _TextGate.fit(ctx, twin)
    started = time.monotonic()
    in_pool, corpus_size = _fine_tune(ctx, baseline_net, list(cfg.data.oe_corpus_exclude), out_dir / IN_POOL)
    log.info("LOSO reference run on the whole corpus (%d sentences): %.0f s", corpus_size, time.monotonic() - started)
    rows: dict[str, Any] = {}
    for name in chosen:
        started = time.monotonic()
        texts = held_out_texts(name, cfg.run.seed)
        oe, size = _fine_tune(ctx, baseline_net, [*cfg.data.oe_corpus_exclude, name], out_dir / name)
        rows[name] = {
            "group_texts": len(texts),
            "corpus_without_group": size,
            "oe": oe.figures(ctx, texts),
            "baseline": baseline.figures(ctx, texts),
            "in_pool_oe": in_pool.figures(ctx, texts),
            "seconds": round(time.monotonic() - started, 1),
        }
        log.info("LOSO %s: %s", name, json.dumps(rows[name]))
    result = {
        "task": "text",
        "command": ctx.command,
        "pool": cfg.data.oe_corpus,
        "corpus_sentences": corpus_size,
        "oe_epochs": cfg.oe.epochs,
        "baseline_twin": "matched" if cfg.oe.matched_twin else "baseline stage",
        "threshold_method": cfg.calibration.threshold_method,
        "acceptance_target": cfg.calibration.acceptance_target,
        "held_out_samples_per_group": HELD_OUT_SAMPLES,
        "in_distribution": f"{cfg.data.in_distribution}:val ({len(ctx.data.val)} texts)",
        "groups": rows,
        "summary": loso_summary(rows),
    }
    path = out_dir / "loso.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "loso.md").write_text(loso_table(result) + "\n")
    return path

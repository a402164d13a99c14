"""The text training loop for one stage: the baseline (cross-entropy), OE fine-tuning (CE + lambda * uniform CE), or
the matched fine-tune (the OE stage's epochs, schedule, learning rates and in-distribution batches, cross-entropy
alone: the baseline twin that differs from the OE twin by the OE term only).

As the image loop (`training/train.py`): every epoch's randomness is derived from (run seed, stage, epoch), so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have; one checkpoint per epoch. Texts are
tokenized once; each step pads its batch (in-distribution and outlier texts together, one forward pass) to the
longest text in it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import Stage
from training.losses import outlier_exposure_loss
from training.progress import Progress
from training.text.config import TextOEConfig, TextOptimConfig
from training.text.data import TextSet
from training.text.tokenize import TextTokenizer
from training.train import completed_stage, end_epoch, start_or_resume, step_on

log = logging.getLogger(__name__)
_STAGE_SEED = {"baseline": 1, "oe": 2, "matched": 2}  # matched draws the OE stage's batches
EVAL_BATCH = 128


def _tensors(tokenizer: TextTokenizer, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    input_ids, mask = tokenizer.pad(ids)
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


@torch.no_grad()
def predict_text_logits(net: nn.Module, tokenizer: TextTokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Logits in eval mode; texts are batched by length (less padding), results come back in input order."""
    net.eval()
    ids = tokenizer.encode(texts)
    order = np.argsort([len(row) for row in ids], kind="stable")
    parts = []
    for start in range(0, len(order), EVAL_BATCH):
        chunk = order[start : start + EVAL_BATCH]
        parts.append(net(*_tensors(tokenizer, [ids[i] for i in chunk])))
    if not parts:
        return torch.empty(0, _num_classes(net))
    logits = torch.empty(len(ids), parts[0].shape[1])
    logits[torch.from_numpy(order)] = torch.cat(parts)
    return logits


def _num_classes(net: nn.Module) -> int:
    head = getattr(net, "head", None)
    return int(head.out_features) if isinstance(head, nn.Linear) else 0


def _linear_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: 0 -> 1 over `warmup` steps, then linearly down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _optimizer(net: nn.Module, cfg: TextOptimConfig) -> torch.optim.AdamW:
    """AdamW; the head at `head_lr`, the encoder at `lr`; no weight decay on biases and LayerNorm weights."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in net.named_parameters():
        if param.requires_grad:
            key = (name.startswith("head."), param.ndim == 1)
            groups.setdefault(key, []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": cfg.head_lr if is_head else cfg.lr,
                "peak_lr": cfg.head_lr if is_head else cfg.lr,
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
            }
            for (is_head, no_decay), params in sorted(groups.items())
        ]
    )


def text_checkpoint_path(run_dir: Path, stage: Stage) -> Path:
    return run_dir / "checkpoints" / f"{stage}.pt"


def train_text_stage(
    *,
    stage: Stage,
    net: nn.Module,
    tokenizer: TextTokenizer,
    train: TextSet,
    val: TextSet,
    cfg: TextOptimConfig,
    run_dir: Path,
    seed: int,
    extra_state: dict[str, Any],
    outliers: Sequence[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `net` in place for `cfg.epochs` epochs (resuming if asked), checkpointing after each epoch.

    `outliers` turns on the OE objective; `cfg` must then be a TextOEConfig. Stage "matched" takes the OE stage's
    TextOEConfig and no outliers: the same in-distribution batches in the same order, cross-entropy alone. Returns the
    final checkpoint state.
    """
    if train.labels is None or val.labels is None:
        raise ValueError("training needs labelled train and val sets")
    if outliers is not None and not isinstance(cfg, TextOEConfig):
        raise TypeError("outliers need a TextOEConfig")
    if stage == "matched" and (outliers is not None or not isinstance(cfg, TextOEConfig)):
        raise TypeError("the matched stage takes the OE stage's TextOEConfig and no outliers")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = text_checkpoint_path(run_dir, stage)
    optimizer = _optimizer(net, cfg)
    start_epoch, history = start_or_resume(path, net, optimizer, resume=resume, stage=stage, epochs=cfg.epochs)

    train_ids = tokenizer.encode(train.texts)
    out_ids = tokenizer.encode(outliers) if outliers is not None else []
    train_y = torch.from_numpy(train.labels.astype(np.int64))
    val_y = torch.from_numpy(val.labels.astype(np.int64))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = math.ceil(cfg.warmup_fraction * total_steps)
    oe_cfg = cfg if outliers is not None and isinstance(cfg, TextOEConfig) else None  # the matched stage: None
    out_batch = round(cfg.batch_size * oe_cfg.outlier_batch_ratio) if oe_cfg else 0
    weight = oe_cfg.weight if oe_cfg else 0.0
    state: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([seed, _STAGE_SEED[stage], epoch])
        torch.manual_seed(int(rng.integers(2**31)))
        order = rng.permutation(len(train))
        out_order = rng.permutation(len(out_ids)) if out_ids else None
        net.train()
        started, loss_sum, correct = time.monotonic(), 0.0, 0
        bar = Progress(steps_per_epoch, f"{stage} {epoch + 1}/{cfg.epochs}")
        for step in bar:
            scale = _linear_schedule(epoch * steps_per_epoch + step, total_steps, warmup)
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * scale
            index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = [train_ids[i] for i in index]
            if out_order is not None:
                # Consecutive chunks of a fresh permutation, wrapping around (as the image loop).
                at = (step * out_batch) % len(out_ids)
                batch += [out_ids[i] for i in np.take(out_order, np.arange(at, at + out_batch), mode="wrap")]
            y = train_y[index]
            logits = net(*_tensors(tokenizer, batch))
            loss_value = step_on(optimizer, outlier_exposure_loss(logits, y, weight))  # CE alone without outliers
            loss_sum += loss_value * len(index)
            correct += int((logits[: len(index)].argmax(1) == y).sum())
            bar.note(loss=f"{loss_value:.3f}")
        val_logits = predict_text_logits(net, tokenizer, val.texts)
        state = end_epoch(
            path, net, optimizer, history, extra_state, stage=stage, epoch=epoch, epochs=cfg.epochs, run_dir=run_dir,
            train_loss=loss_sum / len(train), train_accuracy=correct / len(train), val_logits=val_logits,
            val_labels=val_y, started=started,
        )  # fmt: skip
    return state or completed_stage(path, net)  # nothing left to run: the stage was complete

"""The training loop for one stage: the baseline (cross-entropy) or OE fine-tuning (CE + lambda * uniform CE).

One epoch at a time: shuffle with a seed derived from (run seed, stage, epoch), step SGD with per-step cosine decay,
validate, checkpoint. Because every epoch's randomness is derived rather than carried, a run resumed from epoch e's
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.batches import BatchAssembler
from training.checkpoint import has_checkpoint, load_latest_checkpoint, save_checkpoint
from training.config import OEConfig, OptimConfig, Stage
from training.data.base import ImageSet, as_float
from training.losses import outlier_exposure_loss
from training.progress import Progress

log = logging.getLogger(__name__)
_STAGE_SEED = {"baseline": 1, "oe": 2}


@dataclass
class Normalizer:
    """Per-channel mean/std of the training images, applied in the training forward pass and inside the graph."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, images: np.ndarray) -> Normalizer:
        x = as_float(images)
        return cls(
            mean=[float(v) for v in x.mean(axis=(0, 2, 3))],
            std=[max(float(v), 1e-3) for v in x.std(axis=(0, 2, 3))],
        )

    @classmethod
    def identity(cls, channels: int) -> Normalizer:
        """No standardization: pixels in [0, 1] go to the net as they are (the reference MNIST preprocessing)."""
        return cls(mean=[0.0] * channels, std=[1.0] * channels)

    @property
    def is_identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:  # (x - 0) / 1 == x exactly: skip two passes over the batch
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def _batch(images: np.ndarray, index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(as_float(images[index]))


@torch.no_grad()
def predict_logits(net: nn.Module, normalize: Normalizer, images: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    net.eval()
    parts = [
        net(normalize(_batch(images, np.arange(i, min(i + batch_size, len(images))))))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(parts)


def _cosine(step: int, total: int, lr_max: float, lr_min: float = 1e-6) -> float:
    """The reference code's cosine_annealing: lr_min + (lr_max - lr_min) * 0.5 * (1 + cos(pi * step / total))."""
    return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + math.cos(math.pi * step / total))


def checkpoint_path(run_dir: Path, stage: Stage) -> Path:
    return run_dir / "checkpoints" / f"{stage}.pt"


def step_on(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimizer step on `loss`; returns its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def start_or_resume(
    path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, *, resume: bool, stage: Stage, epochs: int
) -> tuple[int, list[dict[str, Any]]]:
    """(first epoch to run, history so far): from the stage's last checkpoint when resuming, else from scratch;
    FileExistsError if a checkpoint exists and `resume` is not set (a run is never overwritten silently)."""
    if resume and has_checkpoint(path):
        previous = load_latest_checkpoint(path)
        net.load_state_dict(previous["net_state"])
        optimizer.load_state_dict(previous["optimizer_state"])
        log.info("resuming %s from epoch %d/%d", stage, previous["epoch"], epochs)
        return previous["epoch"], previous["history"]
    if has_checkpoint(path):
        raise FileExistsError(f"{path} exists: pass --resume to continue that run, or use a new run directory")
    return 0, []


def completed_stage(path: Path, net: nn.Module) -> dict[str, Any]:
    """The last checkpoint of a stage that had no epoch left to run, its weights loaded into `net`."""
    state = load_latest_checkpoint(path)
    net.load_state_dict(state["net_state"])
    return state


def end_epoch(
    path: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, Any]],
    extra_state: dict[str, Any],
    *,
    stage: Stage,
    epoch: int,
    epochs: int,
    run_dir: Path,
    train_loss: float,
    train_accuracy: float,
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    started: float,
) -> dict[str, Any]:
    """Record the epoch (history, log line, metrics.jsonl) and checkpoint it; returns the checkpoint state."""
    record = {
        "stage": stage,
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_nll": float(F.cross_entropy(val_logits, val_labels)),
        "val_accuracy": float((val_logits.argmax(1) == val_labels).float().mean()),
        "seconds": round(time.monotonic() - started, 2),
    }
    history.append(record)
    log.info("%s", json.dumps(record))
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    state = {
        **extra_state,
        "stage": stage,
        "epoch": epoch + 1,
        "epochs": epochs,
        "net_state": net.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "history": history,
    }
    save_checkpoint(path, state)
    return state


def train_stage(
    *,
    stage: Stage,
    net: nn.Module,
    normalize: Normalizer,
    train: ImageSet,
    val: ImageSet,
    cfg: OptimConfig,
    run_dir: Path,
    seed: int,
    extra_state: dict[str, Any],
    outliers: np.ndarray | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `net` in place for `cfg.epochs` epochs (resuming if asked), checkpointing after each epoch.

    `outliers` (uint8/float NCHW) turns on the OE objective; `cfg` must then be an OEConfig. Returns the final
    checkpoint state (net weights, optimizer, history, `extra_state`).
    """
    if train.labels is None or val.labels is None:
        raise ValueError("training needs labelled train and val sets")
    if outliers is not None and not isinstance(cfg, OEConfig):
        raise TypeError("outliers need an OEConfig")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(run_dir, stage)
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay or 0.0,
    )
    start_epoch, history = start_or_resume(path, net, optimizer, resume=resume, stage=stage, epochs=cfg.epochs)

    train_y = torch.from_numpy(train.labels.astype(np.int64))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    out_batch = round(cfg.batch_size * cfg.outlier_batch_ratio) if isinstance(cfg, OEConfig) else 0
    assemble = BatchAssembler(train.images, outliers, cfg.batch_size + (out_batch if outliers is not None else 0))
    # Channels-last weights and inputs take oneDNN's fast convolution path on CPU (bench/train_speed.py); the net
    # is handed back in the default layout, so checkpoints, export and evaluation see an ordinary module.
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    state: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([seed, _STAGE_SEED[stage], epoch])
        torch.manual_seed(int(rng.integers(2**31)))
        order = rng.permutation(len(train))
        out_order = rng.permutation(len(outliers)) if outliers is not None else None
        net.train()
        started, loss_sum, correct = time.monotonic(), 0.0, 0
        bar = Progress(steps_per_epoch, f"{stage} {epoch + 1}/{cfg.epochs}")
        for step in bar:
            lr = _cosine(epoch * steps_per_epoch + step, total_steps, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            out_index = None
            if outliers is not None and out_order is not None:
                # Consecutive chunks of a fresh permutation, wrapping around: every outlier is seen once per
                # len(outliers) / out_batch steps, as the reference code's offset-shifted loader does.
                at = (step * out_batch) % len(outliers)
                out_index = np.take(out_order, np.arange(at, at + out_batch), mode="wrap")
            x, y = assemble(index, out_index), train_y[index]  # in-distribution rows first, then the outliers
            logits = net(normalize(x))  # one forward pass over in + out, as the reference code
            weight = cfg.weight if isinstance(cfg, OEConfig) else 0.0
            loss_value = step_on(optimizer, outlier_exposure_loss(logits, y, weight))  # CE alone without outliers
            loss_sum += loss_value * len(index)
            correct += int((logits[: len(index)].argmax(1) == y).sum())
            bar.note(loss=f"{loss_value:.3f}", lr=f"{lr:.4f}")
        val_logits = predict_logits(net, normalize, val.images)
        val_y = torch.from_numpy(val.labels.astype(np.int64))
        state = end_epoch(
            path, net, optimizer, history, extra_state, stage=stage, epoch=epoch, epochs=cfg.epochs, run_dir=run_dir,
            train_loss=loss_sum / len(train), train_accuracy=correct / len(train), val_logits=val_logits,
            val_labels=val_y, started=started,
        )  # fmt: skip
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return state or completed_stage(path, net)  # nothing left to run: the stage was complete

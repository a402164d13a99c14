"""Tiny published artifacts for tests: the real export path on a random-weight net, in a few seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.calibrate import Threshold, conformal_threshold
from training.card import ImageInputSpec
from training.export import Gate, publish_artifact
from training.image.nets import NetConfig, build_net

LABELS = [str(i) for i in range(10)]


def make_gate(seed: int = 0, temperature: float = 1.7) -> Gate:
    torch.manual_seed(seed)
    net = build_net(NetConfig(width=8), 1, 10, 28, 28)
    return Gate(net, [0.13], [0.31], temperature).eval()


def publish_tiny(
    models_dir: Path,
    name: str = "tiny",
    version: int | None = None,
    seed: int = 0,
    *,
    threshold: Threshold | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """A random-weight 28x28 artifact: the real export path, in a few seconds."""
    rng = np.random.default_rng(seed)
    return publish_artifact(
        make_gate(seed),
        models_dir=models_dir,
        name=name,
        version=version,
        labels=LABELS,
        input_spec=ImageInputSpec(channels=1, height=28, width=28, mean=[0.13], std=[0.31]),
        threshold=threshold or conformal_threshold(rng.random(100), 0.95),
        calibration_split="random",
        evaluation={},
        training={"note": "random weights, for tests"},
        check_images=rng.random((8, 1, 28, 28), dtype=np.float32),
        extra_files=extra_files,
    )

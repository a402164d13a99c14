"""The OE pool screen: pool images the starting net reads as a class with near certainty are dropped before OE."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from training.pipeline import screen_pool
from training.train import Normalizer


class _BrightIsClassZero(nn.Module):
    """Logits (10 * mean pixel, 0): an image's class-0 probability grows with its brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        return torch.stack([10 * mean, torch.zeros_like(mean)], dim=1)


def _ctx(screen_confidence: float | None) -> Any:
    return SimpleNamespace(
        cfg=SimpleNamespace(oe=SimpleNamespace(screen_confidence=screen_confidence)), normalize=Normalizer.identity(1)
    )


def test_images_read_with_confidence_at_or_above_the_threshold_are_dropped() -> None:
    # Mean pixel m in [0, 1] -> p(class 0) = sigmoid(10 m): 0.5, 0.731, 0.881, 0.953, 0.982, 0.9933, 0.9975, ...
    levels = np.arange(11, dtype=np.float64) / 10
    pool = np.stack([np.full((1, 4, 4), round(255 * m), dtype=np.uint8) for m in levels])
    p = 1 / (1 + np.exp(-10 * pool.reshape(11, -1).mean(1) / 255))
    kept = screen_pool(_ctx(0.99), _BrightIsClassZero(), pool)
    np.testing.assert_array_equal(kept, pool[p < 0.99])
    assert len(kept) == 5  # m = 0.0 ... 0.4 stay (p <= 0.982); 0.5 and brighter go (p >= 0.9933)
    # An image read at exactly the threshold is dropped (>=): the threshold is image 5's own float32 confidence.
    boundary = float(torch.softmax(_BrightIsClassZero()(torch.from_numpy(pool[5:6] / np.float32(255))), 1)[0, 0])
    assert len(screen_pool(_ctx(boundary), _BrightIsClassZero(), pool)) == 5


def test_no_threshold_keeps_every_image() -> None:
    pool = np.full((3, 1, 4, 4), 255, dtype=np.uint8)
    assert screen_pool(_ctx(None), _BrightIsClassZero(), pool) is pool

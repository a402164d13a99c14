"""Confidence scores as pure functions of logits.

Each returns the paper's quantity with its natural sign (higher = more in-distribution). `ANOMALY_SCORES` maps a
name to the negated or transformed form used for detection, where higher = more anomalous (anomalies are the
positive class in every metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def msp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Maximum softmax probability, max_i softmax(z / T)_i (Hendrycks & Gimpel, 2017)."""
    return torch.softmax(logits / temperature, dim=-1).amax(dim=-1)


def kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL[U || p] = -log k - (1/k) sum_i log p_i for p = softmax(z) (Hendrycks et al., OE, ICLR 2019).

    Zero for a flat posterior, large for a confident one. Computed from log-softmax, so it stays finite for any
    finite logits.
    """
    k = logits.shape[-1]
    return -math.log(k) - torch.log_softmax(logits, dim=-1).mean(dim=-1)


def anomaly_score_from_kl(kl: torch.Tensor) -> torch.Tensor:
    """The served anomaly score, 1 / (1 + KL[U || p]): in (0, 1], exactly 1 for a flat posterior, higher = more
    anomalous. Monotone decreasing in KL, so it ranks inputs exactly as -KL does."""
    return 1.0 / (1.0 + kl)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Maximum logit, max_i z_i (Hendrycks et al., 2022, "Scaling OOD detection")."""
    return logits.amax(dim=-1)


def negative_energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """-E(x) = T * logsumexp(z / T) (Liu et al., 2020, energy-based OOD detection)."""
    return temperature * torch.logsumexp(logits / temperature, dim=-1)


def rescaled_confidence(max_probability: torch.Tensor, num_classes: int) -> torch.Tensor:
    """0-1 posterior rescaling (c - 1/k) / (1 - 1/k) (OE paper, appendix C): 0 for a flat posterior, 1 for certainty."""
    chance = 1.0 / num_classes
    return (max_probability - chance) / (1.0 - chance)


ANOMALY_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "msp": lambda z: -msp(z),
    "kl_uniform": lambda z: -kl_uniform(z),
    "max_logit": lambda z: -max_logit(z),
    "energy": lambda z: -negative_energy(z),
}
"""Detection scores, higher = more anomalous, all computed from logits."""

"""The Outlier Exposure objective (Hendrycks, Mazeika, Dietterich, ICLR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the cross-entropy from the uniform distribution to softmax(z):
    logsumexp(z) - mean_i z_i = KL[U || p] + log k. Zero gradient exactly when p is uniform."""
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


def outlier_exposure_loss(logits: torch.Tensor, targets: torch.Tensor, oe_weight: float = 0.5) -> torch.Tensor:
    """CE(x_in) + lambda * E_out[logsumexp(z) - mean(z)], as the reference code computes it.

    `logits` holds the in-distribution batch first (len(targets) rows) and the outlier batch after it, from one
    forward pass over the concatenated batch (so batch-norm statistics see both). lambda = 0.5 for images.
    """
    num_in = targets.shape[0]
    loss = F.cross_entropy(logits[:num_in], targets)
    if logits.shape[0] > num_in:
        loss = loss + oe_weight * uniform_cross_entropy(logits[num_in:])
    return loss

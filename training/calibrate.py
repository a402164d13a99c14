"""Post-hoc calibration: softmax temperature, 0-1 posterior rescaling, and the reject threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """Temperature T minimizing the held-out NLL of softmax(z / T) (Guo et al., 2017), fitted with LBFGS on log T
    so T stays positive. `logits` must come from data the net never trained on."""
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t],
        lr=0.5,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        raise ValueError("temperature fit diverged")
    return temperature


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(z / T)."""
    return float(F.cross_entropy(logits.double() / temperature, labels))


@dataclass(frozen=True)
class Threshold:
    """A reject threshold on the anomaly score (`reject = score >= value`) and how it was chosen."""

    value: float
    acceptance_target: float
    calibration_samples: int
    calibration_acceptance: float


def conformal_threshold(in_distribution_scores: np.ndarray, acceptance_target: float = 0.95) -> Threshold:
    """Smallest threshold that accepts at least `acceptance_target` of exchangeable future in-distribution inputs.

    With n held-out scores and j = ceil((n + 1) * target), a new score is <= the j-th smallest with probability
    >= j / (n + 1) >= target (split-conformal guarantee), so the threshold is the next float above that order
    statistic and `reject = score >= threshold` accepts it. If j > n no order statistic guarantees the target
    (too few samples): that is an error. Scores are float32, as the ONNX graph emits them.
    """
    if not 0.0 < acceptance_target < 1.0:
        raise ValueError(f"acceptance_target must be in (0, 1), got {acceptance_target}")
    scores = np.sort(np.asarray(in_distribution_scores, dtype=np.float32).ravel())
    n = scores.size
    if n == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("need a non-empty set of finite calibration scores")
    j = math.ceil((n + 1) * acceptance_target)
    if j > n:
        needed = math.ceil(acceptance_target / (1.0 - acceptance_target))
        raise ValueError(
            f"{n} calibration scores cannot guarantee {acceptance_target:.1%} acceptance; need >= {needed}"
        )
    value = float(np.nextafter(scores[j - 1], np.float32(np.inf)))
    accepted = float(np.mean(scores < np.float32(value)))
    return Threshold(
        value=value,
        acceptance_target=acceptance_target,
        calibration_samples=n,
        calibration_acceptance=accepted,
    )

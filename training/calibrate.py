"""Post-hoc calibration: softmax temperature, 0-1 posterior rescaling, and the reject threshold.

Two threshold rules, both on n held-out in-distribution scores and both assuming future inputs are exchangeable
with them (same distribution, drawn independently):

- `conformal`: split-conformal quantile; the acceptance of a future input, *averaged over calibration draws*, is
  >= the target. A single calibrated threshold can accept a little less (about target - 1/sqrt(n) at worst
  typical draws).
- `pac`: the smallest order statistic whose true acceptance is >= the target *with probability >= 1 - delta over
  the calibration draw* (a PAC / tolerance-interval bound): a stricter promise, paid for with a slightly higher
  threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

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


ThresholdMethod = Literal["conformal", "pac"]
THRESHOLD_PROMISES: dict[str, str] = {
    "conformal": "expected acceptance of exchangeable in-distribution inputs >= acceptance_target "
    "(averaged over calibration draws; split-conformal quantile)",
    "pac": "acceptance of exchangeable in-distribution inputs >= acceptance_target with probability >= 1 - delta "
    "over the calibration draw (binomial tolerance bound on an order statistic)",
}


@dataclass(frozen=True)
class Threshold:
    """A reject threshold on the anomaly score (`reject = score >= value`) and how it was chosen."""

    value: float
    acceptance_target: float
    calibration_samples: int
    calibration_acceptance: float
    method: ThresholdMethod = "conformal"
    delta: float | None = None
    order_statistic: int | None = None
    """k: the threshold is the next float32 above the k-th smallest calibration score."""

    @property
    def promise(self) -> str:
        return THRESHOLD_PROMISES[self.method]


def _sorted_scores(in_distribution_scores: np.ndarray) -> np.ndarray:
    scores = np.sort(np.asarray(in_distribution_scores, dtype=np.float32).ravel())
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("need a non-empty set of finite calibration scores")
    return scores


def _threshold_at(scores: np.ndarray, k: int, target: float, method: ThresholdMethod, delta: float | None) -> Threshold:
    """The threshold just above the k-th smallest of the sorted `scores` (1-based), so that score is accepted."""
    value = float(np.nextafter(scores[k - 1], np.float32(np.inf)))
    return Threshold(
        value=value,
        acceptance_target=target,
        calibration_samples=int(scores.size),
        calibration_acceptance=float(np.mean(scores < np.float32(value))),
        method=method,
        delta=delta,
        order_statistic=k,
    )


def conformal_threshold(in_distribution_scores: np.ndarray, acceptance_target: float = 0.95) -> Threshold:
    """Smallest threshold that accepts at least `acceptance_target` of exchangeable future in-distribution inputs.

    With n held-out scores and j = ceil((n + 1) * target), a new score is <= the j-th smallest with probability
    >= j / (n + 1) >= target (split-conformal guarantee), so the threshold is the next float above that order
    statistic and `reject = score >= threshold` accepts it. If j > n no order statistic guarantees the target
    (too few samples): that is an error. Scores are float32, as the ONNX graph emits them.
    """
    if not 0.0 < acceptance_target < 1.0:
        raise ValueError(f"acceptance_target must be in (0, 1), got {acceptance_target}")
    scores = _sorted_scores(in_distribution_scores)
    n = scores.size
    j = math.ceil((n + 1) * acceptance_target)
    if j > n:
        needed = n + 1  # the smallest count that passes the same test, computed the same way (no float shortcut)
        while math.ceil((needed + 1) * acceptance_target) > needed:
            needed += 1
        raise ValueError(
            f"{n} calibration scores cannot guarantee {acceptance_target:.1%} acceptance; need >= {needed}"
        )
    return _threshold_at(scores, j, acceptance_target, "conformal", None)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed in log space (exact enough for n up to millions)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    i = torch.arange(0, k + 1, dtype=torch.float64)
    log_pmf = (
        math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
    )
    return float(torch.logsumexp(log_pmf, dim=0).exp().clamp(max=1.0))


def pac_threshold(
    in_distribution_scores: np.ndarray, acceptance_target: float = 0.95, delta: float = 0.05
) -> Threshold:
    """Smallest threshold whose acceptance is >= `acceptance_target` with probability >= 1 - `delta` over the draw
    of the n calibration scores.

    For continuous exchangeable scores the acceptance F(s_(k)) of the k-th smallest score is >= t exactly when at
    most k - 1 of the n scores fall below the t-quantile, so P(F(s_(k)) >= t) = P(Binomial(n, t) <= k - 1); we take
    the smallest k with that probability >= 1 - delta (Vovk 2012, "Conditional validity of inductive conformal
    predictors"; the classical distribution-free tolerance bound). Error if even k = n is not enough.
    """
    if not 0.0 < acceptance_target < 1.0:
        raise ValueError(f"acceptance_target must be in (0, 1), got {acceptance_target}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    scores = _sorted_scores(in_distribution_scores)
    n = scores.size
    # P(Bin(n, t) <= k - 1) grows with k: start the search at the conformal index, whose probability is about 1/2.
    k = max(1, min(n, math.ceil((n + 1) * acceptance_target)))
    while binomial_cdf(k - 1, n, acceptance_target) < 1.0 - delta:
        k += 1
        if k > n:
            needed = n + 1  # the smallest count whose largest score keeps the promise, by the same test
            while binomial_cdf(needed - 1, needed, acceptance_target) < 1.0 - delta:
                needed += 1
            raise ValueError(
                f"{n} calibration scores cannot guarantee {acceptance_target:.1%} acceptance with probability "
                f"{1 - delta:.1%}; need >= {needed}"
            )
    while k > 1 and binomial_cdf(k - 2, n, acceptance_target) >= 1.0 - delta:
        k -= 1
    return _threshold_at(scores, k, acceptance_target, "pac", delta)


def choose_threshold(
    in_distribution_scores: np.ndarray, acceptance_target: float, method: ThresholdMethod, delta: float
) -> Threshold:
    """The threshold by the configured rule (module doc)."""
    if method == "pac":
        return pac_threshold(in_distribution_scores, acceptance_target, delta)
    return conformal_threshold(in_distribution_scores, acceptance_target)

import math

import numpy as np
import pytest
import torch

from training.calibrate import (
    binomial_cdf,
    choose_threshold,
    conformal_threshold,
    fit_temperature,
    nll,
    pac_threshold,
)


def test_fit_temperature_recovers_the_generating_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(20000, 10, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 2.5, dim=1), 1, generator=g).squeeze(1)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    assert nll(logits, labels, temperature) < nll(logits, labels, 1.0)


def test_conformal_threshold_exact_order_statistic() -> None:
    scores = np.arange(1, 101, dtype=np.float32) / 100  # 0.01 .. 1.00
    th = conformal_threshold(scores, 0.95)
    # j = ceil(101 * 0.95) = 96: the 96th smallest score (0.96) is the largest accepted one.
    assert np.float32(0.96) < np.float32(th.value) <= np.nextafter(np.float32(0.96), np.float32(1))
    assert th.calibration_acceptance == 0.96
    assert th.calibration_samples == 100
    assert th.acceptance_target == 0.95


def test_conformal_threshold_meets_target_on_fresh_samples() -> None:
    rng = np.random.default_rng(0)
    accepted = []
    for _ in range(200):
        th = conformal_threshold(rng.random(200, dtype=np.float32), 0.9)
        accepted.append(np.mean(rng.random(2000, dtype=np.float32) < th.value))
    assert np.mean(accepted) >= 0.9


def test_conformal_threshold_refuses_too_few_samples() -> None:
    with pytest.raises(ValueError, match="need >= 19"):
        conformal_threshold(np.linspace(0, 1, 18), 0.95)
    assert conformal_threshold(np.linspace(0, 1, 19), 0.95).calibration_acceptance == 1.0
    with pytest.raises(ValueError, match="finite"):
        conformal_threshold(np.array([0.1, np.nan]), 0.5)
    with pytest.raises(ValueError, match="acceptance_target"):
        conformal_threshold(np.linspace(0, 1, 50), 1.0)


def _binomial_cdf_exact(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.3), (3, 10, 0.3), (9, 10, 0.3), (94, 100, 0.95), (40, 50, 0.9)])
def test_binomial_cdf_matches_the_exact_sum(k: int, n: int, p: float) -> None:
    assert binomial_cdf(k, n, p) == pytest.approx(_binomial_cdf_exact(k, n, p), rel=1e-9, abs=1e-12)
    assert binomial_cdf(-1, n, p) == 0.0
    assert binomial_cdf(n, n, p) == 1.0


def test_pac_threshold_is_the_smallest_order_statistic_with_the_guarantee() -> None:
    scores = np.arange(1, 201, dtype=np.float32) / 200  # 0.005 .. 1.000, sorted = themselves
    th = pac_threshold(scores, 0.9, 0.05)
    # Oracle: the smallest k with P(Bin(200, 0.9) <= k - 1) >= 0.95, by exact summation.
    k = next(k for k in range(1, 201) if _binomial_cdf_exact(k - 1, 200, 0.9) >= 0.95)
    assert th.order_statistic == k
    assert _binomial_cdf_exact(k - 2, 200, 0.9) < 0.95  # k - 1 would not do
    assert np.float32(scores[k - 1]) < np.float32(th.value) <= np.nextafter(scores[k - 1], np.float32(2))
    assert th.calibration_acceptance == k / 200
    assert (th.method, th.delta, th.acceptance_target) == ("pac", 0.05, 0.9)
    assert "probability >= 1 - delta" in th.promise
    conformal = conformal_threshold(scores, 0.9)
    assert conformal.order_statistic == math.ceil(201 * 0.9) < k  # the stricter promise costs a higher threshold
    assert conformal.method == "conformal" and conformal.delta is None


def test_pac_threshold_holds_its_promise_over_calibration_draws() -> None:
    rng = np.random.default_rng(1)
    below = 0
    draws = 400
    for _ in range(draws):
        th = pac_threshold(rng.random(300).astype(np.float32), 0.9, 0.1)
        below += th.value < 0.9  # uniform scores: the true acceptance of a threshold v is v itself
    assert below / draws <= 0.1 + 3 * math.sqrt(0.1 * 0.9 / draws)


def test_pac_threshold_refuses_what_it_cannot_promise() -> None:
    # With n scores the largest one is accepted with probability 1 - t^n: for t = 0.95, delta = 0.05, n >= 59.
    with pytest.raises(ValueError, match="need >= 59"):
        pac_threshold(np.linspace(0, 1, 58), 0.95, 0.05)
    assert pac_threshold(np.linspace(0, 1, 59), 0.95, 0.05).order_statistic == 59
    with pytest.raises(ValueError, match="delta"):
        pac_threshold(np.linspace(0, 1, 100), 0.9, 0.0)
    with pytest.raises(ValueError, match="acceptance_target"):
        pac_threshold(np.linspace(0, 1, 100), 0.0, 0.1)


def test_choose_threshold_dispatches_on_the_method() -> None:
    scores = np.random.default_rng(2).random(500).astype(np.float32)
    assert choose_threshold(scores, 0.9, "pac", 0.2) == pac_threshold(scores, 0.9, 0.2)
    assert choose_threshold(scores, 0.9, "pac", 0.2) != pac_threshold(scores, 0.9, 0.05)
    assert choose_threshold(scores, 0.9, "conformal", 0.2) == conformal_threshold(scores, 0.9)


def _exact_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The NLL-optimal T by bisection on d NLL / d log T in float64 (an oracle that shares no solver with ours)."""
    logits = logits.double()

    def slope(log_t: float) -> float:
        t = torch.tensor(log_t, dtype=torch.float64, requires_grad=True)
        torch.nn.functional.cross_entropy(logits / t.exp(), labels).backward()
        assert t.grad is not None
        return float(t.grad)

    low, high = -5.0, 5.0
    for _ in range(60):  # 10 / 2**60: far below the precision asked for
        middle = (low + high) / 2
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return math.exp((low + high) / 2)


def test_fit_temperature_reaches_the_optimum() -> None:
    g = torch.Generator().manual_seed(3)
    logits = 4.0 * torch.randn(1000, 10, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 1.7, dim=1), 1, generator=g).squeeze(1)
    exact = _exact_temperature(logits, labels)
    # LBFGS stops where the gradient is about 5e-7: T agrees to ~6e-7 relative, far finer than calibration needs.
    assert fit_temperature(logits, labels) == pytest.approx(exact, rel=1e-5)
    assert exact == pytest.approx(1.7, rel=0.05)


@pytest.mark.parametrize(
    ("n", "target", "delta"),
    [(200, 0.9, 0.05), (200, 0.9, 0.9), (200, 0.9, 0.5), (60, 0.95, 0.05), (300, 0.98, 0.05), (37, 0.5, 0.3)],
)
def test_pac_order_statistic_matches_brute_force(n: int, target: float, delta: float) -> None:
    scores = np.random.default_rng(n).random(n).astype(np.float32)
    th = pac_threshold(scores, target, delta)
    k = next(k for k in range(1, n + 1) if _binomial_cdf_exact(k - 1, n, target) >= 1 - delta)
    assert th.order_statistic == k  # the smallest order statistic that keeps the promise, from either side
    assert np.float32(th.value) == np.nextafter(np.sort(scores)[k - 1], np.float32(np.inf))
    assert th.calibration_acceptance == pytest.approx(k / n)
    assert th.calibration_samples == n and th.delta == delta and th.acceptance_target == target


@pytest.mark.parametrize(
    ("n", "target", "delta", "needed"), [(5, 0.9, 0.5, 7), (4, 0.5, 0.01, 7), (100, 0.99, 0.1, 230)]
)
def test_pac_needed_count_is_the_smallest_that_works(n: int, target: float, delta: float, needed: int) -> None:
    with pytest.raises(ValueError, match=rf"need >= {needed}$"):
        pac_threshold(np.linspace(0, 1, n), target, delta)
    assert pac_threshold(np.linspace(0, 1, needed), target, delta).order_statistic == needed
    with pytest.raises(ValueError):
        pac_threshold(np.linspace(0, 1, needed - 1), target, delta)


def test_threshold_promises_name_their_rule() -> None:
    scores = np.linspace(0, 1, 100).astype(np.float32)
    assert conformal_threshold(scores, 0.9).promise.startswith("expected acceptance")
    assert "with probability >= 1 - delta" in pac_threshold(scores, 0.9, 0.1).promise


@pytest.mark.parametrize(
    ("n", "target", "delta"), [(201, 0.9, 0.9), (200, 0.9, 0.8), (100, 0.8, 0.7), (150, 0.85, 0.95)]
)
def test_pac_search_down_lands_on_the_exact_order_statistic(n: int, target: float, delta: float) -> None:
    scores = np.random.default_rng(n).random(n).astype(np.float32)
    k = next(k for k in range(1, n + 1) if _binomial_cdf_exact(k - 1, n, target) >= 1 - delta)
    assert k < math.ceil((n + 1) * target)  # the search starts above the answer and walks down to it
    assert pac_threshold(scores, target, delta).order_statistic == k


def test_pac_edges_of_the_search() -> None:
    # n = 1: the only order statistic, kept when P(Bin(1, t) <= 0) = 1 - t reaches 1 - delta; exactly equal counts.
    assert pac_threshold(np.array([0.3]), 0.05, 0.5).order_statistic == 1
    assert pac_threshold(np.array([0.3]), 0.5, 0.5).order_statistic == 1  # binomial_cdf(0, 1, 0.5) == 0.5 exactly
    # Walking down to the first order statistic.
    assert pac_threshold(np.array([0.2, 0.7]), 0.5, 0.8).order_statistic == 1
    # Defaults: 95% with probability 95%.
    th = pac_threshold(np.linspace(0, 1, 200))
    assert (th.acceptance_target, th.delta) == (0.95, 0.05)
    with pytest.raises(
        ValueError,
        match=r"^58 calibration scores cannot guarantee 95\.0% acceptance with probability 95\.0%; need >= 59$",
    ):
        pac_threshold(np.linspace(0, 1, 58))


@pytest.mark.parametrize("bad", [1.0, 1.5, 0.0, -0.1])
def test_pac_validators(bad: float) -> None:
    with pytest.raises(ValueError, match="acceptance_target must be in"):
        pac_threshold(np.linspace(0, 1, 100), bad, 0.1)
    with pytest.raises(ValueError, match="delta must be in"):
        pac_threshold(np.linspace(0, 1, 100), 0.5, bad)


def test_conformal_needed_count_far_below_the_need() -> None:
    with pytest.raises(ValueError, match=r"need >= 19$"):
        conformal_threshold(np.linspace(0, 1, 3), 0.95)
    with pytest.raises(ValueError, match=r"need >= 9$"):
        conformal_threshold(np.linspace(0, 1, 2), 0.9)

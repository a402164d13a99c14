import numpy as np
import pytest
import torch

from training.calibrate import conformal_threshold, fit_temperature, nll


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

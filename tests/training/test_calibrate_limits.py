"""Calibration at its limits: the acceptance target's range, the smallest calibration set, the float32 threshold
one ULP above its order statistic, and temperature scaling at a known, non-trivial temperature."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.calibrate import conformal_threshold, fit_temperature, nll


@pytest.mark.parametrize("target", [0.0, -0.1, 1.0, 1.5, float(np.nextafter(1.0, 2.0))])
def test_acceptance_targets_outside_the_open_unit_interval_are_refused(target: float) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'acceptance_target must be in (0, 1), got {target}')}$"):
        conformal_threshold(np.linspace(0, 1, 100), target)


def test_acceptance_targets_just_inside_the_interval_work() -> None:
    scores = np.arange(1, 11, dtype=np.float32)
    low = conformal_threshold(scores, float(np.nextafter(0.0, 1.0)))  # j = ceil(11 * tiny) = 1
    assert low.value == float(np.nextafter(np.float32(1.0), np.float32(np.inf)))
    assert low.calibration_acceptance == 0.1
    high = conformal_threshold(np.arange(1, 1001, dtype=np.float32), 0.999)  # j = ceil(1001 * 0.999) = 1000
    assert high.value == float(np.nextafter(np.float32(1000.0), np.float32(np.inf)))
    assert high.calibration_acceptance == 1.0


def test_the_threshold_is_one_float32_ulp_above_the_order_statistic_and_accepts_it() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(199).astype(np.float32)
    th = conformal_threshold(scores, 0.9)  # j = ceil(200 * 0.9) = 180
    order_statistic = np.sort(scores)[179]
    assert th.value == float(np.nextafter(order_statistic, np.float32(np.inf)))
    assert np.float32(th.value) > order_statistic  # reject = score >= value does not reject the 180th score...
    assert np.float32(np.nextafter(np.float32(th.value), np.float32(-np.inf))) == order_statistic  # ...by one ULP
    assert th.calibration_acceptance == 180 / 199
    assert (th.acceptance_target, th.calibration_samples) == (0.9, 199)


def test_the_needed_sample_count_is_exactly_enough() -> None:
    # 0.75 needs ceil(0.75 / 0.25) = 3 samples: with 3, j = ceil(4 * 0.75) = 3 <= 3; with 2, j = 3 > 2.
    assert conformal_threshold(np.arange(3, dtype=np.float32), 0.75).calibration_acceptance == 1.0
    with pytest.raises(ValueError, match=r"^2 calibration scores cannot guarantee 75\.0% acceptance; need >= 3$"):
        conformal_threshold(np.arange(2, dtype=np.float32), 0.75)


def test_the_needed_sample_count_in_the_message_is_not_off_by_float_rounding() -> None:
    assert conformal_threshold(np.arange(9, dtype=np.float32), 0.9).calibration_acceptance == 1.0
    with pytest.raises(ValueError, match=r"need >= 9$"):
        conformal_threshold(np.arange(8, dtype=np.float32), 0.9)


@pytest.mark.parametrize("scores", [np.array([]), np.array([0.1, np.inf]), np.array([[np.nan]])])
def test_empty_or_non_finite_scores_are_refused(scores: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"^need a non-empty set of finite calibration scores$"):
        conformal_threshold(scores, 0.5)


def test_scores_are_taken_as_float32_whatever_their_dtype() -> None:
    scores = np.full(10, 0.1)  # float64 0.1 is not a float32 value
    th = conformal_threshold(scores, 0.5)
    assert th.value == float(np.nextafter(np.float32(0.1), np.float32(np.inf)))
    assert th.calibration_acceptance == 1.0


def test_nll_applies_the_temperature() -> None:
    logits = torch.tensor([[1.3, -0.4, 0.2], [0.1, 2.2, -1.0]])
    labels = torch.tensor([0, 2])
    expected = float(F.cross_entropy(logits.double() / 1.7, labels))
    assert nll(logits, labels, 1.7) == pytest.approx(expected, rel=1e-12)
    assert nll(logits, labels) == pytest.approx(float(F.cross_entropy(logits.double(), labels)), rel=1e-12)


def test_fit_temperature_finds_the_nll_minimum_below_one() -> None:
    # Over-smoothed logits (the truth is softmax(z / 0.6)) need T < 1; the fitted T is a minimum of the NLL.
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4000, 5, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 0.6, dim=1), 1, generator=g).squeeze(1)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(0.6, rel=0.1)
    best = nll(logits, labels, temperature)
    assert best < nll(logits, labels, temperature * 1.02)
    assert best < nll(logits, labels, temperature / 1.02)


def test_the_default_acceptance_target_is_95_percent() -> None:
    th = conformal_threshold(np.arange(1, 101, dtype=np.float32))
    assert th.acceptance_target == 0.95
    assert th.value == float(np.nextafter(np.float32(96.0), np.float32(np.inf)))  # j = ceil(101 * 0.95) = 96


def test_calibration_acceptance_counts_a_score_equal_to_the_threshold_as_rejected() -> None:
    # j = ceil(20 * 0.5) = 10: the threshold is one ULP above the 10th score, which is exactly the 11th score.
    # reject = score >= threshold rejects it, so 10 of 19 are accepted, not 11.
    scores = np.arange(1, 20, dtype=np.float32)
    scores[10] = np.nextafter(scores[9], np.float32(np.inf))
    th = conformal_threshold(scores, 0.5)
    assert np.float32(th.value) == scores[10]
    assert th.calibration_acceptance == 10 / 19

"""Scores and losses against plain-Python oracles (math.exp / math.log, one sample at a time), at temperatures
other than 1 with non-integer logits, and on inputs that are not 2-D (one sample [k], or [batch, steps, k]), so
that a wrong axis, a wrong temperature or a changed default shows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import outlier_exposure_loss, uniform_cross_entropy
from training.scores import ANOMALY_SCORES, kl_uniform, max_logit, msp, negative_energy

LOGITS = [[1.37, -0.42, 0.05, 2.21], [-1.9, 0.33, 0.71, -0.08], [0.0, 0.0, 0.0, 0.0]]
TEMPERATURES = [0.37, 1.0, 2.9]


def softmax_row(row: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def msp_oracle(row: list[float], temperature: float) -> float:
    return max(softmax_row(row, temperature))


def kl_uniform_oracle(row: list[float]) -> float:
    k = len(row)
    return sum((1 / k) * math.log((1 / k) / p) for p in softmax_row(row))


def energy_oracle(row: list[float], temperature: float) -> float:
    return temperature * math.log(sum(math.exp(v / temperature) for v in row))


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_msp_and_energy_match_the_oracle_at_any_temperature(temperature: float) -> None:
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    assert msp(logits, temperature).tolist() == pytest.approx([msp_oracle(r, temperature) for r in LOGITS], rel=1e-12)
    assert negative_energy(logits, temperature).tolist() == pytest.approx(
        [energy_oracle(r, temperature) for r in LOGITS], rel=1e-12
    )


def test_the_defaults_are_temperature_one() -> None:
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    assert msp(logits).tolist() == pytest.approx([msp_oracle(r, 1.0) for r in LOGITS], rel=1e-12)
    assert negative_energy(logits).tolist() == pytest.approx([energy_oracle(r, 1.0) for r in LOGITS], rel=1e-12)


def test_kl_uniform_and_max_logit_match_the_oracle() -> None:
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    assert kl_uniform(logits).tolist() == pytest.approx([kl_uniform_oracle(r) for r in LOGITS], rel=1e-12, abs=1e-15)
    assert max_logit(logits).tolist() == [2.21, 0.71, 0.0]


def test_anomaly_scores_are_the_negated_confidences() -> None:
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    expected = {
        "msp": [-msp_oracle(r, 1.0) for r in LOGITS],
        "kl_uniform": [-kl_uniform_oracle(r) for r in LOGITS],
        "max_logit": [-max(r) for r in LOGITS],
        "energy": [-energy_oracle(r, 1.0) for r in LOGITS],
    }
    assert sorted(ANOMALY_SCORES) == sorted(expected)
    for name, score in ANOMALY_SCORES.items():
        assert score(logits).tolist() == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize("temperature", [0.5, 1.7])
def test_scores_reduce_over_the_last_axis_whatever_the_rank(temperature: float) -> None:
    batched = torch.tensor(LOGITS, dtype=torch.float64)
    steps = batched.reshape(1, 3, 4)  # [batch, steps, k]: the class axis is last, not 1
    for row, single in zip(LOGITS, batched, strict=True):  # one sample, [k]
        assert msp(single, temperature).item() == pytest.approx(msp_oracle(row, temperature), rel=1e-12)
        assert negative_energy(single, temperature).item() == pytest.approx(energy_oracle(row, temperature), rel=1e-12)
        assert kl_uniform(single).item() == pytest.approx(kl_uniform_oracle(row), rel=1e-12, abs=1e-15)
        assert max_logit(single).item() == max(row)
    assert msp(steps, temperature).shape == (1, 3)
    assert msp(steps, temperature)[0].tolist() == pytest.approx([msp_oracle(r, temperature) for r in LOGITS])
    assert negative_energy(steps, temperature)[0].tolist() == pytest.approx(
        [energy_oracle(r, temperature) for r in LOGITS]
    )
    assert kl_uniform(steps)[0].tolist() == pytest.approx([kl_uniform_oracle(r) for r in LOGITS], abs=1e-12)
    assert max_logit(steps)[0].tolist() == [2.21, 0.71, 0.0]


def test_uniform_cross_entropy_matches_the_oracle_row_by_row() -> None:
    # logsumexp(z) - mean(z) per row, then the mean over rows.
    expected = sum(math.log(sum(math.exp(v) for v in r)) - sum(r) / len(r) for r in LOGITS) / len(LOGITS)
    assert uniform_cross_entropy(torch.tensor(LOGITS, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_the_oe_weight_defaults_to_one_half() -> None:
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    targets = torch.tensor([0])
    cross_entropy = F.cross_entropy(logits[:1], targets).item()
    oe_term = uniform_cross_entropy(logits[1:]).item()
    assert oe_term > 0.1  # the weight matters
    assert outlier_exposure_loss(logits, targets).item() == pytest.approx(cross_entropy + 0.5 * oe_term, rel=1e-12)
    assert outlier_exposure_loss(logits, targets, 2.0).item() == pytest.approx(cross_entropy + 2.0 * oe_term, rel=1e-12)

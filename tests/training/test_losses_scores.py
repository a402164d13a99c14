import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import outlier_exposure_loss, uniform_cross_entropy
from training.scores import (
    ANOMALY_SCORES,
    anomaly_score_from_kl,
    kl_uniform,
    max_logit,
    msp,
    negative_energy,
    rescaled_confidence,
)


def test_kl_uniform_known_values() -> None:
    flat = torch.zeros(1, 10)
    assert kl_uniform(flat).item() == pytest.approx(0.0, abs=1e-6)  # float32 rounding of log(10)
    p = torch.tensor([[0.5, 0.25, 0.25]])
    expected = -math.log(3) - (math.log(0.5) + 2 * math.log(0.25)) / 3
    assert kl_uniform(p.log()).item() == pytest.approx(expected, rel=1e-6)
    # Invariant to adding a constant to every logit, and finite for huge logits.
    assert kl_uniform(p.log() + 100).item() == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(kl_uniform(torch.tensor([[1e4, 0.0, 0.0]])).item())


def test_anomaly_score_is_monotone_decreasing_in_kl_and_one_when_flat() -> None:
    kl = torch.tensor([0.0, 0.5, 3.0, 20.0])
    score = anomaly_score_from_kl(kl)
    assert score.tolist() == pytest.approx([1.0, 1 / 1.5, 0.25, 1 / 21])
    assert torch.all(score[1:] < score[:-1])


def test_msp_max_logit_energy_and_rescaling() -> None:
    z = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    expected_msp = math.exp(2) / (math.exp(2) + 3)
    assert msp(z).item() == pytest.approx(expected_msp)
    assert msp(z, temperature=2.0).item() == pytest.approx(math.e / (math.e + 3))
    assert max_logit(z).item() == 2.0
    assert negative_energy(z).item() == pytest.approx(math.log(math.exp(2) + 3))
    assert rescaled_confidence(torch.tensor([0.25, 1.0, 0.625]), 4).tolist() == pytest.approx([0.0, 1.0, 0.5])


def test_anomaly_scores_rank_flat_above_confident() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0]])
    for name, score in ANOMALY_SCORES.items():
        flat, confident = score(logits).tolist()
        assert flat > confident, name


def test_uniform_cross_entropy_is_kl_plus_log_k() -> None:
    z = torch.randn(7, 10, generator=torch.Generator().manual_seed(0))
    assert uniform_cross_entropy(z).item() == pytest.approx((kl_uniform(z) + math.log(10)).mean().item(), rel=1e-6)


def test_oe_loss_matches_the_reference_expression() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 10, generator=g)
    targets = torch.tensor([3, 1])
    # Reference: loss = CE(x[:n], y) + 0.5 * -(x[n:].mean(1) - logsumexp(x[n:], 1)).mean()
    reference = (
        F.cross_entropy(logits[:2], targets) + 0.5 * -(logits[2:].mean(1) - torch.logsumexp(logits[2:], dim=1)).mean()
    )
    assert outlier_exposure_loss(logits, targets, 0.5).item() == pytest.approx(reference.item(), rel=1e-6)
    # A single outlier row still adds its term.
    one = F.cross_entropy(logits[:2], targets) + 0.5 * uniform_cross_entropy(logits[2:3])
    assert outlier_exposure_loss(logits[:3], targets, 0.5).item() == pytest.approx(one.item(), rel=1e-6)
    # Without an out batch it is plain cross-entropy.
    assert outlier_exposure_loss(logits[:2], targets).item() == pytest.approx(
        F.cross_entropy(logits[:2], targets).item()
    )


def test_oe_term_gradient_vanishes_on_a_flat_posterior() -> None:
    out = torch.zeros(4, 10, requires_grad=True)
    uniform_cross_entropy(out).backward()
    assert out.grad is not None
    assert torch.allclose(out.grad, torch.zeros_like(out.grad), atol=1e-7)

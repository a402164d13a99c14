"""Fixtures for end-to-end tests on the committed MNIST artifacts and real MNIST digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.server import REPO
from training.data.base import InDistribution
from training.data.registry import load_anomalies, load_in_distribution
from training.image.anomalies import rendered_sets


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The committed `models/` (OEGATE_TEST_MODELS_DIR may point elsewhere while developing)."""
    return Path(os.environ.get("OEGATE_TEST_MODELS_DIR", REPO / "models"))


@pytest.fixture(scope="session")
def mnist_oe_dir(models_dir: Path) -> Path:
    """The newest committed mnist-oe version: the one the service serves by default."""
    versions = [int(p.name) for p in (models_dir / "mnist-oe").iterdir() if p.name.isdigit()]
    directory = models_dir / "mnist-oe" / str(max(versions, default=0))
    # The artifact is committed: its absence is a broken checkout, not a reason to skip.
    assert (directory / "card.json").is_file(), f"{directory} is missing: the committed MNIST OE artifact is needed"
    return directory


@pytest.fixture(scope="session")
def mnist() -> InDistribution:
    return load_in_distribution("mnist")


@pytest.fixture(scope="session")
def mnist_test(mnist: InDistribution) -> tuple[np.ndarray, np.ndarray]:
    """The first 200 MNIST test digits as uint8 [N, 28, 28] and their labels."""
    assert mnist.test.labels is not None
    return mnist.test.images[:200, 0], mnist.test.labels[:200]


@pytest.fixture(scope="session")
def letters(mnist: InDistribution) -> np.ndarray:
    """100 glyphs of the notMNIST analogue (letters A-J from the fonts-aenigma fonts) as uint8 [N, 28, 28]."""
    if not rendered_sets.AENIGMA_DIR.is_dir():
        pytest.skip("needs the Debian package fonts-aenigma (`make apt-data` as root)")
    return load_anomalies("notmnist", mnist, n=100, seed=0)[:, 0]


def gaussian_noise(seed: int) -> np.ndarray:
    """clip(N(0.5, 0.5^2), 0, 1) per pixel (the paper's Gaussian anomalies), as uint8 [28, 28]."""
    noise = np.clip(np.random.default_rng(seed).normal(0.5, 0.5, (28, 28)), 0, 1)
    return np.rint(noise * 255).astype(np.uint8)

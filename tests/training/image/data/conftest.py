"""Fixtures for the data tests: a private data cache and a shared MNIST load."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.base import ImageSet, InDistribution
from training.data.cache import CACHE_ENV_VAR
from training.image.mnist import load_mnist


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session, so rendered sets are rendered once."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(autouse=True)
def private_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test reads and writes the session's private cache, never the repository's data-cache/."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(session_cache))
    yield session_cache


@pytest.fixture(scope="session")
def mnist() -> InDistribution:
    return load_mnist()


def _tiny_reference(shape: tuple[int, int, int], n_test: int = 12) -> InDistribution:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8)
    split = ImageSet(images, np.arange(n_test) % 2)
    return InDistribution("tiny", ("a", "b"), split, split, split, "tiny test set")


@pytest.fixture
def make_reference() -> Callable[..., InDistribution]:
    """make_reference(shape, n_test=12): a small in-distribution set with random uint8 images of `shape`."""
    return _tiny_reference


def _write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image if mode is None else image.convert(mode)).save(path)
    return path


@pytest.fixture
def write_png() -> Callable[..., Path]:
    """write_png(path, array, mode=None): save an HxW or HxWxC uint8 array as an image file, creating folders."""
    return _write_png

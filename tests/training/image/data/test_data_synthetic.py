"""Synthetic anomalies: the reference's definitions, shapes, ranges and seeding."""

from __future__ import annotations

import zlib
from math import erf, sqrt

import numpy as np
import pytest

from training.data.base import DataError
from training.image.anomalies.synthetic import (
    NOISE_GENERATORS,
    bernoulli_noise,
    blobs,
    gaussian_blur,
    gaussian_kernel,
    gaussian_noise,
    negative_images,
    rademacher_noise,
)

SHAPE = (1, 28, 28)


@pytest.mark.parametrize("name", sorted(NOISE_GENERATORS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shape_range_and_seeding(name: str, shape: tuple[int, int, int]) -> None:
    generate = NOISE_GENERATORS[name]
    images = generate(shape, 16, 5)
    assert images.shape == (16, *shape) and images.dtype == np.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert np.array_equal(images, generate(shape, 16, 5))
    assert not np.array_equal(images, generate(shape, 16, 6))


def test_gaussian_is_clipped_normal_half_half() -> None:
    images = gaussian_noise(SHAPE, 400, 0)
    below = 0.5 * (1 + erf((0 - 0.5) / (0.5 * sqrt(2))))  # P(N(0.5, 0.5^2) < 0) = Phi(-1) = 0.1587
    assert abs(float((images == 0).mean()) - below) < 0.005
    assert abs(float((images == 1).mean()) - below) < 0.005
    assert abs(float(images.mean()) - 0.5) < 0.005


def test_bernoulli_and_rademacher_are_fair_coins_on_different_streams() -> None:
    bernoulli, rademacher = bernoulli_noise(SHAPE, 400, 0), rademacher_noise(SHAPE, 400, 0)
    for images in (bernoulli, rademacher):
        assert set(np.unique(images).tolist()) == {0.0, 1.0}
        assert abs(float(images.mean()) - 0.5) < 0.005  # 313,600 pixels: standard error 0.0009
    assert 0.45 < float((bernoulli == rademacher).mean()) < 0.55  # independent, not the same samples


def test_blobs_are_the_reference_recipe_built_with_scipy() -> None:
    """Independent oracle: the paper's recipe (Bernoulli(0.7), Gaussian blur of sigma 1.5 over all three image axes
    with mode "nearest" and truncate 4, values < 0.75 zeroed) built with scipy.ndimage on the same random field."""
    ndimage = pytest.importorskip("scipy.ndimage")
    for shape, n in ((SHAPE, 20), ((3, 32, 32), 10)):
        field = np.random.default_rng([0, zlib.crc32(b"blobs")]).random(size=(n, *shape)) < 0.7
        expected = np.stack(
            [ndimage.gaussian_filter(f.astype(np.float64), sigma=1.5, mode="nearest", truncate=4.0) for f in field]
        )
        expected[expected < 0.75] = 0.0
        images = blobs(shape, n, 0)
        assert images.dtype == np.float32 and images.shape == (n, *shape)
        np.testing.assert_allclose(images, np.clip(expected, 0.0, 1.0).astype(np.float32), rtol=0, atol=1e-6)
        density = float((images > 0).mean())
        assert 0.1 < density < 0.5  # sparse bright blobs, not noise and not empty


def test_kernel_and_blur_match_scipy() -> None:
    kernel = gaussian_kernel(1.5)
    assert len(kernel) == 13 and abs(float(kernel.sum()) - 1.0) < 1e-12  # radius int(4 * 1.5 + 0.5) = 6
    ndimage = pytest.importorskip("scipy.ndimage")
    field = np.random.default_rng(0).random((2, 3, 9, 11))
    ours = gaussian_blur(field, 1.5, axes=(1, 2, 3))
    for i in range(2):
        reference = ndimage.gaussian_filter(field[i], sigma=1.5, mode="nearest", truncate=4.0)
        assert np.allclose(ours[i], reference, atol=1e-12)


def test_negative_images_are_one_minus_x() -> None:
    test = np.random.default_rng(1).integers(0, 256, (20, 1, 4, 4), dtype=np.uint8)
    negatives = negative_images(test, 20, seed=0)
    assert negatives.dtype == np.float32
    assert np.allclose(negatives, 1.0 - test.astype(np.float32) / 255.0)
    assert negative_images(test, 5, seed=3).shape == (5, 1, 4, 4)
    with pytest.raises(DataError, match="asked for 21 samples but only 20 exist"):
        negative_images(test, 21, seed=0)

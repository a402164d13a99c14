"""Synthetic test anomalies of Outlier Exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019, Section 4.2).

Definitions follow the paper's reference code (github.com/hendrycks/outlier-exposure, `MNIST/test.py`,
`SVHN/test.py`, `CIFAR/test.py`) for images in [0, 1]; every generator returns float32 NCHW in [0, 1]:

- gaussian:   x = clip(N(mu = 0.5, sigma = 0.5), 0, 1) per pixel                        (MNIST/SVHN test.py)
- bernoulli:  x ~ Bernoulli(0.5) per pixel, values {0, 1}                              (MNIST/SVHN test.py)
- rademacher: r ~ Rademacher = 2 Bernoulli(0.5) - 1 in the normalized [-1, 1] input space of CIFAR/test.py
              (mean = std = 0.5); in pixel space that is x = (r + 1) / 2 in {0, 1}. So in [0, 1] pixels the
              reference's Rademacher noise has the *same law* as Bernoulli(0.5). It stays registered (own
              random stream) for CIFAR-style tables, but it is not in the default evaluation list: next to
              bernoulli it would count one distribution twice in the mean (the paper's MNIST table has no
              Rademacher row either).
- blobs:      b ~ Bernoulli(0.7) per pixel, blurred by a Gaussian of sigma 1.5 over all three image axes (the
              reference calls skimage's `gaussian(HWC, sigma=1.5, multichannel=False)`: mode "nearest",
              truncate 4), then values < 0.75 set to 0                                 (SVHN/CIFAR test.py)
- negative:   1 - x for in-distribution test images x                                 (MNIST test.py)

Each set has its own stream, seeded by (seed, crc32(name)), so equal seeds give equal sets and different names
give independent ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from training.data.base import as_float
from training.data.splits import draw

Shape = tuple[int, int, int]
BLOB_DENSITY = 0.7
BLOB_SIGMA = 1.5
BLOB_THRESHOLD = 0.75
TRUNCATE = 4.0


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def gaussian_noise(shape: Shape, n: int, seed: int) -> np.ndarray:
    """x = clip(N(0.5, 0.5^2), 0, 1) per pixel; float32 [n, C, H, W]."""
    noise = _rng("gaussian", seed).normal(loc=0.5, scale=0.5, size=(n, *shape))
    return np.clip(noise, 0.0, 1.0).astype(np.float32)


def bernoulli_noise(shape: Shape, n: int, seed: int) -> np.ndarray:
    """x ~ Bernoulli(0.5) per pixel, in {0, 1}; float32 [n, C, H, W]."""
    return (_rng("bernoulli", seed).random(size=(n, *shape)) < 0.5).astype(np.float32)


def rademacher_noise(shape: Shape, n: int, seed: int) -> np.ndarray:
    """x = (r + 1) / 2 with r ~ Rademacher in {-1, +1} per pixel (same law as Bernoulli(0.5), own stream)."""
    signs = _rng("rademacher", seed).choice(np.array([-1.0, 1.0]), size=(n, *shape))
    return ((signs + 1.0) / 2.0).astype(np.float32)


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """Normalized 1-d kernel exp(-t^2 / (2 sigma^2)) for |t| <= radius = int(truncate sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: np.ndarray, sigma: float, axes: tuple[int, ...]) -> np.ndarray:
    """Separable Gaussian blur along `axes`, edges extended ("nearest"), float64 out.

    Equals `scipy.ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=4)` on those axes.
    """
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    out = images.astype(np.float64)
    for axis in axes:
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        length = out.shape[axis]
        out = sum(
            (
                weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
                for offset, weight in enumerate(kernel)
            ),
            start=np.zeros_like(out),
        )
    return out


def blobs(shape: Shape, n: int, seed: int) -> np.ndarray:
    """Blurred Bernoulli(0.7) fields with values < 0.75 zeroed (sparse bright blobs); float32 [n, C, H, W]."""
    field = (_rng("blobs", seed).random(size=(n, *shape)) < BLOB_DENSITY).astype(np.float64)
    blurred = gaussian_blur(field, BLOB_SIGMA, axes=(1, 2, 3))
    blurred[blurred < BLOB_THRESHOLD] = 0.0
    return np.clip(blurred, 0.0, 1.0).astype(np.float32)


def negative_images(test_images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """1 - x for n test images x drawn without replacement (seeded); float32 [n, C, H, W]."""
    chosen = draw(n, len(test_images), seed, "negative images")
    return (1.0 - as_float(test_images[np.sort(chosen)])).astype(np.float32)


NOISE_GENERATORS: dict[str, Callable[[Shape, int, int], np.ndarray]] = {
    "gaussian": gaussian_noise,
    "rademacher": rademacher_noise,
    "bernoulli": bernoulli_noise,
    "blobs": blobs,
}

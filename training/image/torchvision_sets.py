"""torchvision data sets already on disk (`torchvision:NAME:ROOT`). Nothing is ever downloaded.

The five sets below are read straight from torchvision's on-disk layouts (the same files, the same bytes), so
they work whether or not torchvision is installed:

| NAME | files |
|---|---|
| MNIST, FashionMNIST, KMNIST | `ROOT/NAME/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` |
| CIFAR10 | `ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}` |
| CIFAR100 | `ROOT/cifar-100-python/{train, test, meta}` (fine labels) |

Any other NAME is handed to `torchvision.datasets.NAME(ROOT, train=..., download=False)` when torchvision is
importable (its `.data` and `.targets` are used). Validation is a stratified `val_fraction` of train.
The CIFAR files are pickles: only point ROOT at files you trust.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from training.data.base import DataError, ImageSet, InDistribution
from training.data.splits import carve
from training.image.convert import check_pixels, to_nchw
from training.image.idx import read_idx

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_CLASSES = {
    "MNIST": tuple(str(digit) for digit in range(10)),
    "FashionMNIST": FASHION_CLASSES,
    "KMNIST": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}
CIFAR_LAYOUTS = {
    # name: (folder, train files, test files, meta file, label key, class-name key)
    "CIFAR10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "CIFAR100": ("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}
TORCHVISION_NAMES = (*IDX_CLASSES, *CIFAR_LAYOUTS)


def _idx_file(raw: Path, stem: str) -> Path:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{raw / stem}[.gz] not found (torchvision layout; this loader never downloads)")


def _load_idx_set(name: str, root: Path) -> tuple[ImageSet, ImageSet]:
    raw = root / name / "raw"
    sets = []
    for prefix in ("train", "t10k"):
        images = read_idx(_idx_file(raw, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(raw, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{raw}: {prefix} images {images.shape} do not match labels {labels.shape}")
        sets.append(ImageSet(images[:, None], labels))
    return sets[0], sets[1]


def _unpickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} not found (torchvision layout; this loader never downloads)")
    with path.open("rb") as stream:
        entry = pickle.load(stream, encoding="latin1")
    # Files pickled by Python 2 load with str keys under latin1; be lenient about bytes keys too.
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}


def _load_cifar(name: str, root: Path) -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    folder, train_files, test_files, meta_file, label_key, names_key = CIFAR_LAYOUTS[name]
    base = root / folder

    def read(files: tuple[str, ...]) -> ImageSet:
        entries = [_unpickle(base / file) for file in files]
        try:
            data = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
            labels = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
        except KeyError as error:
            raise DataError(f"{base}: batch files lack the key {error}") from error
        return ImageSet(data.reshape(-1, 3, 32, 32), labels)

    class_names = tuple(str(n) for n in _unpickle(base / meta_file)[names_key])
    return read(train_files), read(test_files), class_names


def _load_with_torchvision(name: str, root: Path) -> tuple[ImageSet, ImageSet, tuple[str, ...]]:
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except ImportError as error:
        raise DataError(
            f"torchvision data set '{name}' is not one this loader reads itself ({', '.join(TORCHVISION_NAMES)}) "
            "and torchvision is not installed"
        ) from error
    factory = getattr(datasets, name, None)
    if factory is None:
        raise DataError(f"torchvision.datasets has no data set '{name}'")
    sets = []
    num_labels = 0
    for train in (True, False):
        try:
            dataset = factory(str(root), train=train, download=False)
        except (RuntimeError, OSError, TypeError) as error:
            raise DataError(f"torchvision.datasets.{name}({root}) failed: {error}") from error
        images = check_pixels(to_nchw(np.asarray(dataset.data), f"{name}.data"), f"{name}.data")
        labels = np.asarray(dataset.targets, dtype=np.int64)
        sets.append(ImageSet(images, labels))
        num_labels = max(num_labels, 1 + int(labels.max()) if len(labels) else 0)
    classes = getattr(dataset, "classes", None) or range(num_labels)
    return sets[0], sets[1], tuple(str(c) for c in classes)


def load_torchvision(name: str, root: Path, *, seed: int = 0, val_fraction: float = 0.1) -> InDistribution:
    """A torchvision data set from ROOT (layouts in the module doc); val is carved from train."""
    if name in IDX_CLASSES:
        train, test = _load_idx_set(name, root)
        class_names = IDX_CLASSES[name]
    elif name in CIFAR_LAYOUTS:
        train, test, class_names = _load_cifar(name, root)
    else:
        train, test, class_names = _load_with_torchvision(name, root)
    train, val = carve(train, val_fraction, seed, f"{name}: validation from train")
    return InDistribution(
        name=name.lower(),
        class_names=class_names,
        train=train,
        val=val,
        test=test,
        description=f"torchvision {name} from {root}, val = {val_fraction:g} of train (seed {seed})",
    )

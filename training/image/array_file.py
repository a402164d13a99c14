"""In-distribution sets stored as NumPy arrays (`npz:PATH` or `npy:PATH`).

PATH is either an `.npz` file or a directory of `.npy` files, with these keys (file stems for a directory):

| key | content | required |
|---|---|---|
| `x_train`, `y_train` | images and int labels of the training split | yes |
| `x_val`, `y_val` | validation split; when absent, a stratified `val_fraction` of train is carved off | no |
| `x_test`, `y_test` | test split | yes |
| `class_names` | one string per class; default "0", "1", ... | no |

Images may be NHW, NHWC or NCHW (C = 1 or 3), uint8 in [0, 255] (other integer types are accepted in that
range) or float in [0, 1] (kept as float32). Labels are integers in [0, k); all splits must share one image shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.base import DataError, ImageSet, InDistribution
from training.data.splits import carve
from training.image.convert import check_pixels, to_nchw

SPLITS = ("train", "val", "test")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        return {file.stem: np.load(file, allow_pickle=False) for file in sorted(path.glob("*.npy"))}
    if not path.is_file():
        raise DataError(f"array data set {path} does not exist (expected an .npz file or a directory of .npy)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if isinstance(loaded, np.ndarray):
        raise DataError(f"{path} holds a single array; an in-distribution set needs x_train, y_train, ...")
    with loaded as npz:
        return {name: npz[name] for name in npz.files}


def _split(arrays: dict[str, np.ndarray], split: str, source: Path) -> ImageSet:
    x_key, y_key = f"x_{split}", f"y_{split}"
    if y_key not in arrays:
        raise DataError(f"{source}: '{x_key}' has no matching '{y_key}'")
    images = check_pixels(to_nchw(arrays[x_key], f"{source}:{x_key}"), f"{source}:{x_key}")
    labels = arrays[y_key]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{source}:{y_key}: labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{source}: {x_key} has {len(images)} images but {y_key} has {len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{source}:{y_key}: labels must be >= 0, got {labels.min()}")
    return ImageSet(images, labels.astype(np.int64))


def load_array_file(path: Path, *, seed: int = 0, val_fraction: float = 0.1) -> InDistribution:
    """Load an in-distribution set from an `.npz` file or a directory of `.npy` files (keys in the module doc)."""
    arrays = _read_arrays(path)
    missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; found {sorted(arrays) or 'none'}")
    train = _split(arrays, "train", path)
    test = _split(arrays, "test", path)
    if "x_val" in arrays:
        val = _split(arrays, "val", path)
    else:
        train, val = carve(train, val_fraction, seed, f"{path}: validation from x_train")
    shapes = {split: s.images.shape[1:] for split, s in zip(SPLITS, (train, val, test), strict=True)}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}")
    dtypes = {split: str(s.images.dtype) for split, s in zip(SPLITS, (train, val, test), strict=True)}
    if len(set(dtypes.values())) != 1:
        raise DataError(f"{path}: splits have different pixel types {dtypes}")
    num_classes = 1 + max(int(s.labels.max()) for s in (train, val, test) if s.labels is not None and len(s))
    if "class_names" in arrays:
        class_names = tuple(str(name) for name in arrays["class_names"].tolist())
        if len(class_names) < num_classes:
            raise DataError(f"{path}: {len(class_names)} class_names but labels go up to {num_classes - 1}")
    else:
        class_names = tuple(str(label) for label in range(num_classes))
    return InDistribution(
        name=path.stem,
        class_names=class_names,
        train=train,
        val=val,
        test=test,
        description=f"arrays from {path}",
    )

"""Folders of image files: the torchvision ImageFolder layout, and plain recursive folders.

ImageFolder layout (`imagefolder:PATH`): `PATH/<class>/*.png|jpg|...`, classes sorted by name as torchvision does.
Optionally split: `PATH/train/<class>/...` plus `PATH/val/...` and/or `PATH/test/...`; a missing val or test
split is carved from train (stratified, `val_fraction` of train). Without split folders, val and test each get
a stratified `val_fraction` of all images.

Mode and size policy, so that every image ends in one array:
- channels: grayscale ("L") if every image is grayscale (by its mode, or a gray palette), else RGB;
- transparency is composited onto black (the background of MNIST-like data);
- size: the most common (width, height) wins (ties: the larger area); other images are resized to it with
  PIL's antialiased bilinear filter, aspect ratio not kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data.base import DataError, ImageSet, InDistribution
from training.data.splits import carve
from training.image.convert import flatten_alpha, image_to_chw, is_gray

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_NAMES = ("train", "val", "test")


def list_images(root: Path, *, recursive: bool = True) -> list[Path]:
    """Image files under `root` (by suffix, case-insensitive), sorted for a reproducible order."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_images(paths: Sequence[Path], what: str) -> np.ndarray:
    """Decode `paths` into one uint8 NCHW array, with the mode and size policy of the module doc."""
    if not paths:
        raise DataError(f"{what}: no image files found")
    headers: list[tuple[bool, tuple[int, int]]] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                headers.append((is_gray(image), image.size))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{what}: cannot read image {path}: {error}") from error
    mode = "L" if all(gray for gray, _ in headers) else "RGB"
    sizes = Counter(size for _, size in headers)
    width, height = max(sizes, key=lambda size: (sizes[size], size[0] * size[1]))
    out = np.empty((len(paths), 1 if mode == "L" else 3, height, width), dtype=np.uint8)
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            flat = flatten_alpha(image, background=0).convert(mode)
        if flat.size != (width, height):
            flat = flat.resize((width, height), Image.Resampling.BILINEAR)
        out[index] = image_to_chw(flat)
    return out


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    return {folder.name: list_images(folder) for folder in classes}


def _split_set(root: Path, class_names: tuple[str, ...], what: str) -> tuple[list[Path], np.ndarray]:
    files = _class_files(root)
    unknown = sorted(set(files) - set(class_names))
    if unknown:
        raise DataError(f"{what}: classes {unknown} are not in the training classes {list(class_names)}")
    paths = [path for name in class_names for path in files.get(name, [])]
    labels = [label for label, name in enumerate(class_names) for _ in files.get(name, [])]
    return paths, np.asarray(labels, dtype=np.int64)


def load_image_folder(root: Path, *, seed: int = 0, val_fraction: float = 0.1) -> InDistribution:
    """An in-distribution set from an ImageFolder tree (layout and policies in the module doc)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    split_dirs = {name: root / name for name in SPLIT_NAMES if (root / name).is_dir()}
    base = split_dirs.get("train", root)
    class_names = tuple(name for name, files in _class_files(base).items() if files)
    if not class_names:
        raise DataError(f"{base}: no class folders with images (expected {base}/<class>/*.png)")
    if split_dirs and "train" not in split_dirs:
        raise DataError(f"{root}: has {sorted(split_dirs)} folders but no train/")
    parts = {"train": _split_set(base, class_names, f"{base}")}
    for name in ("val", "test"):
        if name in split_dirs:
            parts[name] = _split_set(split_dirs[name], class_names, f"{split_dirs[name]}")
    all_paths = [path for paths, _ in parts.values() for path in paths]
    images = read_images(all_paths, f"image folder {root}")
    sets: dict[str, ImageSet] = {}
    start = 0
    for name, (paths, labels) in parts.items():
        sets[name] = ImageSet(images[start : start + len(paths)], labels)
        start += len(paths)
    val_share = val_fraction
    if "test" not in sets:
        sets["train"], sets["test"] = carve(sets["train"], val_fraction, seed, f"{root}: test from train")
        val_share = val_fraction / (1.0 - val_fraction)  # so that val, too, is val_fraction of all images
    if "val" not in sets:
        sets["train"], sets["val"] = carve(sets["train"], val_share, seed + 1, f"{root}: val from train")
    return InDistribution(
        name=root.name,
        class_names=class_names,
        train=sets["train"],
        val=sets["val"],
        test=sets["test"],
        description=f"image folder {root}",
    )

"""ImageFolder trees: classes, splits, and the mode/size policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from training.data.base import DataError
from training.data.registry import load_in_distribution

WritePng = Callable[..., Path]


def _gray(value: int, size: tuple[int, int] = (8, 6)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


def test_flat_tree_is_gray_and_split_three_ways(tmp_path: Path, write_png: WritePng) -> None:
    for label, name in enumerate(["zebra", "ant"]):
        for i in range(10):
            write_png(tmp_path / name / f"{i}.png", _gray(10 * i + label))
    write_png(tmp_path / "ant" / "big.png", _gray(200, (16, 12)))  # resized to the common 8 x 6
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    data = load_in_distribution(f"imagefolder:{tmp_path}", val_fraction=0.2, seed=0)
    assert data.class_names == ("ant", "zebra")  # sorted, as torchvision does
    assert data.shape == (1, 8, 6)
    assert data.train.images.dtype == np.uint8
    sizes = (len(data.train), len(data.val), len(data.test))
    assert sum(sizes) == 21
    assert sizes == (13, 4, 4)  # 20% of each class (11 ants, 10 zebras) to test, then to val
    every = np.concatenate([data.train.images, data.val.images, data.test.images])
    assert sorted(int(v) for v in every[:, 0, 0, 0]) == sorted([*range(1, 100, 10), *range(0, 100, 10), 200])


def test_color_image_makes_the_set_rgb_and_alpha_goes_to_black(tmp_path: Path, write_png: WritePng) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent
    write_png(tmp_path / "a" / "0.png", rgba)
    write_png(tmp_path / "b" / "0.png", np.full((4, 4, 3), (0, 255, 0), dtype=np.uint8))
    for name, values in (("a", (50, 60)), ("b", (90, 100))):
        for value in values:
            write_png(tmp_path / name / f"{value}.png", _gray(value, (4, 4)))
    data = load_in_distribution(f"imagefolder:{tmp_path}", val_fraction=1 / 3)
    assert data.shape == (3, 4, 4)
    assert (len(data.train), len(data.val), len(data.test)) == (2, 2, 2)
    every = np.concatenate([data.train.images, data.val.images, data.test.images])
    firsts = {tuple(int(c) for c in image[:, 0, 0]) for image in every}
    assert firsts == {(0, 0, 0), (50, 50, 50), (60, 60, 60), (0, 255, 0), (90, 90, 90), (100, 100, 100)}


def test_split_folders(tmp_path: Path, write_png: WritePng) -> None:
    for split, count in (("train", 6), ("test", 2)):
        for name in ("x", "y"):
            for i in range(count):
                write_png(tmp_path / split / name / f"{i}.png", _gray(i))
    data = load_in_distribution(f"imagefolder:{tmp_path}", val_fraction=1 / 3)
    assert data.class_names == ("x", "y")
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 4)
    assert data.test.labels is not None and data.test.labels.tolist() == [0, 0, 1, 1]


def test_folder_errors(tmp_path: Path, write_png: WritePng) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_in_distribution(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders with images"):
        load_in_distribution(f"imagefolder:{tmp_path / 'empty'}")
    write_png(tmp_path / "s" / "train" / "x" / "0.png", _gray(1))
    write_png(tmp_path / "s" / "test" / "q" / "0.png", _gray(1))
    with pytest.raises(DataError, match=r"classes \['q'\] are not in the training classes \['x'\]"):
        load_in_distribution(f"imagefolder:{tmp_path / 's'}")
    (tmp_path / "broken" / "x").mkdir(parents=True)
    (tmp_path / "broken" / "x" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_in_distribution(f"imagefolder:{tmp_path / 'broken'}")

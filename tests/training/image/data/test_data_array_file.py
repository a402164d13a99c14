"""In-distribution sets from .npz files and .npy directories: layouts, carving, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data.base import DataError
from training.data.registry import load_in_distribution

RNG = np.random.default_rng(7)
NCHW = RNG.integers(0, 256, size=(40, 1, 6, 5), dtype=np.uint8)
LABELS = np.arange(40) % 4


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("layout", "stored"),
    [("NCHW", NCHW), ("NHWC", NCHW.transpose(0, 2, 3, 1)), ("NHW", NCHW[:, 0])],
)
def test_layouts_round_trip(tmp_path: Path, layout: str, stored: np.ndarray) -> None:
    path = _save(tmp_path / f"{layout}.npz", x_train=stored, y_train=LABELS, x_test=stored[:8], y_test=LABELS[:8])
    data = load_in_distribution(f"npz:{path}", val_fraction=0.25, seed=0)
    assert data.shape == (1, 6, 5)
    assert data.class_names == ("0", "1", "2", "3")
    # 10 per class in train; a stratified quarter goes to val: round(2.5) = 2 per class (banker's rounding).
    assert (len(data.train), len(data.val), len(data.test)) == (32, 8, 8)
    assert np.array_equal(data.test.images, NCHW[:8])
    seen = np.concatenate([data.train.images, data.val.images])
    assert np.array_equal(np.sort(seen.reshape(40, -1), axis=0), np.sort(NCHW.reshape(40, -1), axis=0))


def test_rgb_nhwc_float_and_explicit_val(tmp_path: Path) -> None:
    rgb = RNG.random((12, 4, 4, 3)).astype(np.float64)
    path = _save(
        tmp_path / "rgb.npz",
        x_train=rgb,
        y_train=np.arange(12) % 3,
        x_val=rgb[:3],
        y_val=np.arange(3),
        x_test=rgb[:6],
        y_test=np.arange(6) % 3,
        class_names=np.array(["cat", "dog", "eel"]),
    )
    data = load_in_distribution(f"npy:{path}")
    assert data.shape == (3, 4, 4)
    assert data.train.images.dtype == np.float32
    assert np.allclose(data.train.images, rgb.transpose(0, 3, 1, 2))
    assert data.class_names == ("cat", "dog", "eel")
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 6)


def test_directory_of_npy_files(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for key, value in {"x_train": NCHW, "y_train": LABELS, "x_test": NCHW[:4], "y_test": LABELS[:4]}.items():
        np.save(folder / f"{key}.npy", value)
    data = load_in_distribution(f"npy:{folder}", val_fraction=0.1)
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 4)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": NCHW, "y_train": LABELS}, "missing array(s) x_test, y_test"),
        ({"x_train": NCHW[:, 0, :, :4, None].repeat(5, 3), "y_train": LABELS}, "x_train: shape (40, 6, 4, 5)"),
        ({"x_train": NCHW[:, 0, 0], "y_train": LABELS}, "x_train: expected images as NHW, NHWC or NCHW"),
        ({"x_train": NCHW, "y_train": LABELS[:39]}, "x_train has 40 images but y_train has 39 labels"),
        ({"x_train": NCHW, "y_train": LABELS.astype(float)}, "y_train: labels must be a 1-d integer array"),
        ({"x_train": NCHW * 2.0, "y_train": LABELS}, "x_train: float pixels must lie in [0, 1]"),
        ({"x_train": NCHW.astype(np.int32) * 3, "y_train": LABELS}, "x_train: integer pixels must lie in [0, 255]"),
        ({"x_train": NCHW, "y_train": LABELS, "x_val": NCHW}, "'x_val' has no matching 'y_val'"),
        ({"x_train": NCHW, "y_train": LABELS, "x_test": NCHW[:, :, :5], "y_test": LABELS}, "different image shapes"),
    ],
)
def test_bad_arrays_name_the_problem(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    full = {"x_test": NCHW[:4], "y_test": LABELS[:4], **arrays} if "missing" not in message else arrays
    path = _save(tmp_path / "bad.npz", **full)
    with pytest.raises(DataError) as error:
        load_in_distribution(f"npz:{path}")
    assert message in str(error.value)


def test_missing_file_and_single_array(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_in_distribution(f"npz:{tmp_path / 'nope.npz'}")
    np.save(tmp_path / "one.npy", NCHW)
    with pytest.raises(DataError, match="holds a single array"):
        load_in_distribution(f"npy:{tmp_path / 'one.npy'}")

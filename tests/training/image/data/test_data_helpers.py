"""The small pieces every loader uses: layout and pixel conversion, seeded splits, and the checked cache file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.base import DataError, ImageSet
from training.data.cache import CACHE_ENV_VAR, REPO_ROOT, data_cache_dir, load_npz_checked, save_npz_atomic
from training.data.splits import carve, draw, stratified_split
from training.image.convert import check_pixels, convert_channels, fit_to_shape, flatten_alpha, to_nchw

RNG = np.random.default_rng(3)


def test_to_nchw_layouts() -> None:
    nchw = RNG.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    assert np.array_equal(to_nchw(nchw, "x"), nchw)
    assert np.array_equal(to_nchw(nchw.transpose(0, 2, 3, 1), "x"), nchw)
    assert to_nchw(nchw[:, 0], "x").shape == (2, 1, 4, 5)
    assert to_nchw(np.zeros((2, 3, 3, 3)), "x").shape == (2, 3, 3, 3)  # ambiguous: read as NCHW
    with pytest.raises(DataError, match="x: shape \\(2, 4, 4, 4\\) has no channel axis of size 1 or 3"):
        to_nchw(np.zeros((2, 4, 4, 4)), "x")


def test_check_pixels() -> None:
    assert check_pixels(np.array([0, 255], dtype=np.int64), "x").dtype == np.uint8
    assert check_pixels(np.array([0.0, 1.0]), "x").dtype == np.float32
    with pytest.raises(DataError, match=r"float pixels must lie in \[0, 1\], got \[nan, nan\]"):
        check_pixels(np.array([0.0, np.nan]), "x")
    with pytest.raises(DataError, match="unsupported pixel dtype bool"):
        check_pixels(np.array([True]), "x")


def test_channel_conversion_uses_luma() -> None:
    red = np.zeros((1, 3, 1, 1), dtype=np.uint8)
    red[:, 0] = 255
    assert int(convert_channels(red, 1)[0, 0, 0, 0]) == 76  # round(0.299 * 255) = round(76.245)
    assert int(np.asarray(Image.new("RGB", (1, 1), (255, 0, 0)).convert("L"))[0, 0]) == 76  # as PIL does
    gray = np.full((1, 1, 2, 2), 0.25, dtype=np.float32)
    assert np.array_equal(convert_channels(gray, 3), np.full((1, 3, 2, 2), 0.25, dtype=np.float32))


def test_fit_to_shape_resizes_uint8_and_float() -> None:
    images = np.full((2, 1, 10, 10), 200, dtype=np.uint8)
    assert np.array_equal(fit_to_shape(images, (3, 5, 4)), np.full((2, 3, 5, 4), 200, dtype=np.uint8))
    floats = np.full((1, 3, 6, 6), 0.5, dtype=np.float32)
    fitted = fit_to_shape(floats, (1, 3, 3))
    assert fitted.dtype == np.float32 and np.allclose(fitted, 0.5)


def test_flatten_alpha_hides_color_under_transparency() -> None:
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    flat = flatten_alpha(rgba, background=200)
    assert flat.mode == "RGB" and np.asarray(flat).tolist() == [[[200, 200, 200], [10, 20, 30]]]
    gray = flatten_alpha(Image.new("LA", (1, 1), (90, 0)), background=0)
    assert gray.mode == "L" and gray.getpixel((0, 0)) == 0
    deep = flatten_alpha(Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)), background=0)
    assert np.asarray(deep).tolist() == [[0, 255]]  # 16-bit gray rescaled, not clipped


def test_stratified_split_counts_and_seed() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, val, test = stratified_split(labels, [0.5, 0.3], seed=0)
    assert [np.bincount(labels[part], minlength=3).tolist() for part in (train, val, test)] == [
        [5, 10, 15],
        [3, 6, 9],
        [2, 4, 6],
    ]
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(60))
    again = stratified_split(labels, [0.5, 0.3], seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test), strict=True))
    assert not np.array_equal(stratified_split(labels, [0.5, 0.3], seed=1)[0], train)
    with pytest.raises(ValueError, match="sum to at most 1"):
        stratified_split(labels, [0.7, 0.4], seed=0)


def test_carve_and_draw_errors() -> None:
    images = ImageSet(np.zeros((3, 1, 2, 2), np.uint8), np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"3 images are too few to carve a 0\.1 split"):
        carve(images, 0.1, 0, "tiny")
    with pytest.raises(DataError, match=r"must be in \(0, 1\)"):
        carve(images, 1.0, 0, "tiny")
    assert sorted(draw(5, 5, 0, "x").tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="x: asked for 6 samples but only 5 exist"):
        draw(6, 5, 0, "x")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert data_cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert data_cache_dir() == REPO_ROOT / "data-cache"
    assert (REPO_ROOT / "training" / "data" / "cache.py").is_file()


def test_cache_file_round_trip_and_tamper_check(tmp_path: Path) -> None:
    arrays = {"images": RNG.integers(0, 256, (4, 1, 3, 3), dtype=np.uint8), "labels": np.arange(4)}
    path = tmp_path / "sub" / "set.npz"
    sha = save_npz_atomic(path, arrays, {"seed": 7})
    assert os.listdir(path.parent) == ["set.npz"]  # the temporary file was renamed, nothing left behind
    loaded, manifest = load_npz_checked(path)
    assert manifest == {"seed": 7, "sha256": sha}
    assert all(np.array_equal(loaded[key], arrays[key]) for key in arrays)
    save_npz_atomic(path, {**arrays, "labels": np.arange(4) + 1}, {"seed": 7})
    with np.load(path) as npz:
        mixed = {"images": npz["images"], "labels": npz["labels"]}
    np.savez(path, **mixed, manifest=np.array(f'{{"seed": 7, "sha256": "{sha}"}}'))  # old checksum, new data
    with pytest.raises(DataError, match="does not match its checksum"):
        load_npz_checked(path)
    path.write_bytes(b"truncated")
    with pytest.raises(DataError, match="cannot read cache file"):
        load_npz_checked(path)

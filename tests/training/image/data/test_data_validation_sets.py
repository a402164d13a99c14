"""Validation anomaly sets: built from the validation split and noise only, each checked against an oracle."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.base import ImageSet, InDistribution, SealedImageSet, SealedSplitError, as_float
from training.data.registry import anomaly_set_size, load_anomalies
from training.image.anomalies.validation_sets import VALIDATION_SET_NAMES, load_validation_anomalies

DIGITS = tuple(str(d) for d in range(10))


def _digits(n: int = 40, seed: int = 0) -> InDistribution:
    """Random 'digits' whose val split differs from train and test, and whose test split is sealed."""
    rng = np.random.default_rng(seed)
    split = lambda offset: ImageSet(  # noqa: E731
        rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8), (np.arange(n) + offset) % 10
    )
    data = InDistribution("digits", DIGITS, split(0), split(3), split(5), "random digits")
    return data.sealed()


@pytest.mark.parametrize("name", VALIDATION_SET_NAMES)
def test_every_set_is_float_images_in_range_seeded_and_needs_no_test_split(name: str) -> None:
    data = _digits()
    images = load_anomalies(name, data, n=25, seed=4)  # the test split is sealed: reading it would raise
    assert images.shape == (25, 1, 28, 28) and images.dtype == np.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    np.testing.assert_array_equal(images, load_anomalies(name, data, n=25, seed=4))
    assert not np.array_equal(images, load_anomalies(name, data, n=25, seed=5))
    assert anomaly_set_size(name, data) is None


def test_sealed_split_refuses_to_be_read_but_knows_its_size() -> None:
    sealed = _digits().test
    assert isinstance(sealed, SealedImageSet) and len(sealed) == 40
    with pytest.raises(SealedSplitError, match="read once, by `python -m training evaluate`"):
        _ = sealed.images
    with pytest.raises(SealedSplitError):
        _ = sealed.labels
    with pytest.raises(SealedSplitError):
        load_anomalies("negative", _digits(), n=5, seed=0)  # a test anomaly set built from test images


def _val(data: InDistribution) -> np.ndarray:
    return as_float(data.val.images)


def test_pairs_are_means_of_two_different_validation_images() -> None:
    data = _digits()
    val = _val(data).reshape(len(data.val), -1)
    for name, combine in (
        ("val-mean-pair", lambda a, b: (a + b) / np.float32(2)),
        ("val-geomean-pair", lambda a, b: np.sqrt(a * b)),
    ):
        images = load_validation_anomalies(name, data, n=30, seed=0).reshape(30, -1)
        for image in images:  # brute force: exactly one ordered pair (i != j) of val images produces it
            matches = [
                (i, j)
                for i in range(len(val))
                for j in range(len(val))
                if i != j and np.allclose(combine(val[i], val[j]), image, atol=1e-6)
            ]
            assert matches, name


def test_jigsaw_moves_at_least_half_the_tiles_of_one_validation_image() -> None:
    data = _digits()
    val = _val(data)
    images = load_validation_anomalies("val-jigsaw", data, n=20, seed=0)
    tiles = lambda x: [x[0, r * 7 : r * 7 + 7, c * 7 : c * 7 + 7] for r in range(4) for c in range(4)]  # noqa: E731
    for image in images:
        sources = [v for v in val if sorted(map(bytes, tiles(v))) == sorted(map(bytes, tiles(image)))]
        assert len(sources) == 1  # the same 16 tiles as exactly one validation image
        moved = sum(not np.array_equal(a, b) for a, b in zip(tiles(sources[0]), tiles(image), strict=True))
        assert moved >= 8


def test_speckle_and_pixelate_follow_their_formulas() -> None:
    data = _digits()
    val = _val(data)
    speckled = load_validation_anomalies("val-speckle", data, n=20, seed=0)
    # x + x * z keeps zeros at zero and never adds ink where there was none.
    for image in speckled:
        candidates = [v for v in val if np.all((v == 0) <= (image == 0))]
        assert candidates
    pixelated = load_validation_anomalies("val-pixelate", data, n=10, seed=0)
    # Grown back from 5 x 5 with a box filter: constant over blocks (28 / 5 is not whole, so blocks of 5-6 px).
    assert len(np.unique(pixelated[0])) <= 25


def test_mirror_flips_only_digits_whose_mirror_image_is_not_a_digit() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 1, 28, 28), dtype=np.uint8)
    split = ImageSet(images, np.arange(10))
    data = InDistribution("digits", DIGITS, split, split, split, "one of each digit")
    mirrored = load_validation_anomalies("val-mirror", data, n=200, seed=0)
    x = as_float(images)
    upside_down = {d for d in range(10) if any(np.array_equal(m, x[d][:, ::-1, :]) for m in mirrored)}
    left_right = {d for d in range(10) if any(np.array_equal(m, x[d][:, :, ::-1]) for m in mirrored)}
    assert upside_down == {2, 4, 5, 6, 7, 9}  # the reference keeps 0, 1, 3, 8 out
    assert left_right == {2, 3, 4, 5, 6, 7, 9}  # and 0, 1, 8


def test_uniform_noise_is_uniform() -> None:
    noise = load_validation_anomalies("val-uniform", _digits(), n=400, seed=0)
    assert abs(float(noise.mean()) - 0.5) < 0.01
    assert abs(float(noise.var()) - 1 / 12) < 0.005


def test_rotate_turns_every_digit_but_zero_a_quarter_either_way() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 1, 28, 28), dtype=np.uint8)
    split = ImageSet(images, np.arange(10))
    data = InDistribution("digits", DIGITS, split, split, split, "one of each digit")
    turned = load_validation_anomalies("val-rotate", data, n=300, seed=0)
    x = as_float(images)
    found: dict[int, set[int]] = {}
    for image in turned:
        hits = [(d, k) for d in range(10) for k in (1, 2, 3) if np.array_equal(image, np.rot90(x[d], k, axes=(1, 2)))]
        assert len(hits) == 1  # a quarter or three-quarter turn of exactly one digit, never a half turn
        digit, k = hits[0]
        assert k in (1, 3)
        found.setdefault(digit, set()).add(k)
    assert set(found) == set(range(1, 10))  # a turned 0 is still a 0
    assert all(turns == {1, 3} for turns in found.values())


def test_chimera_joins_halves_of_two_digits_of_different_classes() -> None:
    data = _digits()
    val, labels = _val(data), data.val.labels
    images = load_validation_anomalies("val-chimera", data, n=30, seed=0)
    for image in images:
        left = [i for i in range(len(val)) if np.array_equal(val[i][:, :, :14], image[:, :, :14])]
        right = [i for i in range(len(val)) if np.array_equal(val[i][:, :, 14:], image[:, :, 14:])]
        assert len(left) == 1 and len(right) == 1
        assert labels[left[0]] != labels[right[0]]

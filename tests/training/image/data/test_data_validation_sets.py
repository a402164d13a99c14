"""Validation anomaly sets: built from the validation split and noise only, each checked against an oracle."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from training.data.base import (
    DataError,
    ImageSet,
    InDistribution,
    SealedImageSet,
    SealedSplitError,
    as_float,
    hold_out_classes,
)
from training.data.registry import anomaly_set_size, load_anomalies
from training.image.anomalies.validation_sets import (
    DEFAULT_VALIDATION_SET_NAMES,
    GLYPH_SEED_OFFSET,
    VALIDATION_SET_NAMES,
    _derangement_like,
    load_validation_anomalies,
)
from training.image.pool import fontglyphs
from training.image.pool.build import DRAWN_SEED, GLYPH_HELD_OUT_SCRIPT

DIGITS = tuple(str(d) for d in range(10))


def _digits(n: int = 40, seed: int = 0, background: bool = False) -> InDistribution:
    """Random 'digits' whose val split differs from train and test, and whose test split is sealed; with
    `background`, the left half of every image is blank (0), as around a real digit."""
    rng = np.random.default_rng(seed)

    def images() -> np.ndarray:
        drawn = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
        if background:
            drawn[..., :14] = 0
        return drawn

    split = lambda offset: ImageSet(images(), (np.arange(n) + offset) % 10)  # noqa: E731
    data = InDistribution("digits", DIGITS, split(0), split(3), split(5), "random digits")
    return data.sealed()


@pytest.mark.parametrize("name", DEFAULT_VALIDATION_SET_NAMES)
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
        images = load_validation_anomalies(name, data, n=200, seed=0).reshape(200, -1)
        for image in images:  # brute force: exactly one ordered pair (i != j) of val images produces it
            matches = [
                (i, j)
                for i in range(len(val))
                for j in range(len(val))
                if i != j and np.allclose(combine(val[i], val[j]), image, atol=1e-6)
            ]
            assert matches, name


def test_the_tile_order_always_moves_at_least_half_of_them() -> None:
    rng = np.random.default_rng(0)
    for size in (2, 4, 16):
        for _ in range(300):  # a plain random permutation of 2 or 4 would leave every tile in place now and then
            order = _derangement_like(size, rng)
            assert sorted(order) == list(range(size))
            assert np.count_nonzero(order != np.arange(size)) >= size // 2


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
    data = _digits(background=True)
    val = _val(data)
    speckled = load_validation_anomalies("val-speckle", data, n=20, seed=0)
    # x + x * z keeps zeros at zero and never adds ink where there was none: the blank half stays blank, the inked
    # half changes by a multiple of each pixel's own value.
    for image in speckled:
        assert not image[..., :14].any() and image[..., 14:].any()
        candidates = [v for v in val if np.all((v == 0) <= (image == 0))]
        assert candidates
    data = _digits()
    val = _val(data)
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


def _chimera_sources(val: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    left = [i for i in range(len(val)) if np.array_equal(val[i][:, :, :14], image[:, :, :14])]
    right = [i for i in range(len(val)) if np.array_equal(val[i][:, :, 14:], image[:, :, 14:])]
    assert len(left) == 1 and len(right) == 1
    return left[0], right[0]


def test_chimera_joins_halves_of_two_digits_of_different_classes() -> None:
    data = _digits()
    val, labels = _val(data), data.val.labels
    images = load_validation_anomalies("val-chimera", data, n=30, seed=0)
    for image in images:
        left, right = _chimera_sources(val, image)
        assert labels[left] != labels[right]


def _marked_digits(n: int = 60) -> InDistribution:
    """Unsealed 'digits' whose first pixel holds the digit they show (so a drawn image names its class)."""

    def split(offset: int) -> ImageSet:
        labels = (np.arange(n) + offset) % 10
        images = np.zeros((n, 1, 28, 28), np.uint8)
        images[:, 0, 0, 0] = labels
        images[:, 0, 5:20, 10:14] = 200  # a vertical bar: any flip or turn changes the image
        return ImageSet(images, labels.astype(np.int64))

    return InDistribution("digits", DIGITS, split(0), split(3), split(5), "marked digits")


def test_hold_out_classes_leaves_every_split_and_renumbers() -> None:
    data = _marked_digits()
    held = hold_out_classes(data, ["0", "7"])
    assert held.class_names == ("1", "2", "3", "4", "5", "6", "8", "9")
    for before, after in ((data.train, held.train), (data.val, held.val), (data.test, held.test)):
        assert after.labels is not None and before.labels is not None
        assert len(after) == int(np.isin(before.labels, [1, 2, 3, 4, 5, 6, 8, 9]).sum())
        shown = after.images[:, 0, 0, 0]  # the digit each kept image shows, through the new label's name
        assert [int(held.class_names[label]) for label in after.labels] == shown.tolist()
    assert held.held_out is not None and len(held.held_out) == 2 * 12  # train and val images of 0 and 7; not test
    assert sorted(set(held.held_out[:, 0, 0, 0].tolist())) == [0, 7]
    assert "classes 0, 7 held out" in held.description
    assert hold_out_classes(data, []) is data
    with pytest.raises(DataError, match="held-out class\\(es\\) x are not classes"):
        hold_out_classes(data, ["x"])
    with pytest.raises(DataError, match="fewer than two classes"):
        hold_out_classes(data, list(DIGITS[1:]))


def test_val_heldout_classes_draws_the_held_out_images() -> None:
    held = hold_out_classes(_marked_digits(), ["0", "7"]).sealed()
    images = load_anomalies("val-heldout-classes", held, n=10, seed=1)
    assert images.shape == (10, 1, 28, 28) and images.dtype == np.float32
    assert set(np.round(images[:, 0, 0, 0] * 255).astype(int).tolist()) <= {0, 7}
    np.testing.assert_array_equal(images, load_anomalies("val-heldout-classes", held, n=10, seed=1))
    assert anomaly_set_size("val-heldout-classes", held) == 24
    for call in (lambda: anomaly_set_size("val-heldout-classes", _digits()),
                 lambda: load_validation_anomalies("val-heldout-classes", _digits(), n=5, seed=0)):  # fmt: skip
        with pytest.raises(DataError, match=r"set data\.held_out_classes"):
            call()
    assert "val-heldout-classes" in VALIDATION_SET_NAMES and "val-heldout-classes" not in DEFAULT_VALIDATION_SET_NAMES


@pytest.mark.parametrize("held", [["0"], ["1", "8"], []])
def test_mirror_and_rotate_keep_their_digit_rules_with_classes_held_out(held: list[str]) -> None:
    data = hold_out_classes(_marked_digits(n=200), held)
    mirrored = load_validation_anomalies("val-mirror", data, n=300, seed=0)
    turned = load_validation_anomalies("val-rotate", data, n=300, seed=0)
    # The digit mark sits at pixel (0, 0) of the original; a vertical flip moves it to row 27, a left-right flip to
    # column 27, a quarter turn to a corner: each image's digit is read back from wherever it went.
    corners = lambda x: np.stack([x[:, 0, 27, 0], x[:, 0, 0, 27], x[:, 0, 27, 27]], axis=1)  # noqa: E731
    flipped_digits = np.round(corners(mirrored).max(axis=1) * 255).astype(int)
    turned_digits = np.round(corners(turned).max(axis=1) * 255).astype(int)
    assert not set(flipped_digits.tolist()) & {0, 1, 8}  # digits that still look like digits when flipped
    assert 0 not in set(turned_digits.tolist())  # a turned 0 is still a 0
    kept = {int(name) for name in data.class_names}
    assert set(turned_digits.tolist()) == kept - {0} and set(flipped_digits.tolist()) == kept - {0, 1, 8}


@pytest.mark.needs_apt("fonts-dejavu-extra")
@pytest.mark.needs_apt("fonts-nanum")
def test_val_glyphs_are_font_glyphs_of_their_own_seeds_not_the_pool_groups() -> None:
    data = _digits()  # sealed test split: reading it would raise
    images = load_anomalies("val-glyphs", data, n=12, seed=3)
    assert images.shape == (12, 1, 28, 28) and images.dtype == np.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    np.testing.assert_array_equal(images, as_float(fontglyphs.font_glyphs(12, GLYPH_SEED_OFFSET + 3)[:12]))
    assert not np.array_equal(images, load_anomalies("val-glyphs", data, n=12, seed=4))
    assert DRAWN_SEED not in {GLYPH_SEED_OFFSET + s for s in range(1000)}  # never the glyph OE group's draw
    pool_draw = as_float(fontglyphs.font_glyphs(12, DRAWN_SEED))
    assert not any(np.array_equal(image, drawn) for image in images for drawn in pool_draw)
    assert anomaly_set_size("val-glyphs", data) is None


def test_val_glyphs_fill_up_to_n_and_refuse_images_of_another_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 28, 28), np.uint8)
    seeds: list[int] = []
    scripts: list[object] = []
    styles: list[str] = []

    def fake_glyphs(n: int, seed: int, only: list[str] | None = None, style: str = "hand") -> np.ndarray:
        seeds.append(seed)
        scripts.append(only)
        styles.append(style)
        return drawn  # the digit filter kept 3

    monkeypatch.setattr(fontglyphs, "font_glyphs", fake_glyphs)
    images = load_validation_anomalies("val-glyphs", _digits(), n=5, seed=2)
    assert seeds == [GLYPH_SEED_OFFSET + 2]
    assert images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(images[:3], as_float(drawn))
    assert set(np.round(images[3:, 0, 0, 0] * 255).astype(int).tolist()) <= {0, 1, 2}  # the rest are repeats
    split = ImageSet(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4, np.int64))
    rgb = InDistribution("pets", ("cat", "dog"), split, split, split, "colour photos")
    with pytest.raises(DataError, match=r"val-glyphs .* pets images are 3x32x32"):
        load_validation_anomalies("val-glyphs", rgb, n=5, seed=0)
    assert seeds == [GLYPH_SEED_OFFSET + 2]  # refused before any font was read
    assert "val-glyphs" in VALIDATION_SET_NAMES and "val-glyphs" not in DEFAULT_VALIDATION_SET_NAMES
    # val-glyphs-cyrillic: the same draw restricted to the script the pool `default-glyphs-no-cyrillic` leaves out.
    cyrillic = load_validation_anomalies("val-glyphs-cyrillic", _digits(), n=4, seed=1)
    assert cyrillic.shape == (4, 1, 28, 28)
    assert (seeds[-1], scripts) == (GLYPH_SEED_OFFSET + 1, [None, [GLYPH_HELD_OUT_SCRIPT]])
    with pytest.raises(DataError, match=r"val-glyphs-cyrillic .* pets images are 3x32x32"):
        load_validation_anomalies("val-glyphs-cyrillic", rgb, n=5, seed=0)
    assert "val-glyphs-cyrillic" in VALIDATION_SET_NAMES and "val-glyphs-cyrillic" not in DEFAULT_VALIDATION_SET_NAMES
    # val-printed-cyrillic: Cyrillic printed (not drawn like handwriting) in the faces no pool group reads.
    printed = load_validation_anomalies("val-printed-cyrillic", _digits(), n=4, seed=5)
    assert printed.shape == (4, 1, 28, 28)
    assert (seeds[-1], scripts[-1], styles) == (GLYPH_SEED_OFFSET + 5, ["cyrillic-faces"], ["hand", "hand", "printed"])
    with pytest.raises(DataError, match=r"val-printed-cyrillic .* pets images are 3x32x32"):
        load_validation_anomalies("val-printed-cyrillic", rgb, n=5, seed=0)
    assert len(seeds) == 3
    assert "val-printed-cyrillic" in VALIDATION_SET_NAMES
    assert "val-printed-cyrillic" not in DEFAULT_VALIDATION_SET_NAMES


# The validation sets every MNIST round in reports/mnist/choices.md was scored on: the same names, seeds and data give
# the same images. A change here (a stream's name, a formula, a draw) changes what "val-..." means and makes earlier
# rounds' figures incomparable with new ones: make it only on purpose, and say so in choices.md. Sizes below, at and
# above the validation split's 40 images, where drawing with and without replacement part; the digit-named data and
# the data whose class names are no digits take the two branches of mirror and rotate.
IMAGE_DIGESTS = {
    "val-uniform": ("13074d2d7685383c", "13074d2d7685383c"),
    "val-mean-pair": ("c7e0813b0b811808", "c7e0813b0b811808"),
    "val-geomean-pair": ("779eecf05155d189", "779eecf05155d189"),
    "val-jigsaw": ("22d11d1a33f100a2", "22d11d1a33f100a2"),
    "val-speckle": ("ff8aaae15922cc8d", "ff8aaae15922cc8d"),
    "val-pixelate": ("cd76b53056f55aae", "cd76b53056f55aae"),
    "val-mirror": ("818a9f34129b282b", "d1c39fa54505f8af"),
    "val-rotate": ("48da20e09cce046f", "f25f2841feb1d8cf"),
    "val-chimera": ("2ede8aea5f47bc03", "2ede8aea5f47bc03"),
}


def _digest(images: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(np.round(i.astype(np.float64), 5).tobytes() for i in images)).hexdigest()[:16]


@pytest.mark.parametrize("name", DEFAULT_VALIDATION_SET_NAMES)
def test_validation_sets_are_the_ones_earlier_rounds_were_scored_on(name: str) -> None:
    assert set(IMAGE_DIGESTS) == set(DEFAULT_VALIDATION_SET_NAMES)
    digits = _digits(background=True)
    animals = dataclasses.replace(digits, class_names=tuple(f"animal{d}" for d in DIGITS))
    got = tuple(_digest([load_anomalies(name, data, n=n, seed=3) for n in (25, 40, 60)]) for data in (digits, animals))
    assert got == IMAGE_DIGESTS[name]


def test_the_held_out_classes_set_is_the_one_earlier_rounds_were_scored_on() -> None:
    held = hold_out_classes(_marked_digits(), ["0", "7"]).sealed()
    got = _digest([load_anomalies("val-heldout-classes", held, n=n, seed=3) for n in (10, 24, 30)])
    assert got == "7a866dae5ba8ddb2"


def test_mirror_and_rotate_treat_every_image_alike_when_class_names_are_no_digits() -> None:
    data = dataclasses.replace(_marked_digits(n=40), class_names=tuple(f"animal{d}" for d in DIGITS))
    val = _val(data)
    mirrored = load_validation_anomalies("val-mirror", data, n=40, seed=0)
    flipped = val[:, :, :, ::-1]
    np.testing.assert_array_equal(mirrored, flipped)  # all 40, each once, in order: every image flipped left-right
    turned = load_validation_anomalies("val-rotate", data, n=40, seed=0)
    sources = {int(np.rot90(image, k=-k, axes=(1, 2))[0, 0, 0]) for image in turned for k in (1, 3)}
    assert {0} <= sources  # zeros are turned too: "no quarter turn of a 0" is a rule for digits only


def test_pixelate_averages_a_tiny_image_to_one_value() -> None:
    rng = np.random.default_rng(0)
    split = lambda: ImageSet(rng.integers(0, 256, size=(6, 1, 4, 4), dtype=np.uint8), np.arange(6) % 2)  # noqa: E731
    data = InDistribution("tiny", ("a", "b"), split(), split(), split(), "4x4 images")
    out = load_validation_anomalies("val-pixelate", data, n=6, seed=0)
    val = as_float(data.val.images)
    np.testing.assert_allclose(out, np.broadcast_to(val.mean(axis=(2, 3), keepdims=True), out.shape), atol=1e-6)


def test_chimera_pairs_across_two_classes_and_pairs_any_two_images_of_one_class_or_none() -> None:
    data = _digits()
    val = _val(data)
    two = data.val.labels % 2
    for image in load_validation_anomalies(
        "val-chimera", dataclasses.replace(data, val=ImageSet(data.val.images, two)), n=200, seed=0
    ):
        left, right = _chimera_sources(val, image)
        assert two[left] != two[right]  # redrawn until the classes differ, with only two classes as with ten
    for labels in (np.zeros(len(val), dtype=np.int64), None):  # no second class to pair with: two different images
        images = load_validation_anomalies(
            "val-chimera", dataclasses.replace(data, val=ImageSet(data.val.images, labels)), n=50, seed=0
        )
        assert images.shape == (50, 1, 28, 28)
        assert all(np.subtract(*_chimera_sources(val, image)) != 0 for image in images)


def test_a_tile_order_that_moves_exactly_half_is_kept() -> None:
    seed = next(
        s for s in range(1000) if np.count_nonzero(np.random.default_rng(s).permutation(4) != np.arange(4)) == 2
    )
    first = np.random.default_rng(seed).permutation(4)
    np.testing.assert_array_equal(_derangement_like(4, np.random.default_rng(seed)), first)

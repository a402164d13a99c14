"""Validation anomaly sets: built only from the validation split and noise, for every choice made before `evaluate`.

The pipeline chooses temperature, threshold, hyper-parameters and pool recipes on these sets and on the
validation split, never on the test split or a test anomaly set (those are read once, by `python -m training
evaluate`). They follow the reference code's `--validate` sets (hendrycks/outlier-exposure, `MNIST/test.py`),
applied to *validation* images instead of test images; every generator returns float32 NCHW in [0, 1]:

- val-uniform:      x ~ U[0, 1] per pixel
- val-mean-pair:    (x_i + x_j) / 2 for two different validation images
- val-geomean-pair: sqrt(x_i * x_j) for two different validation images
- val-jigsaw:       a validation image cut into a 4 x 4 grid of tiles, the tiles put back in a random order that
                    moves at least half of them (the reference swaps fixed quadrant pieces; a random order is the
                    same idea for any input size)
- val-speckle:      clip(x + x * N(0, 1), 0, 1)
- val-pixelate:     shrunk to 20% of its side with a box filter, then grown back with a box filter
- val-mirror:       for the ten MNIST digits, the reference's flips: upside down for digits other than 0, 1, 3,
                    8 and left-right for digits other than 0, 1, 8 (their mirror images are still digits); for
                    other label sets, every image flipped left-right
- val-rotate:       a quarter turn (90 or 270 degrees, at random) of validation digits other than 0 (a turned 0 is
                    still a 0); for other label sets, of every image. Turned handwriting: pen strokes of the right
                    width and style that are not digits, a stand-in for characters of scripts nobody trained on
- val-chimera:      the left half of one validation digit joined to the right half of a digit of another class
                    (for unlabelled data, of another image): pen strokes that make a glyph of no class
- val-heldout-classes: train and val images of the classes held out of training (`data.held_out_classes`):
                    handwriting of the same writers, of no trained class; a stand-in for letters and other scripts
- val-glyphs:       characters of scripts no test set holds, and symbols, drawn from fonts no test set reads
                    like handwriting (the font-glyph source, `training/image/pool/fontglyphs.py`, with its own
                    seeds: no image of the pool group's draw); a stand-in for letters. 28 x 28 grey images only;
                    needs the fonts (`fonts-dejavu-extra`, `fonts-nanum`). Not from the validation split: a recipe
                    whose pool holds the glyph group (`glyphs`) has seen its kind, so it is no held-out estimate for
                    that recipe
- val-glyphs-cyrillic: the same drawing, Cyrillic letters only: glyphs of a script that the pool
                    `default-glyphs-no-cyrillic` leaves out, so it is a held-out estimate for that recipe too
- val-printed-cyrillic: Cyrillic letters printed (upright type, no pen or hand) in the 87 faces of nine font
                    packages that no pool group and no test set reads (`fontglyphs.VALIDATION_GROUPS`): printed
                    letters of a script and in faces that the `-no-cyrillic` pools never saw

`val-heldout-classes`, `val-glyphs`, `val-glyphs-cyrillic` and `val-printed-cyrillic` are opt-in
(`data.val_anomalies`, `python -m training validate --sets`).
The digit rules of val-mirror and val-rotate apply whenever the class names are digits (some may be held out).

Each set has its own stream seeded by (seed, crc32(name)).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from training.data.base import DataError, InDistribution, as_float

VALIDATION_PREFIX = "val-"
JIGSAW_GRID = 4
PIXELATE_FACTOR = 0.2
DIGIT_LABELS = tuple(str(d) for d in range(10))
# The reference's exclusions: these digits still look like digits when flipped (MNIST/test.py).
NO_VERTICAL_FLIP = {0, 1, 3, 8}
NO_HORIZONTAL_FLIP = {0, 1, 8}
NO_QUARTER_TURN = {0}


def _rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _pick(data: InDistribution, n: int, rng: np.random.Generator) -> np.ndarray:
    """n validation images (float32 [0, 1]); with replacement only when the split holds fewer than n."""
    images = data.val.images
    index = rng.choice(len(images), size=n, replace=n > len(images))
    return as_float(images[np.sort(index)])


def _partners(n: int, pool: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = rng.integers(0, pool, size=n)
    shift = rng.integers(1, pool, size=n)  # never 0, so the partner is a different image
    return first, (first + shift) % pool


def uniform(data: InDistribution, n: int, seed: int) -> np.ndarray:
    return _rng("val-uniform", seed).random(size=(n, *data.shape), dtype=np.float32)


def mean_pair(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-mean-pair", seed)
    images = as_float(data.val.images)
    first, second = _partners(n, len(images), rng)
    return ((images[first] + images[second]) / np.float32(2.0)).astype(np.float32)


def geomean_pair(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-geomean-pair", seed)
    images = as_float(data.val.images)
    first, second = _partners(n, len(images), rng)
    return np.sqrt(images[first] * images[second]).astype(np.float32)


def _derangement_like(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(size) that moves at least half of the elements."""
    while True:
        order = rng.permutation(size)
        if np.count_nonzero(order != np.arange(size)) >= size // 2:
            return order


def jigsaw(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-jigsaw", seed)
    images = _pick(data, n, rng)
    _, _, h, w = images.shape
    th, tw = h // JIGSAW_GRID, w // JIGSAW_GRID
    out = images.copy()  # rows/columns beyond the grid (sizes not divisible by 4) stay where they are
    cells = [(r, c) for r in range(JIGSAW_GRID) for c in range(JIGSAW_GRID)]
    for i in range(n):
        order = _derangement_like(len(cells), rng)
        for (r, c), source in zip(cells, order, strict=True):
            sr, sc = cells[source]
            out[i, :, r * th : (r + 1) * th, c * tw : (c + 1) * tw] = images[
                i, :, sr * th : (sr + 1) * th, sc * tw : (sc + 1) * tw
            ]
    return out


def speckle(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-speckle", seed)
    images = _pick(data, n, rng)
    noise = rng.standard_normal(size=images.shape).astype(np.float32)
    return np.clip(images + images * noise, 0.0, 1.0).astype(np.float32)


def pixelate(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-pixelate", seed)
    images = _pick(data, n, rng)
    _, c, h, w = images.shape
    small = (max(1, int(w * PIXELATE_FACTOR)), max(1, int(h * PIXELATE_FACTOR)))
    out = np.empty_like(images)
    for i in range(n):
        for channel in range(c):
            plane = Image.fromarray(images[i, channel], mode="F")
            out[i, channel] = np.asarray(
                plane.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX), dtype=np.float32
            )
    return np.clip(out, 0.0, 1.0)


def _digits(data: InDistribution) -> np.ndarray | None:
    """The digit each validation image shows when the class names are digits (all ten or some), else None."""
    labels = data.val.labels
    if labels is None or not set(data.class_names) <= set(DIGIT_LABELS):
        return None
    return np.array([int(name) for name in data.class_names], np.int64)[labels]


def mirror(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-mirror", seed)
    images, digits = data.val.images, _digits(data)
    if digits is not None:
        vertical = np.flatnonzero(~np.isin(digits, list(NO_VERTICAL_FLIP)))
        horizontal = np.flatnonzero(~np.isin(digits, list(NO_HORIZONTAL_FLIP)))
        flipped = np.concatenate(
            [as_float(images[vertical])[:, :, ::-1, :], as_float(images[horizontal])[:, :, :, ::-1]]
        )
    else:
        flipped = as_float(images)[:, :, :, ::-1]
    index = rng.choice(len(flipped), size=n, replace=n > len(flipped))
    return np.ascontiguousarray(flipped[np.sort(index)])


def rotate(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-rotate", seed)
    images, digits = data.val.images, _digits(data)
    if digits is not None:
        candidates = np.flatnonzero(~np.isin(digits, list(NO_QUARTER_TURN)))
    else:
        candidates = np.arange(len(images))
    index = np.sort(rng.choice(candidates, size=n, replace=n > len(candidates)))
    chosen = as_float(images[index])
    turns = rng.choice([1, 3], size=n)
    out = np.empty_like(chosen)
    for k in (1, 3):
        out[turns == k] = np.rot90(chosen[turns == k], k=k, axes=(2, 3))
    return np.ascontiguousarray(out)


def chimera(data: InDistribution, n: int, seed: int) -> np.ndarray:
    rng = _rng("val-chimera", seed)
    images, labels = as_float(data.val.images), data.val.labels
    first, second = _partners(n, len(images), rng)
    if labels is not None and len(np.unique(labels)) > 1:
        same = labels[first] == labels[second]
        while np.any(same):  # redraw partners of the same class
            second[same] = rng.integers(0, len(images), size=int(same.sum()))
            same = labels[first] == labels[second]
    half = images.shape[3] // 2
    out = images[first].copy()
    out[:, :, :, half:] = images[second][:, :, :, half:]
    return out


def heldout_classes(data: InDistribution, n: int, seed: int) -> np.ndarray:
    images = data.held_out_images()
    index = _rng("val-heldout-classes", seed).choice(len(images), size=n, replace=n > len(images))
    return as_float(images[np.sort(index)])


GLYPH_SEED_OFFSET = zlib.crc32(b"val-glyphs")  # val-glyphs draws with seed + this; the pool group draws with seed 0


def _glyphs(
    name: str, scripts: list[str] | None, data: InDistribution, n: int, seed: int, style: str = "hand"
) -> np.ndarray:
    if tuple(data.shape) != (1, 28, 28):
        raise DataError(
            f"{name} are drawn as 28 x 28 grey images, as MNIST digits; {data.name} images are "
            f"{'x'.join(map(str, data.shape))}: leave {name} out of data.val_anomalies"
        )
    # the fonts are read only when the set is asked for
    from training.image.pool.fontglyphs import font_glyphs

    drawn = font_glyphs(n, GLYPH_SEED_OFFSET + seed, scripts, style)
    if len(drawn) < n:  # the digit filter may keep slightly fewer than asked for
        index = _rng(name, seed).choice(len(drawn), size=n - len(drawn))
        drawn = np.concatenate([drawn, drawn[np.sort(index)]])
    return as_float(drawn)


def glyphs(data: InDistribution, n: int, seed: int) -> np.ndarray:
    return _glyphs("val-glyphs", None, data, n, seed)


def glyphs_cyrillic(data: InDistribution, n: int, seed: int) -> np.ndarray:
    from training.image.pool.fontglyphs import HELD_OUT_SCRIPT

    return _glyphs("val-glyphs-cyrillic", [HELD_OUT_SCRIPT], data, n, seed)


def printed_cyrillic(data: InDistribution, n: int, seed: int) -> np.ndarray:
    from training.image.pool.fontglyphs import VALIDATION_GROUPS

    return _glyphs("val-printed-cyrillic", [VALIDATION_GROUPS[0].name], data, n, seed, "printed")


VALIDATION_SETS: dict[str, Callable[[InDistribution, int, int], np.ndarray]] = {
    "val-uniform": uniform,
    "val-mean-pair": mean_pair,
    "val-geomean-pair": geomean_pair,
    "val-jigsaw": jigsaw,
    "val-speckle": speckle,
    "val-pixelate": pixelate,
    "val-mirror": mirror,
    "val-rotate": rotate,
    "val-chimera": chimera,
}
DEFAULT_VALIDATION_SET_NAMES = tuple(VALIDATION_SETS)
"""The validation sets a pipeline reports by default; `val-heldout-classes` needs `data.held_out_classes`, and
`val-glyphs` needs 28 x 28 grey images and the fonts."""
VALIDATION_SETS["val-heldout-classes"] = heldout_classes
VALIDATION_SETS["val-glyphs"] = glyphs
VALIDATION_SETS["val-glyphs-cyrillic"] = glyphs_cyrillic
VALIDATION_SETS["val-printed-cyrillic"] = printed_cyrillic
VALIDATION_SET_NAMES = tuple(VALIDATION_SETS)


def load_validation_anomalies(name: str, data: InDistribution, *, n: int, seed: int) -> np.ndarray:
    """n images of the named validation anomaly set, float32 NCHW in [0, 1]."""
    return VALIDATION_SETS[name](data, n, seed)

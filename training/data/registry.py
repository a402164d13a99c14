"""One name for every data set: the entry point that configs, the CLI and tests use.

A spec is a plain name or `kind:argument`:

- in-distribution: mnist, mnist5k; npz:PATH, npy:PATH, imagefolder:PATH, torchvision:NAME:ROOT
- OE outlier pool: default; npy:PATH, imagefolder:PATH
- test anomalies: gaussian, rademacher, bernoulli, blobs, negative, fashion-mnist, notmnist, omniglot;
  npy:PATH, imagefolder:PATH
- validation anomalies (built from the validation split and noise, `validation_sets.py`): val-uniform,
  val-mean-pair, val-geomean-pair, val-jigsaw, val-speckle, val-pixelate, val-mirror, val-rotate, val-chimera;
  opt-in: val-heldout-classes (classes held out of training), val-glyphs, val-glyphs-cyrillic (glyphs drawn from
  fonts like handwriting), val-printed-cyrillic (Cyrillic printed in faces no pool reads)

Test anomalies are for evaluation only: never train or tune on them. Every choice is made on the validation split
and the validation anomaly sets.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.base import DataError, InDistribution, hold_out_classes
from training.image.anomalies.real_anomalies import (
    REAL_SET_NAMES,
    load_real_anomalies,
    load_user_anomalies,
    real_set_images,
    user_set_size,
)
from training.image.anomalies.synthetic import NOISE_GENERATORS, negative_images
from training.image.anomalies.validation_sets import VALIDATION_SET_NAMES, load_validation_anomalies
from training.image.array_file import load_array_file
from training.image.image_folder import load_image_folder
from training.image.mnist import load_mnist, load_mnist5k
from training.image.pool.build import load_default_pool, load_pool_file
from training.image.torchvision_sets import TORCHVISION_NAMES, load_torchvision

IN_DISTRIBUTION_NAMES = ("mnist", "mnist5k")
IN_DISTRIBUTION_FORMS = ("npz:PATH", "npy:PATH", "imagefolder:PATH", "torchvision:NAME:ROOT")
POOL_NAMES = (
    "default",
    "default-mixed",
    "default-scribbles",
    "default-glyphs",
    "default-glyphs-no-cyrillic",
    "default-glyphs-wide",
    "default-glyphs-wide-no-cyrillic",
    "default-printed",
    "default-printed-no-cyrillic",
)
POOL_RECIPES = {
    "default": "crops",
    "default-mixed": "mixed",
    "default-scribbles": "mixed+scribbles",
    "default-glyphs": "mixed+scribbles+glyphs",
    "default-glyphs-no-cyrillic": "mixed+scribbles+glyphs-no-cyrillic",
    "default-glyphs-wide": "mixed+scribbles+glyphs-wide",
    "default-glyphs-wide-no-cyrillic": "mixed+scribbles+glyphs-wide-no-cyrillic",
    "default-printed": "mixed+scribbles+glyphs-wide+printed-wide",
    "default-printed-no-cyrillic": "mixed+scribbles+glyphs-wide-no-cyrillic+printed-wide-no-cyrillic",
}
POOL_FORMS = ("npy:PATH", "imagefolder:PATH")
SYNTHETIC_NAMES = (*NOISE_GENERATORS, "negative")
TEST_ANOMALY_SET_NAMES = (*SYNTHETIC_NAMES, *REAL_SET_NAMES)
ANOMALY_SET_NAMES = (*TEST_ANOMALY_SET_NAMES, *VALIDATION_SET_NAMES)
ANOMALY_FORMS = ("npy:PATH", "imagefolder:PATH")


@dataclass(frozen=True)
class Spec:
    """A parsed spec: `kind` is "name" for a plain name, else the part before the first colon."""

    kind: str
    argument: str


def parse_spec(spec: str) -> Spec:
    """Split a spec: `mnist` -> Spec("name", "mnist"), `npz:/d/x.npz` -> Spec("npz", "/d/x.npz")."""
    text = spec.strip()
    if not text:
        raise DataError("empty data spec")
    kind, colon, argument = text.partition(":")
    if not colon:
        return Spec("name", text)
    if not argument:
        raise DataError(f"data spec '{spec}' has nothing after '{kind}:'")
    return Spec(kind, argument)


def _unknown(role: str, given: str, names: Sequence[str], forms: Sequence[str]) -> DataError:
    close = difflib.get_close_matches(given, [*names, *(form.split(":")[0] for form in forms)], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return DataError(f"unknown {role} '{given}'{hint}; valid: {', '.join(names)}, or {', '.join(forms)}")


def describe_data_specs() -> str:
    """A few lines listing every valid data name and spec form, for `--help` and error messages."""
    return "\n".join(
        [
            f"in-distribution: {', '.join(IN_DISTRIBUTION_NAMES)}, {', '.join(IN_DISTRIBUTION_FORMS)}"
            f" (torchvision NAME: {', '.join(TORCHVISION_NAMES)}, others if torchvision is installed)",
            f"outlier pool: {', '.join(POOL_NAMES)}, {', '.join(POOL_FORMS)}",
            f"test anomalies: {', '.join(TEST_ANOMALY_SET_NAMES)}, {', '.join(ANOMALY_FORMS)}",
            f"validation anomalies: {', '.join(VALIDATION_SET_NAMES)}",
        ]
    )


def load_in_distribution(
    spec: str, *, seed: int = 0, val_fraction: float = 0.1, held_out_classes: Sequence[str] = ()
) -> InDistribution:
    """The in-distribution set named by `spec`, split train / val / test, without `held_out_classes` (their train
    and val images become `held_out`: `base.hold_out_classes`).

    `seed` and `val_fraction` decide carved splits (mnist has a fixed split; mnist5k a fixed 60/20/20).
    """
    return hold_out_classes(_load_in_distribution(spec, seed=seed, val_fraction=val_fraction), held_out_classes)


def _load_in_distribution(spec: str, *, seed: int, val_fraction: float) -> InDistribution:
    parsed = parse_spec(spec)
    if parsed.kind == "name":
        if parsed.argument == "mnist":
            return load_mnist()
        if parsed.argument == "mnist5k":
            return load_mnist5k(seed)
        raise _unknown("in-distribution data set", parsed.argument, IN_DISTRIBUTION_NAMES, IN_DISTRIBUTION_FORMS)
    if parsed.kind in ("npz", "npy"):
        return load_array_file(Path(parsed.argument), seed=seed, val_fraction=val_fraction)
    if parsed.kind == "imagefolder":
        return load_image_folder(Path(parsed.argument), seed=seed, val_fraction=val_fraction)
    if parsed.kind == "torchvision":
        name, colon, root = parsed.argument.partition(":")
        if not colon or not root:
            raise DataError(f"torchvision spec '{spec}' must be torchvision:NAME:ROOT")
        return load_torchvision(name, Path(root), seed=seed, val_fraction=val_fraction)
    raise _unknown("in-distribution spec kind", parsed.kind, IN_DISTRIBUTION_NAMES, IN_DISTRIBUTION_FORMS)


def load_outlier_pool(
    spec: str,
    shape: tuple[int, int, int],
    *,
    seed: int = 0,
    limit: int | None = None,
    exclude: Sequence[str] = (),
    glyph_samples: int | None = None,
) -> np.ndarray:
    """The OE outlier pool as uint8 [N, C, H, W] with (C, H, W) = `shape`; `limit` keeps a seeded subset.

    `default` is the cached pool of random clip-art crops, `default-mixed` the recipe with outline and placed views
    (`pool/build.py`), `default-scribbles` default-mixed plus a group of drawn pen strokes (`pool/scribbles.py`),
    `default-glyphs` that plus a group of drawn font glyphs (`pool/fontglyphs.py`), `default-glyphs-no-cyrillic`
    the same with the glyphs drawn from every script group but Cyrillic (`val-glyphs-cyrillic` scores those),
    `default-glyphs-wide` default-scribbles plus twice the glyphs from nineteen script groups (fourteen more fonts'
    scripts), `default-glyphs-wide-no-cyrillic` the same without Cyrillic, `default-printed` default-glyphs-wide
    plus the nineteen groups' glyphs printed as type (`-no-cyrillic`: both without Cyrillic); `exclude` drops
    source groups of any of them (leave-one-source-out runs); `glyph_samples` sets how many glyphs the hand-drawn
    glyph group draws.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "name":
        if parsed.argument in POOL_NAMES:
            recipe = POOL_RECIPES[parsed.argument]
            return load_default_pool(
                shape, seed=seed, limit=limit, exclude=exclude, recipe=recipe, glyph_samples=glyph_samples
            )
        raise _unknown("outlier pool", parsed.argument, POOL_NAMES, POOL_FORMS)
    if exclude:
        raise DataError(f"outlier pool {spec}: only the default pools have source groups to exclude")
    if glyph_samples is not None:
        raise DataError(f"outlier pool {spec}: only the default-glyphs* pools draw glyphs (data.glyph_samples)")
    if parsed.kind in ("npy", "imagefolder"):
        return load_pool_file(parsed.kind, Path(parsed.argument), shape, seed=seed, limit=limit)
    raise _unknown("outlier pool spec kind", parsed.kind, POOL_NAMES, POOL_FORMS)


def load_anomalies(name: str, reference: InDistribution, *, n: int, seed: int) -> np.ndarray:
    """n test anomalies shaped like `reference` images: float32 in [0, 1] (synthetic) or uint8 (real sets)."""
    parsed = parse_spec(name)
    shape = reference.shape
    if parsed.kind == "name":
        if parsed.argument in VALIDATION_SET_NAMES:
            return load_validation_anomalies(parsed.argument, reference, n=n, seed=seed)
        if parsed.argument in NOISE_GENERATORS:
            return NOISE_GENERATORS[parsed.argument](shape, n, seed)
        if parsed.argument == "negative":
            return negative_images(reference.test.images, n, seed)
        if parsed.argument in REAL_SET_NAMES:
            return load_real_anomalies(parsed.argument, shape, n=n, seed=seed)
        raise _unknown("anomaly set", parsed.argument, ANOMALY_SET_NAMES, ANOMALY_FORMS)
    if parsed.kind in ("npy", "imagefolder"):
        return load_user_anomalies(parsed.kind, Path(parsed.argument), shape, n=n, seed=seed)
    raise _unknown("anomaly spec kind", parsed.kind, ANOMALY_SET_NAMES, ANOMALY_FORMS)


def anomaly_set_size(name: str, reference: InDistribution) -> int | None:
    """How many distinct images `load_anomalies(name, reference, n=...)` can draw; None when unlimited (noise)."""
    parsed = parse_spec(name)
    if parsed.kind == "name":
        if parsed.argument == "val-heldout-classes":
            return len(reference.held_out_images())
        if parsed.argument in NOISE_GENERATORS or parsed.argument in VALIDATION_SET_NAMES:
            return None
        if parsed.argument == "negative":
            return len(reference.test)
        if parsed.argument in REAL_SET_NAMES:
            return len(real_set_images(parsed.argument))
        raise _unknown("anomaly set", parsed.argument, ANOMALY_SET_NAMES, ANOMALY_FORMS)
    if parsed.kind in ("npy", "imagefolder"):
        return user_set_size(parsed.kind, Path(parsed.argument))
    raise _unknown("anomaly spec kind", parsed.kind, ANOMALY_SET_NAMES, ANOMALY_FORMS)

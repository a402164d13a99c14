"""Real test anomaly sets: different in kind from the OE pool and never used for training or tuning.

| name | source (Debian package) | size |
|---|---|---|
| fashion-mnist | Fashion-MNIST test split, IDX (`dataset-fashion-mnist`) | 10,000 |
| notmnist | letters A-J rendered from `fonts-aenigma` (`rendered_sets.py`) | ~4,600 |
| omniglot | letters of Omniglot's alphabets rendered from `fonts-noto-core` (`rendered_sets.py`) | ~2,200 |

All are 28 x 28 white-on-black uint8, like MNIST. User sets: `npy:PATH` (an `.npy` array, or an `.npz` whose
first array is used; NHW, NHWC or NCHW, uint8 or float in [0, 1]) and `imagefolder:PATH` (every image under
PATH, recursively; mode and size policy of `image_folder.py`).

`n` samples are drawn without replacement with the seed, then fitted to the in-distribution shape
(`convert.fit_to_shape`: channels converted, size resized, so an RGB 32 x 32 reference works too). Asking for
more samples than a set holds is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.base import DataError, MissingPackageError
from training.data.splits import draw
from training.image.anomalies.rendered_sets import RENDERED_SET_NAMES, load_rendered_set
from training.image.convert import check_pixels, fit_to_shape, to_nchw
from training.image.idx import read_idx
from training.image.image_folder import list_images, read_images

FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
REAL_SET_NAMES = ("fashion-mnist", *RENDERED_SET_NAMES)


def real_set_images(name: str) -> np.ndarray:
    """Every image of the named real set, uint8 [N, 1, 28, 28]."""
    if name == "fashion-mnist":
        if not FASHION_MNIST_TEST.is_file():
            raise MissingPackageError(FASHION_MNIST_PACKAGE, str(FASHION_MNIST_TEST), "the 'fashion-mnist' set")
        images = read_idx(FASHION_MNIST_TEST)
        return images[:, None]
    if name in RENDERED_SET_NAMES:
        return load_rendered_set(name).images
    raise DataError(f"no real anomaly set '{name}'; expected one of {', '.join(REAL_SET_NAMES)}")


def _sample_and_fit(images: np.ndarray, shape: tuple[int, int, int], n: int, seed: int, what: str) -> np.ndarray:
    chosen = np.sort(draw(n, len(images), seed, what))
    return fit_to_shape(images[chosen], shape)


def load_real_anomalies(name: str, shape: tuple[int, int, int], *, n: int, seed: int) -> np.ndarray:
    """n seeded samples of a named real set, fitted to `shape` = (C, H, W); uint8."""
    return _sample_and_fit(real_set_images(name), shape, n, seed, f"anomaly set '{name}'")


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"anomaly array {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded as npz:
        if not npz.files:
            raise DataError(f"{path} holds no arrays")
        return np.asarray(npz[npz.files[0]])


def load_user_anomalies(kind: str, path: Path, shape: tuple[int, int, int], *, n: int, seed: int) -> np.ndarray:
    """n seeded samples of a user set (`npy` or `imagefolder`, see module doc), fitted to `shape`."""
    what = f"anomaly set {kind}:{path}"
    if kind == "npy":
        images = check_pixels(to_nchw(_read_array(path), what), what)
    elif kind == "imagefolder":
        if not path.is_dir():
            raise DataError(f"{what}: not a directory")
        paths = list_images(path)
        chosen = np.sort(draw(n, len(paths), seed, what))
        return fit_to_shape(read_images([paths[i] for i in chosen], what), shape)
    else:
        raise DataError(f"{what}: unknown kind '{kind}' (expected npy or imagefolder)")
    return _sample_and_fit(images, shape, n, seed, what)


def user_set_size(kind: str, path: Path) -> int:
    """How many images a user anomaly set (`npy` or `imagefolder`) holds."""
    if kind == "npy":
        return int(_read_array(path).shape[0])
    if kind == "imagefolder":
        return len(list_images(path)) if path.is_dir() else 0
    raise DataError(f"anomaly set {kind}:{path}: unknown kind '{kind}' (expected npy or imagefolder)")

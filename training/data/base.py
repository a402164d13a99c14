"""Types shared by every data loader."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


class DataError(ValueError):
    """A data set could not be loaded: unknown name, missing files, wrong shape. The message says what to do."""


class MissingPackageError(DataError):
    """Data that comes from a Debian package that is not installed."""

    def __init__(self, package: str, path: str, what: str) -> None:
        super().__init__(
            f"{what} needs the Debian package '{package}' ({path} not found): "
            f"run `apt-get install {package}` or `make data` as root"
        )
        self.package = package


@dataclass(frozen=True)
class ImageSet:
    """Images (NCHW, uint8 in [0, 255] or float32 in [0, 1]) and optional int64 labels."""

    images: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


class SealedSplitError(RuntimeError):
    """Code that must not see the test split tried to read it."""


class Sealed:
    """A split whose size is known but whose contents and labels cannot be read: the test split as the training
    pipeline holds it. Every choice before `python -m training evaluate` is made without test data; this makes
    that a property of the code rather than a promise. Mixed into a split type before it (`SealedImageSet`,
    `SealedTextSet`), which then refuses its contents with `refuse()`."""

    _size: int
    _what: str

    def __init__(self, size: int, what: str) -> None:  # no super().__init__: the fields stay unset on purpose
        object.__setattr__(self, "_size", size)
        object.__setattr__(self, "_what", what)

    def refuse(self) -> SealedSplitError:
        return SealedSplitError(
            f"the {self._what} is sealed: it is read once, by `python -m training evaluate`, never while training, "
            "calibrating or choosing anything"
        )

    @property
    def labels(self) -> np.ndarray | None:
        raise self.refuse()

    def __len__(self) -> int:
        return int(self._size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self._size})"


class SealedImageSet(Sealed, ImageSet):  # `labels`: a refusing property over the dataclass field
    """The sealed twin of ImageSet."""

    @property
    def images(self) -> np.ndarray:
        raise self.refuse()


NO_HELD_OUT_CLASSES = "val-heldout-classes needs classes held out of training: set data.held_out_classes"


@dataclass(frozen=True)
class InDistribution:
    """An in-distribution data set split three ways. `val` is never trained on: it tunes temperature and threshold."""

    name: str
    class_names: tuple[str, ...]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    description: str
    held_out: np.ndarray | None = None
    """Train and val images of the classes held out of every split (`hold_out_classes`), uint8 or float NCHW: the
    `val-heldout-classes` validation set. None unless classes were held out."""

    def held_out_images(self) -> np.ndarray:
        """`held_out`, or a DataError naming the setting that makes it (`NO_HELD_OUT_CLASSES`)."""
        if self.held_out is None or not len(self.held_out):
            raise DataError(NO_HELD_OUT_CLASSES)
        return self.held_out

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sealed(self) -> InDistribution:
        """The same data with the test split sealed (readable size, unreadable images and labels)."""
        return replace(self, test=SealedImageSet(len(self.test), f"test split of {self.name}"))


def hold_out_classes(data: InDistribution, names: Sequence[str]) -> InDistribution:
    """`data` without the named classes: they leave train, val and test (labels renumbered in the order of the kept
    class names), and their train and val images become `held_out`, the `val-heldout-classes` validation set (the
    test split's are dropped, unread). Call it before sealing. No names: `data` unchanged."""
    if not names:
        return data
    unknown = sorted(set(names) - set(data.class_names))
    if unknown:
        raise DataError(f"{data.name}: held-out class(es) {', '.join(unknown)} are not classes; {data.class_names}")
    held = [data.class_names.index(name) for name in names]
    kept = [i for i in range(len(data.class_names)) if i not in held]
    if len(kept) < 2:
        raise DataError(f"{data.name}: holding out {list(names)} leaves fewer than two classes")
    renumber = np.full(len(data.class_names), -1, np.int64)
    renumber[kept] = np.arange(len(kept))

    def without(split: ImageSet, what: str) -> ImageSet:
        if split.labels is None:
            raise DataError(f"{data.name}: classes can only be held out of labelled data ({what} has no labels)")
        keep = ~np.isin(split.labels, held)
        return ImageSet(split.images[keep], renumber[split.labels[keep]])

    images = [s.images[np.isin(s.labels, held)] for s in (data.train, data.val) if s.labels is not None]
    return replace(
        data,
        class_names=tuple(data.class_names[i] for i in kept),
        train=without(data.train, "train"),
        val=without(data.val, "val"),
        test=without(data.test, "test"),
        description=f"{data.description} (classes {', '.join(names)} held out)",
        held_out=np.concatenate(images),
    )


def as_float(images: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: uint8 images are divided by 255, float images are passed through (after a range check)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    out = images.astype(np.float32, copy=False)
    if out.size and (float(out.min()) < 0.0 or float(out.max()) > 1.0):
        raise DataError(f"float images must lie in [0, 1], got [{out.min():.3g}, {out.max():.3g}]")
    return out

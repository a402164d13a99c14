"""Where the default OE outlier pool's images come from, and which of them are kept.

- `openclipart-png` (Debian): ~8,000 clip-art PNGs under /usr/share/openclipart/png, minus `computer/icons` (1,853
  near-identical UI icons) and `signs_and_symbols/flags` (551 flags: rectangles of flat color), with the
  near-duplicate `shapes/stars` thinned to every 5th file, and 2 "Linked Image Not Found" placeholders dropped;
  symlinked copies are counted once.
- `arcade` (PyPI wheel, installed with --no-deps and never imported): the game sprites under
  `arcade/resources/assets/images`, minus `cards` (playing cards carry digits, which are in-distribution for MNIST).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training.data.base import MissingPackageError
from training.data.wheels import wheel_file

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
OPENCLIPART_PACKAGE = "openclipart-png"
OPENCLIPART_DROPPED = ("computer/icons", "signs_and_symbols/flags")
OPENCLIPART_THINNED = {"shapes/stars": 5}  # folder: keep every k-th file
# Renders of SVGs whose linked bitmap was missing: a "Linked Image Not Found" placeholder (text) instead of art.
OPENCLIPART_BROKEN = ("animals/birds/duck_yellow_ii_kurt_cagl_.png", "animals/birds/penguin/tux_didier_fabert_01.png")
ARCADE_IMAGES = ("arcade", "resources/assets/images", "arcade")
ARCADE_DROPPED = ("cards",)


@dataclass(frozen=True)
class PoolSource:
    """A named group of source image files for the outlier pool."""

    name: str
    files: tuple[Path, ...]


def _under(relative: str, folders: tuple[str, ...] | list[str]) -> bool:
    return any(relative == folder or relative.startswith(f"{folder}/") for folder in folders)


def openclipart_files(root: Path | None = None) -> list[Path]:
    """The kept openclipart PNGs (see module doc), sorted; MissingPackageError if the package is absent."""
    base = root or OPENCLIPART_DIR
    if not base.is_dir():
        raise MissingPackageError(OPENCLIPART_PACKAGE, str(base), "the default OE outlier pool")
    kept: list[Path] = []
    seen: set[str] = set()
    broken = {os.path.realpath(base / relative) for relative in OPENCLIPART_BROKEN}
    thinned_counts = dict.fromkeys(OPENCLIPART_THINNED, 0)
    for path in sorted(base.rglob("*.png")):
        relative = path.relative_to(base).as_posix()
        if _under(relative, OPENCLIPART_DROPPED):
            continue
        thinning = [folder for folder in OPENCLIPART_THINNED if _under(relative, [folder])]
        if thinning:
            folder = thinning[0]
            thinned_counts[folder] += 1
            if (thinned_counts[folder] - 1) % OPENCLIPART_THINNED[folder]:
                continue
        real = os.path.realpath(path)
        if real in seen or real in broken:
            continue
        seen.add(real)
        kept.append(path)
    return kept


def arcade_files() -> list[Path]:
    """The kept arcade sprite PNGs, sorted; DataError naming the wheel if it is not installed."""
    images = wheel_file(*ARCADE_IMAGES)
    return sorted(
        path for path in images.rglob("*.png") if not _under(path.relative_to(images).as_posix(), ARCADE_DROPPED)
    )


def default_sources() -> list[PoolSource]:
    """The default pool's sources: openclipart, then arcade."""
    return [PoolSource("openclipart", tuple(openclipart_files())), PoolSource("arcade", tuple(arcade_files()))]

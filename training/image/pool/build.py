"""The Outlier Exposure pool D_out^OE: many diverse natural images, none in-distribution (OE paper, Sec. 4.2.1).

The paper draws on 80 Million Tiny Images / 300K Random Images; we build the same kind of pool offline from
clip art and game sprites (`pool_sources.py`). Each source image yields `per_image` samples:

1. cropped to its visible (non-transparent) content; transparency composited onto white (p = 1/2) or a uniform
   random gray, then converted to the target channels;
2. a view, by recipe. `crops` (the default): a random square crop whose side is U(0.35, 1) of the image's
   shorter side, resized to (H, W), the paper's kind of pool (random natural-image patches). `mixed`: that crop
   (p = 1/2); the whole picture shrunk into a box of U(0.5, 1) of (H, W) at a random place on a flat background
   (p = 1/4); or the crop's outline, its edges thickened and drawn light on dark (p = 1/4). The recipe is chosen on
   validation anomaly sets and leave-one-source-out runs only (reports/mnist/report.md);
3. a horizontal flip with p = 1/2 and an inversion x -> 255 - x with p = 1/2 (so both polarities appear, as
   clip art is dark-on-light and MNIST light-on-dark);
4. samples that are almost flat (pixel std < 6 gray levels) are redrawn, up to 4 tries, then dropped.

Image i is processed with its own generator seeded by (seed, i), so the pool depends only on the seed and the
source list, not on the number of worker processes. Unreadable or fully transparent files are skipped and counted.

The default pool is cached as `oe-pool-{C}x{H}x{W}.npz` (`oe-pool-{C}x{H}x{W}-mixed.npz` for the other recipe) in
the data cache (`cache.py`), with the LOSO group of every sample (`pool_sources.py`); build it with `make data` /
`python -m training data build-pool`.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from training.data.base import DataError
from training.data.cache import data_cache_dir, load_npz_checked, save_npz_atomic
from training.data.splits import draw
from training.image.convert import check_pixels, fit_to_shape, flatten_alpha, image_to_chw, to_nchw
from training.image.image_folder import list_images
from training.image.pool.fontglyphs import ALL_GROUPS as ALL_GLYPH_SCRIPT_GROUPS
from training.image.pool.fontglyphs import GROUPS as GLYPH_SCRIPT_GROUPS
from training.image.pool.fontglyphs import HELD_OUT_SCRIPT as GLYPH_HELD_OUT_SCRIPT
from training.image.pool.fontglyphs import font_glyphs
from training.image.pool.scribbles import scribbles
from training.image.pool.sources import PoolSource, default_sources

Shape = tuple[int, int, int]
logger = logging.getLogger(__name__)
DEFAULT_SHAPE: Shape = (1, 28, 28)
DEFAULT_PER_IMAGE = 12
CROP_SCALE = (0.35, 1.0)
MIN_STD = 6.0
TRIES = 4
POOL_FORMAT = 3  # bumped whenever the recipe changes, so a pool cached by an older recipe is rebuilt
RECIPES = ("crops", "mixed")
DEFAULT_RECIPE = "crops"
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, UnidentifiedImageError, Image.DecompressionBombError)


def pool_path(shape: Shape, recipe: str = DEFAULT_RECIPE) -> Path:
    """The cache file of the default pool for images of `shape`."""
    channels, height, width = shape
    suffix = "" if recipe == DEFAULT_RECIPE else f"-{recipe}"
    return data_cache_dir() / f"oe-pool-{channels}x{height}x{width}{suffix}.npz"


def open_rgba(path: Path, work_side: int) -> Image.Image | None:
    """The image as RGBA, cropped to its visible content and shrunk so its longer side is at most `work_side`;
    None if it cannot be decoded or is fully transparent."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # clip art is trusted; some files are huge
    try:
        with warnings.catch_warnings():
            # PIL warns about odd palette transparency in some clip art; flatten_alpha handles it.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as image:
                image.load()
                rgba = image.convert("RGBA")
        content = rgba.getchannel("A").getbbox()  # many clip-art PNGs are mostly empty pages
        if content is None:
            return None
        rgba = rgba.crop(content)
        rgba.thumbnail((work_side, work_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return rgba
    except DECODE_ERRORS:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


BILINEAR = Image.Resampling.BILINEAR


def _outline(crop: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The crop's edges at twice the target size, thickened by a 3x3 max filter, contrast-stretched, then shrunk:
    light strokes about 1.5 px wide on a dark ground."""
    double = crop.resize((2 * size[0], 2 * size[1]), BILINEAR)
    # No border padding: where content meets the crop's border the edge filter draws a frame line too, one more
    # kind of straight stroke. (The committed models were trained on exactly this recipe; changing it needs a
    # POOL_FORMAT bump and retraining.)
    edges = double.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3))
    return ImageOps.autocontrast(edges).resize(size, BILINEAR)


def _placed(
    picture: Image.Image, size: tuple[int, int], scale: float, rng: np.random.Generator, background: int
) -> Image.Image:
    """`picture` shrunk (aspect kept) into scale * size and pasted at a random place on a flat background."""
    box = (max(1, round(scale * size[0])), max(1, round(scale * size[1])))
    shrunk = picture.copy()
    shrunk.thumbnail(box, BILINEAR)
    canvas = Image.new(picture.mode, size, (background,) * len(picture.getbands()))
    left = int(rng.integers(0, size[0] - shrunk.size[0] + 1))
    top = int(rng.integers(0, size[1] - shrunk.size[1] + 1))
    canvas.paste(shrunk, (left, top))
    return canvas


def samples_from_image(
    path: Path, index: int, *, shape: Shape, per_image: int, seed: int, recipe: str = DEFAULT_RECIPE
) -> np.ndarray | None:
    """Up to `per_image` uint8 [k, C, H, W] samples from one source image (steps in the module doc); None if
    the file cannot be read."""
    channels, height, width = shape
    rgba = open_rgba(path, max(128, 4 * max(height, width)))
    if rgba is None:
        return None
    rng = np.random.default_rng([seed, index])
    mode = "L" if channels == 1 else "RGB"
    samples = []
    for _ in range(per_image):
        for _ in range(TRIES):
            background = 255 if rng.random() < 0.5 else int(rng.integers(0, 256))
            flat = flatten_alpha(rgba, background).convert(mode)
            view = rng.random() * 0.5 if recipe == "crops" else rng.random()
            if view < 0.75:
                side = max(1, round(rng.uniform(*CROP_SCALE) * min(flat.size)))
                left = int(rng.integers(0, flat.size[0] - side + 1))
                top = int(rng.integers(0, flat.size[1] - side + 1))
                crop = flat.crop((left, top, left + side, top + side))
                picture = _outline(crop, (width, height)) if view >= 0.5 else crop.resize((width, height), BILINEAR)
            else:
                picture = _placed(flat, (width, height), rng.uniform(0.5, 1.0), rng, background)
            sample = image_to_chw(picture)
            if rng.random() < 0.5:
                sample = sample[:, :, ::-1]
            if rng.random() < 0.5:
                sample = 255 - sample
            if float(sample.std()) >= MIN_STD:
                samples.append(np.ascontiguousarray(sample))
                break
    return np.stack(samples) if samples else np.zeros((0, *shape), np.uint8)


def _sample_task(task: tuple[int, Path], shape: Shape, per_image: int, seed: int, recipe: str) -> np.ndarray | None:
    index, path = task
    return samples_from_image(path, index, shape=shape, per_image=per_image, seed=seed, recipe=recipe)


def _run_tasks(
    tasks: list[tuple[int, Path]], shape: Shape, per_image: int, seed: int, workers: int, recipe: str
) -> Iterator[np.ndarray | None]:
    """Results in task order, computed here or in `workers` processes."""
    work = functools.partial(_sample_task, shape=shape, per_image=per_image, seed=seed, recipe=recipe)
    if workers <= 1:
        yield from map(work, tasks)
        return
    # spawn, not fork: the caller may hold torch/OpenMP threads that a fork would copy in a locked state.
    # An executor (unlike multiprocessing.Pool) raises BrokenProcessPool instead of hanging if a worker dies,
    # e.g. when a script without an `if __name__ == "__main__":` guard calls this.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
        yield from executor.map(work, tasks, chunksize=8)


def build_outlier_pool(
    shape: Shape,
    *,
    per_image: int,
    seed: int,
    sources: Sequence[Path],
    limit_sources: int | None = None,
    workers: int = 1,
    progress: bool = False,
    recipe: str = DEFAULT_RECIPE,
) -> tuple[np.ndarray, int]:
    """(pool uint8 [N, C, H, W], number of unreadable files skipped) from `sources` (steps in the module doc).

    `limit_sources` keeps a seeded random subset of that many source files (in their original order).
    `workers` > 1 spawns processes, so a calling script needs the `if __name__ == "__main__":` guard
    (`python -m training` is fine); without it the workers fail and BrokenProcessPool is raised.
    """
    pool, _, skipped = _build(shape, per_image, seed, list(sources), limit_sources, workers, progress, recipe)
    return pool, skipped


def _build(
    shape: Shape, per_image: int, seed: int, files: list[Path], limit_sources: int | None, workers: int,
    progress: bool, recipe: str,
) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """(pool, index into `files` of each sample's source, skipped files)."""
    if recipe not in RECIPES:
        raise DataError(f"unknown pool recipe '{recipe}'; expected one of {', '.join(RECIPES)}")
    chosen = np.arange(len(files))
    if limit_sources is not None and limit_sources < len(files):
        chosen = np.sort(draw(limit_sources, len(files), seed, "pool sources"))
    tasks = [(int(i), files[i]) for i in chosen]
    results: Iterable[np.ndarray | None] = _run_tasks(tasks, shape, per_image, seed, workers, recipe)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(tasks), desc="OE pool", unit="image")
    chunks, origins, skipped = [], [], 0
    for (file_index, _), result in zip(tasks, results, strict=True):
        if result is None:
            skipped += 1
        else:
            chunks.append(result)
            origins.append(np.full(len(result), file_index, dtype=np.int64))
    if skipped:
        logger.info("OE pool: skipped %d unreadable source files", skipped)
    pool = np.concatenate(chunks) if chunks else np.zeros((0, *shape), np.uint8)
    origin = np.concatenate(origins) if origins else np.zeros(0, np.int64)
    return pool, origin, skipped


def build_default_pool(
    shape: Shape = DEFAULT_SHAPE,
    out: Path | None = None,
    *,
    per_image: int = DEFAULT_PER_IMAGE,
    seed: int = 0,
    limit_sources: int | None = None,
    workers: int = 2,
    progress: bool = True,
    recipe: str = DEFAULT_RECIPE,
) -> Path:
    """Build the default pool from openclipart + arcade and write it atomically with a manifest; returns the path.

    `out` defaults to `pool_path(shape, recipe)` in the data cache, where `load_outlier_pool("default", shape)`
    looks. Every sample carries its source group (`groups`, an index into the manifest's `groups` names).
    """
    started = time.monotonic()
    sources: list[PoolSource] = default_sources()
    files = [path for source in sources for path in source.files]
    file_group = np.concatenate([np.full(len(source.files), g, np.int64) for g, source in enumerate(sources)])
    pool, origin, skipped = _build(shape, per_image, seed, files, limit_sources, workers, progress, recipe)
    if len(pool) == 0:
        raise DataError("the OE pool came out empty: no source image could be read")
    groups = file_group[origin].astype(np.int16)
    target = out or pool_path(shape, recipe)
    manifest = {
        "format": POOL_FORMAT,
        "recipe": recipe,
        "shape": list(shape),
        "samples": len(pool),
        "seed": seed,
        "per_image": per_image,
        "limit_sources": limit_sources,
        "groups": [source.name for source in sources],
        "sources": {source.name: len(source.files) for source in sources},
        "group_samples": {source.name: int(np.sum(groups == g)) for g, source in enumerate(sources)},
        "skipped": skipped,
        "pillow": PIL.__version__,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    save_npz_atomic(target, {"images": pool, "groups": groups}, manifest)
    logger.info("OE pool: %d samples of %s written to %s", len(pool), shape, target)
    return target


def full_view(path: Path, shape: Shape) -> np.ndarray | None:
    """The whole picture composited on white and resized to `shape` (uint8 CHW); None if unreadable."""
    rgba = open_rgba(path, 4 * max(shape[1:]))
    if rgba is None:
        return None
    flat = flatten_alpha(rgba, 255).convert("L" if shape[0] == 1 else "RGB")
    return image_to_chw(flat.resize((shape[2], shape[1]), Image.Resampling.BILINEAR))


def load_pool_file(kind: str, path: Path, shape: Shape, *, seed: int, limit: int | None) -> np.ndarray:
    """A user pool: `npy` (an array file, fitted to `shape`) or `imagefolder` (every image under `path`,
    recursively, composited onto white and resized whole to `shape`); uint8, optionally a seeded subset."""
    what = f"outlier pool {kind}:{path}"
    if kind == "npy":
        if not path.is_file():
            raise DataError(f"{what}: file not found")
        loaded = np.load(path, allow_pickle=False)
        array = loaded if isinstance(loaded, np.ndarray) else loaded[loaded.files[0]]
        images = check_pixels(to_nchw(array, what), what)
        if images.dtype != np.uint8:
            images = np.round(images * 255.0).astype(np.uint8)
        if limit is not None and limit < len(images):
            images = images[np.sort(draw(limit, len(images), seed, what))]
        return fit_to_shape(images, shape)
    if kind == "imagefolder":
        files = list_images(path) if path.is_dir() else []
        if not files:
            raise DataError(f"{what}: no image files found")
        if limit is not None and limit < len(files):
            files = [files[i] for i in np.sort(draw(limit, len(files), seed, what))]
        views = [view for view in (full_view(file, shape) for file in files) if view is not None]
        if not views:
            raise DataError(f"{what}: none of {len(files)} image files could be read")
        return np.stack(views)
    raise DataError(f"{what}: unknown kind '{kind}' (expected npy or imagefolder)")


SCRIBBLES_GROUP = "scribbles"
GLYPHS_GROUP = "glyphs"
GLYPHS_HELD_OUT_GROUP = f"glyphs-no-{GLYPH_HELD_OUT_SCRIPT}"
WIDE_GLYPHS_GROUP = "glyphs-wide"
WIDE_GLYPHS_HELD_OUT_GROUP = f"glyphs-wide-no-{GLYPH_HELD_OUT_SCRIPT}"
PRINTED_GROUP = "printed-wide"
PRINTED_HELD_OUT_GROUP = f"printed-wide-no-{GLYPH_HELD_OUT_SCRIPT}"
SCRIBBLE_SAMPLES = 6000  # about the size of one clip-art group (49,104 samples in 12 groups)
GLYPH_SAMPLES = 6000  # the same
WIDE_GLYPH_SAMPLES = 12000  # nineteen script groups: about 630 glyphs each
PRINTED_SAMPLES = 12000  # printed glyphs of the nineteen script groups
DRAWN_SHAPE = (1, 28, 28)
DRAWN_SEED = 0  # fixed sets, as the cached clip-art pool is built with seed 0
# Groups drawn at load time (no source pictures), appended to a recipe as `RECIPE+NAME[+NAME]`. Each takes the
# glyph count asked for (`data.glyph_samples`; None: the group's default), which the scribbles and the printed
# glyphs ignore.
DRAWN_GROUPS: dict[str, Callable[[int | None], np.ndarray]] = {
    SCRIBBLES_GROUP: lambda _: scribbles(SCRIBBLE_SAMPLES, DRAWN_SEED),
    GLYPHS_GROUP: lambda n: font_glyphs(n or GLYPH_SAMPLES, DRAWN_SEED),
    # The glyph group without one script, so that script can be scored as glyphs of a kind OE never saw.
    GLYPHS_HELD_OUT_GROUP: lambda n: font_glyphs(
        n or GLYPH_SAMPLES, DRAWN_SEED, [g.name for g in GLYPH_SCRIPT_GROUPS if g.name != GLYPH_HELD_OUT_SCRIPT]
    ),
    # Every script group, the first five and the fourteen of the wider source, twice the glyphs; and without Cyrillic.
    WIDE_GLYPHS_GROUP: lambda n: font_glyphs(
        n or WIDE_GLYPH_SAMPLES, DRAWN_SEED, [g.name for g in ALL_GLYPH_SCRIPT_GROUPS]
    ),
    WIDE_GLYPHS_HELD_OUT_GROUP: lambda n: font_glyphs(
        n or WIDE_GLYPH_SAMPLES,
        DRAWN_SEED,
        [g.name for g in ALL_GLYPH_SCRIPT_GROUPS if g.name != GLYPH_HELD_OUT_SCRIPT],
    ),
    # The same nineteen script groups printed: upright, in their fonts' own faces and weights; and without Cyrillic.
    PRINTED_GROUP: lambda _: font_glyphs(
        PRINTED_SAMPLES, DRAWN_SEED, [g.name for g in ALL_GLYPH_SCRIPT_GROUPS], style="printed"
    ),
    PRINTED_HELD_OUT_GROUP: lambda _: font_glyphs(
        PRINTED_SAMPLES,
        DRAWN_SEED,
        [g.name for g in ALL_GLYPH_SCRIPT_GROUPS if g.name != GLYPH_HELD_OUT_SCRIPT],
        style="printed",
    ),
}


def load_default_pool_groups(
    shape: Shape, recipe: str = DEFAULT_RECIPE, glyph_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, group index per image, group names) of the cached default pool; DataError saying how to build it
    when it is missing or stale. `RECIPE+scribbles` appends the drawn pen strokes (`scribbles.py`) as one more group,
    `+glyphs` the drawn font glyphs (`fontglyphs.py`); `RECIPE+scribbles+glyphs` both, in that order;
    `+glyphs-no-cyrillic` as many glyphs drawn from every script group but Cyrillic (scored by
    `val-glyphs-cyrillic`); `+glyphs-wide` twice as many from the nineteen script groups of the wider source,
    `+glyphs-wide-no-cyrillic` the same without Cyrillic; `+printed-wide` (and `-no-cyrillic`) 12,000 of those
    glyphs printed, as type (scored by `val-printed-cyrillic`). `glyph_samples` draws that many hand-drawn glyphs
    instead."""
    base, _, extra = recipe.partition("+")
    path = pool_path(shape, base)
    if not path.is_file():
        channels, height, width = shape
        raise DataError(
            f"the default OE outlier pool for shape {shape} is not built ({path} missing): run `make data` or "
            f"`python -m training data build-pool --recipe {base}` (shape {channels}x{height}x{width})"
        )
    arrays, manifest = load_npz_checked(path)
    if manifest.get("format") != POOL_FORMAT:
        raise DataError(
            f"{path} was built by an older pool recipe (format {manifest.get('format')}, now {POOL_FORMAT}): "
            "rebuild it with `make data` or `python -m training data build-pool`"
        )
    images, groups, names = arrays["images"], arrays["groups"], list(manifest["groups"])
    drawn_groups = extra.split("+") if extra else []
    if glyph_samples is not None and not any(group.startswith(GLYPHS_GROUP) for group in drawn_groups):
        raise DataError(f"data.glyph_samples is set, but pool recipe {recipe!r} draws no glyphs")
    for group in drawn_groups:
        if group not in DRAWN_GROUPS:
            raise DataError(f"unknown pool recipe {recipe!r}")
        if tuple(shape) != DRAWN_SHAPE:
            raise DataError(
                f"the {group} group is drawn for 28 x 28 grayscale models, not shape {shape}: use `default-mixed`"
            )
        drawn = DRAWN_GROUPS[group](glyph_samples)
        images = np.concatenate([images, drawn])
        groups = np.concatenate([groups, np.full(len(drawn), len(names), dtype=groups.dtype)])
        names = [*names, group]
    return images, groups, names


def load_default_pool(
    shape: Shape,
    *,
    seed: int,
    limit: int | None,
    exclude: Sequence[str] = (),
    recipe: str = DEFAULT_RECIPE,
    glyph_samples: int | None = None,
) -> np.ndarray:
    """The cached default pool for `shape`, minus the `exclude`d source groups (LOSO), optionally a seeded subset."""
    images, groups, names = load_default_pool_groups(shape, recipe, glyph_samples)
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise DataError(f"unknown outlier pool group(s) {', '.join(unknown)}; groups: {', '.join(names)}")
    if exclude:
        images = images[~np.isin(groups, [names.index(name) for name in exclude])]
    if limit is not None and limit < len(images):
        images = images[np.sort(draw(limit, len(images), seed, "default outlier pool"))]
    return images

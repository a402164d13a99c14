"""The OE outlier pool: source selection, the builder, the cache file and user pools."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from training.data.base import DataError
from training.data.cache import load_npz_checked
from training.data.registry import load_outlier_pool
from training.image.pool import build as pool_module
from training.image.pool import sources as pool_sources
from training.image.pool.build import MIN_STD, build_default_pool, build_outlier_pool, pool_path
from training.image.pool.scribbles import scribbles
from training.image.pool.sources import PoolSource, arcade_files, openclipart_files

WritePng = Callable[..., Path]
SHAPE = (1, 28, 28)


def _disc(size: int = 64, margin: int = 8) -> np.ndarray:
    """RGBA: a dark disc with a light ring on a transparent page that is mostly empty margin."""
    rows, cols = np.indices((size, size))
    radius = np.hypot(rows - size / 2, cols - size / 2)
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # hidden red under transparency must never show
    inside = radius < size / 2 - margin
    rgba[inside] = (20, 20, 20, 255)
    rgba[inside & (radius > size / 4)] = (230, 230, 230, 255)
    return rgba


@pytest.fixture
def sources(tmp_path: Path, write_png: WritePng) -> list[Path]:
    rng = np.random.default_rng(0)
    files = [
        write_png(tmp_path / "src" / "a_disc.png", _disc()),
        write_png(tmp_path / "src" / "b_palette.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), "P"),
        write_png(tmp_path / "src" / "c_gray.png", rng.integers(0, 256, (30, 30), dtype=np.uint8)),
        write_png(tmp_path / "src" / "d_rgb.png", rng.integers(0, 256, (50, 20, 3), dtype=np.uint8)),
        write_png(tmp_path / "src" / "e_empty.png", np.zeros((16, 16, 4), dtype=np.uint8)),  # fully transparent
    ]
    broken = tmp_path / "src" / "f_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return [*files, broken]


def test_builder_skips_unreadable_and_empty_files(sources: list[Path]) -> None:
    pool, skipped = build_outlier_pool(SHAPE, per_image=5, seed=0, sources=sources)
    assert skipped == 2
    assert pool.dtype == np.uint8 and pool.shape[1:] == SHAPE
    assert 4 * 3 <= len(pool) <= 4 * 5  # flat crops are redrawn, rarely dropped
    assert min(float(sample.std()) for sample in pool) >= MIN_STD
    again, _ = build_outlier_pool(SHAPE, per_image=5, seed=0, sources=sources)
    other, _ = build_outlier_pool(SHAPE, per_image=5, seed=1, sources=sources)
    assert np.array_equal(pool, again)
    assert not np.array_equal(pool[: len(other)], other[: len(pool)])


def test_transparency_is_cropped_and_composited(tmp_path: Path, write_png: WritePng) -> None:
    page = np.zeros((80, 80, 4), dtype=np.uint8)
    page[..., 0] = 255  # hidden red under transparency must never show
    page[20:60, 10:70] = (20, 20, 20, 255)
    page[30:50, 20:40] = (230, 230, 230, 255)
    path = write_png(tmp_path / "page.png", page)
    rgba = pool_module.open_rgba(path, 512)
    assert rgba is not None and rgba.size == (60, 40)  # the empty margin is cropped away
    pool, _ = build_outlier_pool((3, 16, 16), per_image=12, seed=0, sources=[write_png(tmp_path / "d.png", _disc())])
    channels_equal = (pool[:, 0] == pool[:, 1]) & (pool[:, 1] == pool[:, 2])
    assert bool(channels_equal.all())  # the hidden red never shows through: every pixel stays gray


def test_limit_sources_takes_a_seeded_subset(sources: list[Path]) -> None:
    readable = sources[:4]
    one, _ = build_outlier_pool(SHAPE, per_image=3, seed=0, sources=readable, limit_sources=2)
    assert len(one) <= 6
    again, _ = build_outlier_pool(SHAPE, per_image=3, seed=0, sources=readable, limit_sources=2)
    assert np.array_equal(one, again)


def test_two_workers_give_the_same_pool(sources: list[Path]) -> None:
    serial, _ = build_outlier_pool(SHAPE, per_image=2, seed=0, sources=sources[:3], workers=1)
    parallel, _ = build_outlier_pool(SHAPE, per_image=2, seed=0, sources=sources[:3], workers=2)
    assert np.array_equal(serial, parallel)


def test_default_pool_cache_round_trip(
    sources: list[Path], monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    fake = [PoolSource("clipart", tuple(sources[:3])), PoolSource("sprites", tuple(sources[3:]))]
    monkeypatch.setattr(pool_module, "default_sources", lambda: fake)
    path = build_default_pool((1, 12, 10), per_image=4, seed=3, workers=1, progress=False)
    assert path == pool_path((1, 12, 10)) == private_cache / "oe-pool-1x12x10.npz"
    assert not [name for name in os.listdir(private_cache) if name.endswith(".tmp")]
    arrays, manifest = load_npz_checked(path)
    assert manifest["sources"] == {"clipart": 3, "sprites": 3}
    assert (manifest["seed"], manifest["per_image"], manifest["skipped"]) == (3, 4, 2)
    assert manifest["samples"] == len(arrays["images"]) and len(manifest["sha256"]) == 64
    loaded = load_outlier_pool("default", (1, 12, 10))
    assert np.array_equal(loaded, arrays["images"])
    subset = load_outlier_pool("default", (1, 12, 10), limit=3, seed=0)
    assert len(subset) == 3 and all(any(np.array_equal(s, x) for x in loaded) for s in subset)

    # Every sample carries its source group; excluding a group drops exactly its samples.
    assert manifest["groups"] == ["clipart", "sprites"] and manifest["recipe"] == "crops"
    groups = arrays["groups"]
    assert sorted(set(groups.tolist())) == [0, 1]
    assert manifest["group_samples"] == {"clipart": int(np.sum(groups == 0)), "sprites": int(np.sum(groups == 1))}
    without_sprites = load_outlier_pool("default", (1, 12, 10), exclude=["sprites"])
    assert np.array_equal(without_sprites, arrays["images"][groups == 0])
    with pytest.raises(DataError, match="unknown outlier pool group"):
        load_outlier_pool("default", (1, 12, 10), exclude=["cliparts"])
    with pytest.raises(DataError, match="not built"):  # the other recipe has its own cache file
        load_outlier_pool("default-mixed", (1, 12, 10))

    # A pool cached by an older recipe is refused, with the command that rebuilds it.
    monkeypatch.setattr(pool_module, "POOL_FORMAT", pool_module.POOL_FORMAT + 1)
    with pytest.raises(DataError, match=r"older pool recipe.*build-pool"):
        load_outlier_pool("default", (1, 12, 10))


def test_placed_view_keeps_aspect_on_a_flat_background() -> None:
    from PIL import Image

    white = Image.new("L", (20, 10), 255)
    placed = np.asarray(pool_module._placed(white, (28, 28), 0.5, np.random.default_rng(0), background=0))
    assert placed.shape == (28, 28)
    rows, cols = np.nonzero(placed == 255)
    assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (7, 14)  # 20x10 shrunk into 14x14, aspect kept
    assert int((placed == 255).sum()) == 7 * 14 and int((placed == 0).sum()) == 28 * 28 - 7 * 14


def test_outline_view_draws_the_edge_light_on_dark() -> None:
    from PIL import Image

    half = np.zeros((40, 40), dtype=np.uint8)
    half[:, 20:] = 255
    outline = np.asarray(pool_module._outline(Image.fromarray(half), (28, 28)))
    # The step between the halves becomes one light vertical stroke; the dark half stays dark; where the light
    # half meets the image border a frame line is drawn too (documented in _outline).
    assert outline[5:-5, 13:16].max() >= 200
    assert outline[:, :12].max() == 0
    assert outline[5:-5, 17:25].max() == 0 and outline[0, 17:26].min() > 127
    assert int((outline > 127).sum()) < 28 * 28 // 4  # strokes, not the filled half


def test_user_pools(tmp_path: Path, write_png: WritePng) -> None:
    floats = np.random.default_rng(0).random((9, 8, 8)).astype(np.float32)
    np.save(tmp_path / "pool.npy", floats)
    pool = load_outlier_pool(f"npy:{tmp_path / 'pool.npy'}", (3, 4, 4))
    assert pool.shape == (9, 3, 4, 4) and pool.dtype == np.uint8
    assert load_outlier_pool(f"npy:{tmp_path / 'pool.npy'}", (1, 8, 8), limit=4).shape == (4, 1, 8, 8)
    write_png(tmp_path / "imgs" / "a.png", np.zeros((10, 10), dtype=np.uint8))
    write_png(tmp_path / "imgs" / "deep" / "b.png", np.full((6, 12, 3), 255, dtype=np.uint8))
    folder = load_outlier_pool(f"imagefolder:{tmp_path / 'imgs'}", (1, 5, 5))
    assert folder.shape == (2, 1, 5, 5)
    assert sorted(int(image.max()) for image in folder) == [0, 255]
    with pytest.raises(DataError, match="no image files found"):
        load_outlier_pool(f"imagefolder:{tmp_path / 'nothing'}", SHAPE)


def test_openclipart_selection(tmp_path: Path, write_png: WritePng) -> None:
    pixel = np.zeros((2, 2), dtype=np.uint8)
    for relative in ("computer/icons/x.png", "signs_and_symbols/flags/fr.png", "animals/cat.png"):
        write_png(tmp_path / relative, pixel)
    for i in range(10):
        write_png(tmp_path / "shapes" / "stars" / f"s{i}.png", pixel)
    (tmp_path / "people").mkdir()
    (tmp_path / "people" / "cat_copy.png").symlink_to(tmp_path / "animals" / "cat.png")
    kept = [path.relative_to(tmp_path).as_posix() for path in openclipart_files(tmp_path)]
    assert kept == ["animals/cat.png", "shapes/stars/s0.png", "shapes/stars/s5.png"]


def test_arcade_sprites_without_cards_or_glyph_sheets() -> None:
    files = arcade_files()
    assert len(files) > 300
    assert not [path for path in files if "/cards/" in path.as_posix()]
    names = {path.name for path in files}
    assert not names & {"number_sheet.png", "codepage_437.png"}  # digits and a bitmap font: in-distribution
    assert "explosion.png" in names


def test_crops_recipe_draws_only_crops_and_mixed_adds_outlines_and_placed_views(
    sources: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"outline": 0, "placed": 0}
    real_outline, real_placed = pool_module._outline, pool_module._placed

    def outline(*args: object) -> object:
        calls["outline"] += 1
        return real_outline(*args)  # type: ignore[arg-type]

    def placed(*args: object) -> object:
        calls["placed"] += 1
        return real_placed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pool_module, "_outline", outline)
    monkeypatch.setattr(pool_module, "_placed", placed)
    build_outlier_pool(SHAPE, per_image=40, seed=0, sources=sources[:2], recipe="crops")
    assert calls == {"outline": 0, "placed": 0}
    build_outlier_pool(SHAPE, per_image=40, seed=0, sources=sources[:2], recipe="mixed")
    assert calls["outline"] > 5 and calls["placed"] > 5
    with pytest.raises(DataError, match="unknown pool recipe"):
        build_outlier_pool(SHAPE, per_image=1, seed=0, sources=sources[:1], recipe="outlines")


def test_excluded_list_drops_files_and_every_line_has_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_png: WritePng
) -> None:
    pixel = np.full((8, 8, 4), 200, dtype=np.uint8)
    for relative in ("animals/cat.png", "recreation/clock7.png", "food/apple.png"):
        write_png(tmp_path / relative, pixel)
    shipped = pool_sources.excluded_files(pool_sources.EXCLUDED_LIST)
    assert len(shipped) > 100 and all(reason for reason in shipped.values())
    assert all(key.split(":", 1)[0] in ("openclipart", "arcade") for key in shipped)
    listing = tmp_path / "excluded.txt"
    listing.write_text("# comment\n\nopenclipart:recreation/clock7.png  shows a numeral\n")
    monkeypatch.setattr(pool_sources, "EXCLUDED_LIST", listing)
    kept = [path.relative_to(tmp_path).as_posix() for path in openclipart_files(tmp_path)]
    assert kept == ["animals/cat.png", "food/apple.png"]
    groups = {source.name: len(source.files) for source in pool_sources.default_sources(tmp_path)}
    assert groups["animals"] == 1 and groups["food-plants"] == 1 and "recreation" not in groups


def test_every_openclipart_top_level_folder_has_exactly_one_group() -> None:
    folders = [folder for group in pool_sources.OPENCLIPART_GROUPS.values() for folder in group]
    assert len(folders) == len(set(folders))
    assert pool_sources.openclipart_group("shapes/stars/x.png") == "shapes"
    assert pool_sources.openclipart_group("plants/tree.png") == "food-plants"
    assert pool_sources.openclipart_group("newfolder/x.png") == "misc"


@pytest.mark.needs_apt("openclipart-png")
def test_real_openclipart_sources_build() -> None:
    files = openclipart_files()
    assert 3500 < len(files) < 4500
    assert not [path for path in files if "/computer/icons/" in path.as_posix()]
    assert len(files) == len({os.path.realpath(path) for path in files})
    pool, _ = build_outlier_pool(SHAPE, per_image=2, seed=0, sources=files, limit_sources=10)
    assert 10 <= len(pool) <= 20 and pool.shape[1:] == SHAPE
    assert pool_sources.OPENCLIPART_PACKAGE == "openclipart-png"


def test_scribbles_pool_is_the_mixed_pool_plus_one_drawn_group(
    sources: list[Path], monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    fake = [PoolSource("clipart", tuple(sources[:3])), PoolSource("sprites", tuple(sources[3:]))]
    monkeypatch.setattr(pool_module, "default_sources", lambda: fake)
    monkeypatch.setattr(pool_module, "SCRIBBLE_SAMPLES", 7)
    build_default_pool(SHAPE, per_image=4, seed=3, workers=1, progress=False, recipe="mixed")
    mixed = load_outlier_pool("default-mixed", SHAPE)
    both = load_outlier_pool("default-scribbles", SHAPE)
    assert len(both) == len(mixed) + 7
    assert np.array_equal(both[: len(mixed)], mixed)
    assert np.array_equal(both[len(mixed) :], scribbles(7, pool_module.DRAWN_SEED))
    _, groups, names = pool_module.load_default_pool_groups(SHAPE, "mixed+scribbles")
    assert names == ["clipart", "sprites", "scribbles"] and int(np.sum(groups == 2)) == 7
    assert np.array_equal(load_outlier_pool("default-scribbles", SHAPE, exclude=["scribbles"]), mixed)
    build_default_pool((3, 28, 28), per_image=1, seed=3, workers=1, progress=False, recipe="mixed")
    with pytest.raises(DataError, match="28 x 28 grayscale"):
        load_outlier_pool("default-scribbles", (3, 28, 28))


def test_scribbles_are_seeded_mnist_style_pen_strokes() -> None:
    drawn = scribbles(50, seed=1)
    assert drawn.shape == (50, 1, 28, 28) and drawn.dtype == np.uint8
    assert np.array_equal(drawn, scribbles(50, seed=1)) and not np.array_equal(drawn, scribbles(50, seed=2))
    for image in drawn[:, 0]:
        rows, cols = np.nonzero(image)
        assert image.max() == 255  # saturated strokes, as MNIST's
        assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20  # ink in a 20 x 20 box
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 >= 19  # scaled up to fill it
        assert 0.05 < np.count_nonzero(image) / image.size < 0.6  # strokes, neither specks nor a filled block

"""The font-glyph OE source: which characters it may draw, how it draws them, and how the pool appends it."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

import training.image.pool.build as pool_module
from training.data import registry
from training.data.base import MissingPackageError
from training.image.anomalies.glyphs import shape_features
from training.image.pool import fontglyphs
from training.image.pool.fontglyphs import GROUPS, draw_glyphs, font_files, group_characters

needs_fonts = [pytest.mark.needs_apt("fonts-dejavu-extra"), pytest.mark.needs_apt("fonts-nanum")]


@pytest.mark.parametrize(
    ("char", "allowed"),
    [
        ("\u0416", True),  # Cyrillic Zhe
        ("\u10d0", True),  # Georgian An
        ("\uac00", True),  # Hangul Ga
        ("\u2192", True),  # rightwards arrow
        ("?", True),
        ("A", False),  # Latin: the notMNIST analogue's letters
        ("\u00e9", False),  # Latin small e with acute
        ("\u03b2", False),  # Greek: an Omniglot analogue alphabet
        ("\u05d0", False),  # Hebrew: an Omniglot analogue alphabet
        ("\u0531", False),  # Armenian: the flywheel test's unseen script
        ("\u1200", False),  # Ethiopic: the Omniglot analogue's Ge'ez
        ("7", False),  # a digit
        ("\u0667", False),  # Arabic-Indic seven: a digit of another script
        ("\u00bd", False),  # vulgar fraction one half: a number
        ("\u0301", False),  # combining acute: a mark, no glyph of its own
        (" ", False),
    ],
)
def test_only_characters_of_scripts_no_evaluation_set_holds(char: str, allowed: bool) -> None:
    assert fontglyphs._allowed(char) is allowed


def test_groups_hold_no_digit_and_no_excluded_script() -> None:
    for group in GROUPS:
        chars = group_characters(group)
        assert chars, group.name
        assert not [c for c in chars if unicodedata.category(c).startswith("N")]
        names = [unicodedata.name(c) for c in chars]
        assert not [n for n in names if n.split()[0] in {"LATIN", "GREEK", "HEBREW", "ARMENIAN", "ETHIOPIC"}]
    hangul = next(g for g in GROUPS if g.name == "hangul")
    assert len(group_characters(hangul)) == fontglyphs.HANGUL_SAMPLE  # a sample, not all 11,172 syllables


def test_missing_fonts_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(MissingPackageError, match="fonts-dejavu-extra"):
        font_files(tmp_path / "none", tmp_path)
    (tmp_path / "dejavu").mkdir()
    (tmp_path / "dejavu" / "DejaVuSans.ttf").write_bytes(b"")
    with pytest.raises(MissingPackageError, match="fonts-nanum"):
        font_files(tmp_path / "dejavu", tmp_path / "none")


@needs_fonts[0]
@needs_fonts[1]
def test_glyphs_are_seeded_mnist_style_equal_shares_and_no_digit_look_alikes() -> None:
    drawn, kept = draw_glyphs(100, seed=1)
    assert drawn.shape == (100, 1, 28, 28) and drawn.dtype == np.uint8
    assert kept == {group.name: 20 for group in GROUPS}  # every script group an equal share
    again, _ = draw_glyphs(100, seed=1)
    other, _ = draw_glyphs(100, seed=2)
    assert np.array_equal(drawn, again) and not np.array_equal(drawn, other)
    for image in drawn[:, 0]:
        rows, cols = np.nonzero(image)
        assert image.max() == 255
        assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
        assert abs(np.average(rows, weights=image[rows, cols]) - 14) <= 1.5  # mass centred, as MNIST
    templates = fontglyphs.digit_templates(font_files()["dejavu"])
    similarity = (shape_features(drawn[:, 0]) @ templates.T).max(axis=1)
    assert similarity.max() < fontglyphs.DIGIT_SIMILARITY
    # The filter is what keeps them below: a digit drawn the same way would pass it.
    digit = fontglyphs.GlyphRenderer.open(font_files()["dejavu"][0]).render("3")  # type: ignore[union-attr]
    assert (shape_features(digit[None]) @ templates.T).max() >= fontglyphs.DIGIT_SIMILARITY


@needs_fonts[0]
@needs_fonts[1]
def test_font_glyphs_are_cached_and_redrawn_when_stale(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = fontglyphs.font_glyphs(25, seed=0)
    calls: list[int] = []
    real = fontglyphs.draw_glyphs
    monkeypatch.setattr(fontglyphs, "draw_glyphs", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert np.array_equal(fontglyphs.font_glyphs(25, seed=0), first) and not calls  # from the cache
    monkeypatch.setattr(fontglyphs, "DRAW_VERSION", fontglyphs.DRAW_VERSION + 1)
    fontglyphs.font_glyphs(25, seed=0)
    assert calls == [1]  # a change of drawing code redraws


def test_glyphs_pool_appends_the_drawn_groups_in_order(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    shape = (1, 28, 28)
    clipart = np.full((4, *shape), 7, np.uint8)
    arrays = {"images": clipart, "groups": np.zeros(4, np.int16)}
    manifest = {"format": pool_module.POOL_FORMAT, "groups": ["clipart"]}
    pool_module.save_npz_atomic(pool_module.pool_path(shape, "mixed"), arrays, manifest)
    monkeypatch.setattr(pool_module, "scribbles", lambda n, seed: np.full((n, *shape), 1, np.uint8))
    calls: list[tuple[int, object]] = []

    def fake_glyphs(n: int, seed: int, scripts: list[str] | None = None) -> np.ndarray:
        calls.append((seed, scripts))
        return np.full((n, *shape), 2 if scripts is None else 3, np.uint8)

    monkeypatch.setattr(pool_module, "font_glyphs", fake_glyphs)
    monkeypatch.setattr(pool_module, "SCRIBBLE_SAMPLES", 3)
    monkeypatch.setattr(pool_module, "GLYPH_SAMPLES", 2)
    images, groups, names = pool_module.load_default_pool_groups(shape, "mixed+scribbles+glyphs")
    assert names == ["clipart", "scribbles", "glyphs"]
    assert groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert images[:, 0, 0, 0].tolist() == [7, 7, 7, 7, 1, 1, 1, 2, 2]
    recipe = "mixed+scribbles+glyphs"
    without = pool_module.load_default_pool(shape, seed=0, limit=None, exclude=["glyphs"], recipe=recipe)
    assert without[:, 0, 0, 0].tolist() == [7, 7, 7, 7, 1, 1, 1]
    with pytest.raises(pool_module.DataError, match="unknown pool recipe"):
        pool_module.load_default_pool_groups(shape, "mixed+letters")
    # The glyphs without their Cyrillic share: every other script group, drawn with the pool's seed.
    calls.clear()
    images, groups, names = pool_module.load_default_pool_groups(shape, "mixed+scribbles+glyphs-no-cyrillic")
    assert names == ["clipart", "scribbles", "glyphs-no-cyrillic"]
    assert images[:, 0, 0, 0].tolist() == [7, 7, 7, 7, 1, 1, 1, 3, 3]
    assert calls == [(pool_module.DRAWN_SEED, [g.name for g in GROUPS if g.name != "cyrillic"])]
    assert registry.POOL_RECIPES["default-glyphs-no-cyrillic"] == "mixed+scribbles+glyphs-no-cyrillic"


def test_script_groups_select_in_order_and_name_unknown_ones() -> None:
    assert fontglyphs.script_groups(None) == GROUPS
    assert [g.name for g in fontglyphs.script_groups(["hangul", "cyrillic"])] == ["cyrillic", "hangul"]
    for bad in (["latin"], []):
        with pytest.raises(fontglyphs.DataError, match="unknown glyph script group"):
            fontglyphs.script_groups(bad)


@needs_fonts[0]
@needs_fonts[1]
def test_a_script_restricted_draw_holds_only_that_script_and_is_cached_apart(private_cache: Path) -> None:
    images, kept = draw_glyphs(12, 0, scripts=["cyrillic"])
    assert list(kept) == ["cyrillic"] and kept["cyrillic"] == len(images) > 0
    restricted = fontglyphs.font_glyphs(12, 0, ["cyrillic"])
    np.testing.assert_array_equal(restricted, images)
    assert (private_cache / "font-glyphs-12-0-cyrillic.npz").is_file()
    everything = fontglyphs.font_glyphs(12, 0)  # all script groups: its own cache file, its own draw
    assert (private_cache / "font-glyphs-12-0.npz").is_file() and not np.array_equal(everything, restricted)

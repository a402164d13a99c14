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
from training.image.anomalies.rendered_sets import AENIGMA_DIR, NOTO_DIR, OMNIGLOT_SCRIPTS
from training.image.pool import fontglyphs
from training.image.pool.fontglyphs import (
    ALL_GROUPS,
    FAMILIES,
    GROUPS,
    VALIDATION_GROUPS,
    WIDE_GROUPS,
    FontFamily,
    draw_glyphs,
    font_files,
    group_characters,
)

needs_fonts = [pytest.mark.needs_apt("fonts-dejavu-extra"), pytest.mark.needs_apt("fonts-nanum")]
needs_wide_fonts = pytest.mark.needs_apt(*sorted({family.package for family in FAMILIES.values()}))


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
    assert ALL_GROUPS == GROUPS + WIDE_GROUPS and len(ALL_GROUPS) == 19
    assert len({group.name for group in ALL_GROUPS}) == len(ALL_GROUPS)
    for group in ALL_GROUPS:
        chars = group_characters(group)
        assert chars, group.name
        assert not [c for c in chars if unicodedata.category(c).startswith("N")]
        names = [unicodedata.name(c) for c in chars]
        assert not [n for n in names if n.split()[0] in {"LATIN", "GREEK", "HEBREW", "ARMENIAN", "ETHIOPIC"}]
        assert set(group.families) <= set(FAMILIES), group.name
    for name in ("hangul", "han", "yi"):  # a sample, not all 11,172 syllables or 20,992 ideographs
        group = next(g for g in ALL_GROUPS if g.name == name)
        assert len(group_characters(group)) == fontglyphs.HANGUL_SAMPLE


def test_wide_groups_share_no_character_with_the_omniglot_analogue_and_draw_no_digit_or_letter() -> None:
    omniglot = {c for script in OMNIGLOT_SCRIPTS for start, end in script.ranges for c in range(start, end + 1)}
    for group in WIDE_GROUPS:
        assert not omniglot & {ord(c) for c in group_characters(group)}, group.name
    pictographs = next(g for g in WIDE_GROUPS if g.name == "pictographs")
    names = [unicodedata.name(c) for c in group_characters(pictographs)]
    words = {word for name in names for word in name.split()}
    # keycap ten, hundred points, no one under eighteen, a circled one, the input symbols for letters and numbers
    assert not words & {"KEYCAP", "HUNDRED", "EIGHTEEN", "OVERLAY", "INPUT"}
    assert not [name for name in names if "LATIN" in name and "CROSS" not in name]  # a Latin cross is a shape
    assert "\U0001f600" in group_characters(pictographs)  # a grinning face: the kind it is there for


def test_each_group_draws_with_its_families_and_the_first_five_keep_theirs() -> None:
    # The first five groups' draws (the `glyphs` pool group, `val-glyphs`) read DejaVu and Nanum whatever the
    # selection, as before the wider source existed, so their cached draws and fingerprints stay valid.
    assert fontglyphs.groups_families(GROUPS) == ["dejavu", "nanum"]
    assert fontglyphs.groups_families(fontglyphs.script_groups(["cyrillic"])) == ["dejavu", "nanum"]
    thai = fontglyphs.script_groups(["thai"])
    assert fontglyphs.groups_families(thai) == ["tlwg"]
    assert fontglyphs.groups_families(fontglyphs.script_groups(["thai", "kana"])) == [
        "tlwg",
        "ipa-gothic",
        "ipa-mincho",
        "wqy",
        "ukai",
    ]


def test_font_families_skip_named_files_and_a_missing_one_names_its_package(tmp_path: Path) -> None:
    (tmp_path / "kacst").mkdir()
    for name in ("KacstBook.ttf", "KacstDigital.ttf", "mry_KacstQurn.ttf", "notes.txt"):
        (tmp_path / "kacst" / name).write_bytes(b"")
    family = FontFamily("fonts-kacst", tmp_path / "kacst", skip=("Digital", "mry_"))
    assert [p.name for p in family.files()] == ["KacstBook.ttf"]
    dejavu = FontFamily("fonts-dejavu-extra", tmp_path / "kacst", ("Kacst*.ttf",))
    families = {"dejavu": dejavu, "kacst": family, "lao": FontFamily("fonts-lao", tmp_path / "none")}
    found = font_files(["kacst"], families)
    assert list(found) == ["dejavu", "kacst"]  # DejaVu always: its digits are the filter's templates
    with pytest.raises(MissingPackageError, match="fonts-lao"):
        font_files(["kacst", "lao"], families)


def test_missing_fonts_name_the_package(tmp_path: Path) -> None:
    def families(dejavu: Path, nanum: Path) -> dict[str, FontFamily]:
        return {
            "dejavu": FontFamily("fonts-dejavu-extra", dejavu, ("DejaVu*.ttf",), ("Math",)),
            "nanum": FontFamily("fonts-nanum", nanum, ("Nanum*.ttf",)),
        }

    with pytest.raises(MissingPackageError, match="fonts-dejavu-extra"):
        font_files(families=families(tmp_path / "none", tmp_path))
    (tmp_path / "dejavu").mkdir()
    (tmp_path / "dejavu" / "DejaVuMathTeXGyre.ttf").write_bytes(b"")
    with pytest.raises(MissingPackageError, match="fonts-dejavu-extra"):  # the math font alone does not count
        font_files(families=families(tmp_path / "dejavu", tmp_path))
    (tmp_path / "dejavu" / "DejaVuSans.ttf").write_bytes(b"")
    with pytest.raises(MissingPackageError, match="fonts-nanum"):
        font_files(families=families(tmp_path / "dejavu", tmp_path / "none"))


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

    def fake_glyphs(n: int, seed: int, scripts: list[str] | None = None, style: str = "hand") -> np.ndarray:
        calls.append((seed, scripts) if style == "hand" else (seed, scripts, style))
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
    # The wider glyphs: all nineteen script groups (or all but Cyrillic), twice the count.
    monkeypatch.setattr(pool_module, "WIDE_GLYPH_SAMPLES", 5)
    for group, scripts in (
        ("glyphs-wide", [g.name for g in ALL_GROUPS]),
        ("glyphs-wide-no-cyrillic", [g.name for g in ALL_GROUPS if g.name != "cyrillic"]),
    ):
        calls.clear()
        images, groups, names = pool_module.load_default_pool_groups(shape, f"mixed+scribbles+{group}")
        assert names == ["clipart", "scribbles", group] and groups.tolist()[-5:] == [2] * 5 and len(images) == 12
        assert calls == [(pool_module.DRAWN_SEED, scripts)]
        assert registry.POOL_RECIPES[f"default-{group}"] == f"mixed+scribbles+{group}"
    # The printed glyphs: the nineteen script groups (or all but Cyrillic) as type, their own count, after the
    # hand-drawn glyphs of the same scripts.
    monkeypatch.setattr(pool_module, "PRINTED_SAMPLES", 6)
    for printed, hand in (("printed-wide", "glyphs-wide"), ("printed-wide-no-cyrillic", "glyphs-wide-no-cyrillic")):
        calls.clear()
        recipe = f"mixed+scribbles+{hand}+{printed}"
        images, groups, names = pool_module.load_default_pool_groups(shape, recipe)
        assert names == ["clipart", "scribbles", hand, printed] and len(images) == 4 + 3 + 5 + 6
        assert groups.tolist()[-6:] == [3] * 6
        scripts = [g.name for g in ALL_GROUPS if printed == "printed-wide" or g.name != "cyrillic"]
        assert calls == [(pool_module.DRAWN_SEED, scripts), (pool_module.DRAWN_SEED, scripts, "printed")]
        assert registry.POOL_RECIPES[f"default-{printed.replace('-wide', '')}"] == recipe
    # data.glyph_samples: the hand-drawn glyph group draws that many instead (the scribbles and the printed glyphs
    # keep theirs); refused without one.
    counts: list[int] = []
    monkeypatch.setattr(
        pool_module,
        "font_glyphs",
        lambda n, seed, scripts=None, style="hand": counts.append(n) or fake_glyphs(n, seed),
    )
    for group in ("glyphs", "glyphs-no-cyrillic", "glyphs-wide", "glyphs-wide-no-cyrillic"):
        images, _, _ = pool_module.load_default_pool_groups(shape, f"mixed+scribbles+{group}", glyph_samples=7)
        assert len(images) == 4 + 3 + 7
    assert counts == [7, 7, 7, 7]
    images, _, _ = pool_module.load_default_pool_groups(shape, "mixed+glyphs-wide+printed-wide", glyph_samples=7)
    assert len(images) == 4 + 7 + 6 and counts[-2:] == [7, 6]
    with pytest.raises(pool_module.DataError, match="draws no glyphs"):
        pool_module.load_default_pool_groups(shape, "mixed+printed-wide", glyph_samples=7)
    pool = registry.load_outlier_pool("default-glyphs-wide", shape, exclude=["clipart"], glyph_samples=6)
    assert pool[:, 0, 0, 0].tolist() == [1, 1, 1] + [2] * 6
    with pytest.raises(pool_module.DataError, match="draws no glyphs"):
        pool_module.load_default_pool_groups(shape, "mixed+scribbles", glyph_samples=7)
    np.save(private_cache / "pool.npy", clipart)
    with pytest.raises(pool_module.DataError, match="glyph_samples"):
        registry.load_outlier_pool(f"npy:{private_cache / 'pool.npy'}", shape, glyph_samples=7)


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


@needs_wide_fonts
def test_every_wide_group_draws_from_its_fonts_mnist_style(private_cache: Path) -> None:
    names = [group.name for group in ALL_GROUPS]
    drawn, kept = draw_glyphs(19 * 4, seed=3, scripts=names)
    assert kept == {name: 4 for name in names}  # every group's fonts drew its share
    assert drawn.shape == (76, 1, 28, 28) and int(drawn.max()) == 255
    cached = fontglyphs.font_glyphs(19 * 4, 3, names)
    np.testing.assert_array_equal(cached, drawn)
    assert (private_cache / f"font-glyphs-76-3-{'-'.join(names)}.npz").is_file()


def test_the_pipeline_asks_the_pool_for_the_configured_glyph_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from training import pipeline
    from training.config import load_config

    cfg = load_config(None, ["data.outlier_pool=default-glyphs-wide", "data.glyph_samples=24000", "oe.fragments=0"])
    asked: list[dict[str, object]] = []

    def fake_pool(spec: str, shape: tuple[int, int, int], **kwargs: object) -> np.ndarray:
        asked.append({"spec": spec, **kwargs})
        return np.zeros((2, *shape), np.uint8)

    monkeypatch.setattr(pipeline, "load_outlier_pool", fake_pool)
    ctx = SimpleNamespace(cfg=cfg, data=SimpleNamespace(shape=(1, 28, 28)))
    assert len(pipeline.load_pool(ctx)) == 2  # type: ignore[arg-type]
    assert asked[0]["spec"] == "default-glyphs-wide" and asked[0]["glyph_samples"] == 24000


def test_the_printed_cyrillic_faces_are_read_by_no_pool_group_and_no_test_set(monkeypatch: pytest.MonkeyPatch) -> None:
    pool_families = {family for group in ALL_GROUPS for family in group.families}
    (faces,) = VALIDATION_GROUPS
    assert faces.ranges == GROUPS[0].ranges and len(faces.families) == 9
    assert not set(faces.families) & pool_families
    for name in faces.families:
        directory = FAMILIES[name].directory
        assert directory not in (AENIGMA_DIR, NOTO_DIR) and AENIGMA_DIR not in directory.parents
        assert all(FAMILIES[name].directory != FAMILIES[other].directory for other in pool_families)
    # No pool group asks for them: every drawn group's draw, recorded.
    asked: list[object] = []
    monkeypatch.setattr(pool_module, "font_glyphs", lambda n, seed, scripts=None, style="hand": asked.append(scripts))
    monkeypatch.setattr(pool_module, "scribbles", lambda n, seed: None)
    for draw in pool_module.DRAWN_GROUPS.values():
        draw(None)
    assert len(asked) == len(pool_module.DRAWN_GROUPS) - 1
    assert not any(scripts and faces.name in scripts for scripts in asked)
    assert faces.name not in {group.name for group in ALL_GROUPS}


def test_printed_glyphs_are_the_faces_own_upright_type(monkeypatch: pytest.MonkeyPatch) -> None:
    ink = np.full((20, 30), 255, np.uint8)  # a glyph's ink comes cropped to its box
    widths = []
    for seed in range(40):
        printed = fontglyphs._print(ink, np.random.default_rng(seed))
        assert printed.shape[0] == 20 and (printed == 255).all()  # upright: no rotation, shear or blur
        widths.append(printed.shape[1])
    lo, hi = fontglyphs.PRINTED_STRETCH
    assert round(30 * lo) <= min(widths) < 30 < max(widths) <= round(30 * hi)  # narrower and wider faces
    assert fontglyphs.STYLES["printed"][0] == fontglyphs.PRINTED_PEN == (0, 1)
    with pytest.raises(fontglyphs.DataError, match="unknown glyph style 'bold'; styles: hand, printed"):
        draw_glyphs(4, 0, {}, ["cyrillic"], style="bold")
    with pytest.raises(fontglyphs.DataError, match="unknown glyph style"):
        fontglyphs.font_glyphs(4, 0, ["cyrillic"], style="bold")


@needs_fonts[0]
@needs_fonts[1]
def test_a_printed_draw_renders_the_character_as_the_font_does(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The printed draw is cached apart from the hand-drawn one of the same scripts and seed.
    cached = fontglyphs.font_glyphs(10, 0, ["cyrillic"], style="printed")
    assert (private_cache / "font-glyphs-10-0-cyrillic-printed.npz").is_file()
    assert not np.array_equal(cached, fontglyphs.font_glyphs(10, 0, ["cyrillic"]))
    assert (private_cache / "font-glyphs-10-0-cyrillic.npz").is_file()
    # One face, one character, no widening and no extra weight: every printed glyph is the font's own rendering,
    # where a hand-drawn one is sheared, rotated and blurred away from it.
    sans = fontglyphs.DEJAVU_DIR / "DejaVuSans.ttf"
    monkeypatch.setattr(fontglyphs, "group_characters", lambda group: ["Ж"])
    monkeypatch.setattr(fontglyphs, "PRINTED_STRETCH", (1.0, 1.0))
    monkeypatch.setitem(fontglyphs.STYLES, "printed", ((0, 0), fontglyphs._print))
    families = {"dejavu": [sans], "nanum": []}
    printed, kept = draw_glyphs(6, 0, families, ["cyrillic"], style="printed")
    expected = fontglyphs.GlyphRenderer.open(sans).render("Ж")  # type: ignore[union-attr]
    assert kept == {"cyrillic": 6}
    for glyph in printed[:, 0]:
        np.testing.assert_array_equal(glyph, expected)
    hand, _ = draw_glyphs(6, 0, families, ["cyrillic"])
    assert not any(np.array_equal(glyph, expected) for glyph in hand[:, 0])


@needs_wide_fonts
def test_the_printed_cyrillic_draw_reads_every_face_family(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[Path] = []
    real = fontglyphs.load_font
    monkeypatch.setattr(fontglyphs, "load_font", lambda path: read.append(path) or real(path))
    drawn, kept = draw_glyphs(300, 2, scripts=["cyrillic-faces"], style="printed")
    assert kept == {"cyrillic-faces": 300} and drawn.shape == (300, 1, 28, 28) and int(drawn.max()) == 255
    (faces,) = VALIDATION_GROUPS
    families = {name for name in faces.families if any(path in FAMILIES[name].files() for path in read)}
    assert families == set(faces.families)

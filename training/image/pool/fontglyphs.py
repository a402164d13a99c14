"""Font glyphs: characters of scripts no test set holds, and symbols, drawn like handwriting; an OE source.

The clip-art pool and the scribbles teach the net that pictures and loose pen strokes are not digits. What a digit
reader most often meets by mistake is *writing*: characters of other scripts, symbols, marks. This source draws
such characters from fonts of Debian packages that no anomaly set reads (`fonts-dejavu-core`, `fonts-dejavu-extra`,
`fonts-nanum`), restricted so that it shares no script with the evaluation:

- scripts: Cyrillic, Georgian, Arabic (isolated forms), Hangul syllables, Ethiopic is left out (the Omniglot
  analogue's Ge'ez); and symbols: punctuation, currency, arrows, mathematical operators, geometric shapes,
  miscellaneous symbols, dingbats, box drawing;
- never: Latin (the notMNIST analogue's letters), Greek and Hebrew (Omniglot analogue alphabets), Armenian (the
  flywheel test's unseen script), any digit of any script (Unicode category N*), nor a glyph that looks like a
  digit: blurred cosine similarity >= 0.85 to any of 0-9 drawn by the same fonts (as the Omniglot analogue drops
  them), before the pool-wide screen (`screen.py`) drops what the baseline itself reads as a digit.

A wider source (`WIDE_GROUPS`, pool groups `glyphs-wide*`) adds fourteen script groups drawn by the fonts of
further Debian packages no anomaly set reads (`FAMILIES`): Thai, Lao, Khmer, Myanmar, Japanese kana, Han ideographs,
Tamil, Telugu, Sinhala, Yi, Tai Le and New Tai Lue, Tifinagh, N'Ko, Arabic in calligraphic and display faces, and
pictographs (Symbola; the ones that draw digits or Latin letters, such as keycaps and "100", are left out). None of
them is an Omniglot analogue alphabet (`rendered_sets.OMNIGLOT_SCRIPTS`).

Each sample is one character of one font, chosen script-group first (each group an equal share, so 11,172 Hangul
syllables do not drown 33 Georgian letters), drawn on a 64 px em with a random pen (extra stroke 0-3 px), sheared,
rotated and stretched a little (a hand does not write upright type), slightly blurred, then normalized as MNIST
digits are (`glyphs.mnist_box`). The draw depends only on the seed and the fonts installed; the result is cached
(`cache.py`) and redrawn when the fonts or this code change.

The `printed` style (pool groups `printed-wide*`) draws the same characters as type instead: upright, in the face's
own weight or 1 px bolder, 0.85-1.2 times as wide, not blurred. `VALIDATION_GROUPS` holds Cyrillic in the faces
of nine more packages (`FAMILIES`, the last nine) that no pool group and no test set reads: the validation set
`val-printed-cyrillic`, printed letters in faces OE never saw.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFilter

from training.data.base import DataError, MissingPackageError
from training.data.cache import data_cache_dir, load_npz_checked, save_npz_atomic
from training.image.anomalies.glyphs import DIGIT_SIMILARITY, GlyphRenderer, load_font, mnist_box, shape_features

DRAW_VERSION = 1  # bumped whenever the drawing changes, so a cached set is redrawn
DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
NANUM_DIR = Path("/usr/share/fonts/truetype/nanum")
PEN = (0, 3)  # extra stroke width in pixels of the 64 px em, inclusive
PRINTED_PEN = (0, 1)  # printed type: the face's own weight, at most 1 px bolder
PRINTED_STRETCH = (0.85, 1.2)  # printed type: condensed to extended faces
SHEAR = 0.3  # |x shear| <= 0.3
ROTATION = 15.0  # degrees either way
STRETCH = (0.75, 1.3)  # width scale
BLUR_RADIUS = 0.8
HANGUL_SAMPLE = 600  # syllables drawn from the 11,172 (evenly spaced); Han and Yi are sampled alike
CHUNK = 256  # glyphs drawn between two runs of the digit filter
TRUETYPE = Path("/usr/share/fonts/truetype")
OPENTYPE = Path("/usr/share/fonts/opentype")


@dataclass(frozen=True)
class FontFamily:
    """The font files one Debian package installs: `patterns` in `directory`, minus names holding a `skip` word."""

    package: str
    directory: Path
    patterns: tuple[str, ...] = ("*.ttf",)
    skip: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        found = {p for pattern in self.patterns for p in self.directory.glob(pattern)}
        return sorted(p for p in found if not any(word in p.name for word in self.skip))


FAMILIES: dict[str, FontFamily] = {
    # DejaVu's TeX math font is left out (it draws text in the Latin of TeX Gyre); -extra brings -core.
    "dejavu": FontFamily("fonts-dejavu-extra", DEJAVU_DIR, ("DejaVu*.ttf",), ("Math",)),
    "nanum": FontFamily("fonts-nanum", NANUM_DIR, ("Nanum*.ttf",)),
    "tlwg": FontFamily("fonts-thai-tlwg", TRUETYPE / "tlwg"),
    "lao": FontFamily("fonts-lao", TRUETYPE / "lao"),
    "mondulkiri": FontFamily("fonts-sil-mondulkiri", OPENTYPE / "mondulkiri"),
    "padauk": FontFamily("fonts-sil-padauk", TRUETYPE / "padauk"),
    "ipa-gothic": FontFamily("fonts-ipafont-gothic", OPENTYPE / "ipafont-gothic"),
    "ipa-mincho": FontFamily("fonts-ipafont-mincho", OPENTYPE / "ipafont-mincho"),
    "wqy": FontFamily("fonts-wqy-microhei", TRUETYPE / "wqy", ("*.ttc",)),
    "ukai": FontFamily("fonts-arphic-ukai", TRUETYPE / "arphic", ("ukai.ttc",)),
    "lohit-tamil": FontFamily("fonts-lohit-taml", TRUETYPE / "lohit-tamil"),
    "lohit-telugu": FontFamily("fonts-lohit-telu", TRUETYPE / "lohit-telugu"),
    "lklug": FontFamily("fonts-lklug-sinhala", TRUETYPE / "sinhala"),
    "nuosu": FontFamily("fonts-sil-nuosusil", TRUETYPE / "nuosusil"),
    "dai-banna": FontFamily("fonts-sil-dai-banna", TRUETYPE / "dai-banna"),
    "symbola": FontFamily("fonts-symbola", TRUETYPE / "ancient-scripts", ("Symbola*.ttf",)),
    # KacstDigital draws seven-segment shapes; mry_KacstQurn repeats KacstQurn.
    "kacst": FontFamily("fonts-kacst", TRUETYPE / "kacst", skip=("Digital", "mry_")),
    # The coloured Quran face draws marks in colour layers; the plain faces are enough.
    "amiri": FontFamily("fonts-hosny-amiri", OPENTYPE / "fonts-hosny-amiri", skip=("Colored",)),
    # Faces read only by the validation set `val-printed-cyrillic` (`VALIDATION_GROUPS`): no pool group draws them.
    "liberation": FontFamily("fonts-liberation", TRUETYPE / "liberation"),
    "freefont": FontFamily("fonts-freefont-ttf", TRUETYPE / "freefont"),
    "paratype": FontFamily("fonts-paratype", TRUETYPE / "paratype"),
    "libertine": FontFamily("fonts-linuxlibertine", OPENTYPE / "linux-libertine", ("*.otf",)),
    "ebgaramond": FontFamily("fonts-ebgaramond", OPENTYPE / "ebgaramond", ("*.otf",)),
    "open-sans": FontFamily("fonts-open-sans", TRUETYPE / "open-sans"),
    "cantarell": FontFamily("fonts-cantarell", OPENTYPE / "cantarell", ("*.otf",)),
    "comfortaa": FontFamily("fonts-comfortaa", TRUETYPE / "comfortaa"),
    "carlito": FontFamily("fonts-crosextra-carlito", TRUETYPE / "crosextra", ("Carlito*.ttf",)),
}


@dataclass(frozen=True)
class ScriptGroup:
    """One equal share of the source: its code point ranges and the font families (`FAMILIES`) that draw them."""

    name: str
    ranges: tuple[tuple[int, int], ...]  # inclusive
    families: tuple[str, ...]
    sample: int | None = None  # draw from this many characters, evenly spaced, when the ranges hold more


CYRILLIC = ((0x0400, 0x045F), (0x0460, 0x0481), (0x048A, 0x04FF))
GROUPS = (
    ScriptGroup("cyrillic", CYRILLIC, ("dejavu",)),
    ScriptGroup("georgian", ((0x10A0, 0x10C5), (0x10D0, 0x10FA)), ("dejavu",)),
    ScriptGroup("arabic", ((0x0621, 0x064A), (0x0671, 0x06D3)), ("dejavu",)),
    ScriptGroup("hangul", ((0xAC00, 0xD7A3),), ("nanum",), HANGUL_SAMPLE),
    ScriptGroup(
        "symbols",
        (
            (0x0021, 0x002F),
            (0x003A, 0x0040),
            (0x005B, 0x0060),
            (0x007B, 0x007E),
            (0x00A1, 0x00BF),
            (0x2010, 0x205E),
            (0x20A0, 0x20BF),
            (0x2190, 0x21FF),
            (0x2200, 0x22FF),
            (0x2300, 0x23FF),
            (0x2500, 0x257F),
            (0x25A0, 0x25FF),
            (0x2600, 0x26FF),
            (0x2700, 0x27BF),
        ),
        ("dejavu",),
    ),
)
_CJK = ("wqy", "ukai", "ipa-gothic", "ipa-mincho")
WIDE_GROUPS = (
    ScriptGroup("thai", ((0x0E01, 0x0E30), (0x0E32, 0x0E33), (0x0E40, 0x0E46), (0x0E4F, 0x0E4F)), ("tlwg",)),
    ScriptGroup("lao", ((0x0E81, 0x0EB0), (0x0EB2, 0x0EB3), (0x0EBD, 0x0EBD), (0x0EC0, 0x0EC6)), ("lao", "dejavu")),
    ScriptGroup("khmer", ((0x1780, 0x17B3),), ("mondulkiri",)),
    ScriptGroup("myanmar", ((0x1000, 0x102A), (0x103F, 0x103F), (0x1050, 0x1055)), ("padauk",)),
    ScriptGroup("kana", ((0x3041, 0x3096), (0x30A1, 0x30FA)), _CJK),
    ScriptGroup("han", ((0x4E00, 0x9FFF),), _CJK, HANGUL_SAMPLE),
    ScriptGroup("tamil", ((0x0B85, 0x0BB9),), ("lohit-tamil",)),
    ScriptGroup("telugu", ((0x0C05, 0x0C39),), ("lohit-telugu",)),
    ScriptGroup("sinhala", ((0x0D85, 0x0DC6),), ("lklug",)),
    ScriptGroup("yi", ((0xA000, 0xA48C),), ("nuosu",), HANGUL_SAMPLE),
    ScriptGroup("tai", ((0x1950, 0x196D), (0x1970, 0x1974), (0x1980, 0x19AB)), ("dai-banna",)),
    ScriptGroup("tifinagh-nko", ((0x2D30, 0x2D67), (0x07CA, 0x07EA)), ("dejavu",)),
    ScriptGroup("arabic-styles", ((0x0621, 0x064A), (0x0671, 0x06D3)), ("kacst", "amiri")),
    ScriptGroup(
        "pictographs",
        # Symbola's pictographs, without the ones that draw digits or Latin letters (hundred points, keycap ten,
        # no one under eighteen, the input symbols for letters and numbers, a circled one).
        (
            (0x1F300, 0x1F4AE),
            (0x1F4B0, 0x1F501),
            (0x1F503, 0x1F51D),
            (0x1F525, 0x1F5FF),
            (0x1F600, 0x1F64F),
            (0x1F680, 0x1F6FF),
            (0x1F900, 0x1F9FF),
            (0x2B00, 0x2BFF),
        ),
        ("symbola",),
    ),
)
ALL_GROUPS = GROUPS + WIDE_GROUPS
# Cyrillic in the 87 faces of nine packages no pool group or test set reads: the validation set
# `val-printed-cyrillic` (printed letters of a script and in faces OE never saw), never a pool group.
VALIDATION_GROUPS = (
    ScriptGroup(
        "cyrillic-faces",
        CYRILLIC,
        (
            "liberation",
            "freefont",
            "paratype",
            "libertine",
            "ebgaramond",
            "open-sans",
            "cantarell",
            "comfortaa",
            "carlito",
        ),
    ),
)
EXCLUDED_SCRIPTS = ("LATIN", "GREEK", "HEBREW", "ARMENIAN", "ETHIOPIC")


def _allowed(char: str) -> bool:
    """Not a digit or number of any kind, not a mark, space or control, and of none of the excluded scripts."""
    category = unicodedata.category(char)
    if category[0] in "NMZC":
        return False
    name = unicodedata.name(char, "")
    return bool(name) and not any(name.startswith(script) for script in EXCLUDED_SCRIPTS)


def group_characters(group: ScriptGroup) -> list[str]:
    """The characters of `group` the source may draw (before asking any font whether it has them)."""
    chars = [chr(c) for start, end in group.ranges for c in range(start, end + 1)]
    chars = [c for c in chars if _allowed(c)]
    if group.sample is not None and len(chars) > group.sample:
        chars = [chars[i] for i in np.linspace(0, len(chars) - 1, group.sample).round().astype(int)]
    return chars


def font_files(
    names: Sequence[str] = ("dejavu", "nanum"), families: dict[str, FontFamily] | None = None
) -> dict[str, list[Path]]:
    """The font files of each named family (DejaVu always: its digits are the filter's templates);
    MissingPackageError naming the package when a family has none."""
    families = FAMILIES if families is None else families
    wanted = ["dejavu", *(name for name in names if name != "dejavu")]
    found: dict[str, list[Path]] = {}
    for name in wanted:
        family = families[name]
        found[name] = family.files()
        if not found[name]:
            raise MissingPackageError(
                family.package, str(family.directory), "the font glyphs (an OE source and validation sets)"
            )
    return found


def groups_families(groups: Sequence[ScriptGroup]) -> list[str]:
    """The font families `groups` draw with, in `FAMILIES` order; the first five groups' draws keep both of their
    families (DejaVu and Nanum) whatever the selection, so their cached draws stay valid."""
    needed = {family for group in groups for family in group.families}
    if set(groups) <= set(GROUPS):
        needed |= {"dejavu", "nanum"}
    return [name for name in FAMILIES if name in needed]


def digit_templates(fonts: list[Path]) -> np.ndarray:
    """Features of 0-9 drawn by every font in `fonts`, plain and with a 2 px pen."""
    drawn: list[np.ndarray] = []
    for path in fonts:
        for stroke in (0, 2):
            renderer = GlyphRenderer.open(path, stroke)
            if renderer is not None:
                drawn.extend(g for g in map(renderer.render, "0123456789") if g is not None)
    return shape_features(np.stack(drawn)) if drawn else np.zeros((0, 28 * 28))


def _hand(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ink sheared, rotated, stretched and softened like a written character."""
    image = Image.fromarray(ink)
    pad = max(image.size) // 2 + 8
    canvas = Image.new("L", (image.width + 2 * pad, image.height + 2 * pad), 0)
    canvas.paste(image, (pad, pad))
    shear = rng.uniform(-SHEAR, SHEAR)
    cx = canvas.width / 2
    affine = (1, shear, -shear * cx, 0, 1, 0)
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-ROTATION, ROTATION), resample=Image.Resampling.BILINEAR)
    stretch = rng.uniform(*STRETCH)
    canvas = canvas.resize((max(1, round(canvas.width * stretch)), canvas.height), Image.Resampling.BILINEAR)
    canvas = canvas.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    box = canvas.getbbox()
    return np.asarray(canvas.crop(box) if box else canvas, dtype=np.uint8)


def _print(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ink as type: upright, only made narrower or wider (the face's own design is the variation)."""
    image = Image.fromarray(ink)
    stretch = rng.uniform(*PRINTED_STRETCH)
    image = image.resize((max(1, round(image.width * stretch)), image.height), Image.Resampling.BILINEAR)
    box = image.getbbox()
    return np.asarray(image.crop(box) if box else image, dtype=np.uint8)


# How each style draws: the pen range (extra stroke, px of the 64 px em) and the transform of the ink.
STYLES = {"hand": (PEN, _hand), "printed": (PRINTED_PEN, _print)}


HELD_OUT_SCRIPT = "cyrillic"  # left out of the pool group `glyphs-no-cyrillic`, drawn alone as `val-glyphs-cyrillic`


def script_groups(scripts: Sequence[str] | None) -> tuple[ScriptGroup, ...]:
    """The named script groups, in `ALL_GROUPS` order (the first five, `GROUPS`, for None); a DataError names
    unknown ones."""
    if scripts is None:
        return GROUPS
    known = ALL_GROUPS + VALIDATION_GROUPS
    unknown = sorted(set(scripts) - {group.name for group in known})
    if unknown or not scripts:
        raise DataError(
            f"unknown glyph script group(s) {', '.join(unknown) or '(none given)'}; groups: "
            + ", ".join(group.name for group in known)
        )
    return tuple(group for group in known if group.name in scripts)


def _style(style: str) -> tuple[tuple[int, int], Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
    if style not in STYLES:
        raise DataError(f"unknown glyph style {style!r}; styles: {', '.join(STYLES)}")
    return STYLES[style]


def draw_glyphs(
    count: int,
    seed: int,
    families: dict[str, list[Path]] | None = None,
    scripts: Sequence[str] | None = None,
    style: str = "hand",
) -> tuple[np.ndarray, dict[str, int]]:
    """(uint8 [count', 1, 28, 28] glyphs, samples kept per script group); count' <= count after the digit filter.
    `scripts` restricts the draw to those script groups (each an equal share of `count`); `style` is `hand`
    (sheared, rotated, a random pen) or `printed` (upright type in the faces' own weights)."""
    pens, transform = _style(style)
    groups = script_groups(scripts)
    families = families or font_files(groups_families(groups))
    rng = np.random.default_rng([seed, DRAW_VERSION])
    templates = digit_templates(families["dejavu"])
    renderers: dict[tuple[Path, int], GlyphRenderer | None] = {}
    out: list[np.ndarray] = []
    kept: dict[str, int] = {}
    share = -(-count // len(groups))
    for group in groups:
        chars = group_characters(group)
        fonts = [path for family in group.families for path in families[family]]
        glyphs = np.zeros((0, 28, 28), np.uint8)
        tries = 0
        while len(glyphs) < share and tries < 20 * share:
            drawn: list[np.ndarray] = []
            for _ in range(CHUNK):
                tries += 1
                path = fonts[int(rng.integers(len(fonts)))]
                pen = int(rng.integers(pens[0], pens[1] + 1))
                if (path, pen) not in renderers:
                    font = load_font(path)
                    renderers[path, pen] = None if font is None else GlyphRenderer(font, pen)
                renderer = renderers[path, pen]
                char = chars[int(rng.integers(len(chars)))]
                ink = None if renderer is None else renderer.ink(char)
                if ink is not None:  # None: the font lacks the character
                    drawn.append(mnist_box(transform(ink, rng)))
            if not drawn:
                continue
            batch = np.stack(drawn)
            if len(templates):
                batch = batch[(shape_features(batch) @ templates.T).max(axis=1) < DIGIT_SIMILARITY]
            glyphs = np.concatenate([glyphs, batch])[:share]
        kept[group.name] = len(glyphs)
        out.append(glyphs)
    images = np.concatenate(out)[:, None] if out else np.zeros((0, 1, 28, 28), np.uint8)
    order = rng.permutation(len(images))[:count]
    return np.ascontiguousarray(images[np.sort(order)]), kept


def _fingerprint(
    count: int, seed: int, families: dict[str, list[Path]], scripts: Sequence[str] | None, style: str = "hand"
) -> str:
    digest = hashlib.sha256(f"glyphs|{DRAW_VERSION}|{count}|{seed}|{PIL.__version__}".encode())
    if style != "hand":  # the hand-drawn sets keep the fingerprint they had before styles
        digest.update(f"|style:{style}".encode())
    if scripts is not None:
        digest.update(("|scripts:" + ",".join(group.name for group in script_groups(scripts))).encode())
    for path in (p for files in families.values() for p in files):
        digest.update(f"|{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def font_glyphs(count: int, seed: int, scripts: Sequence[str] | None = None, style: str = "hand") -> np.ndarray:
    """`count` (or slightly fewer) drawn glyphs, cached in the data cache (module doc); `scripts` restricts them to
    those script groups (for a script held out of OE and scored as a validation set); `style` as `draw_glyphs`."""
    _style(style)
    groups = script_groups(scripts)
    families = font_files(groups_families(groups))
    fingerprint = _fingerprint(count, seed, families, scripts, style)
    tag = "" if scripts is None else "-" + "-".join(group.name for group in groups)
    tag += "" if style == "hand" else f"-{style}"
    path = data_cache_dir() / f"font-glyphs-{count}-{seed}{tag}.npz"
    if path.is_file():
        try:
            arrays, manifest = load_npz_checked(path)
            if manifest.get("fingerprint") == fingerprint:
                return arrays["images"]
        except DataError:
            pass  # a damaged cache is redrawn
    images, kept = draw_glyphs(count, seed, families, scripts, style)
    manifest = {"fingerprint": fingerprint, "kept": kept, "count": count, "seed": seed, "style": style}
    save_npz_atomic(path, {"images": images}, manifest)
    return images

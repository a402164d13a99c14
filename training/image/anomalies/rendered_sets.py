"""Test anomaly sets rendered from Debian font packages: analogues of notMNIST and Omniglot (OE paper, Sec. 4.2).

All glyphs are white on black (the polarity of MNIST, the in-distribution set they are compared with) and
normalized like MNIST digits (`glyphs.mnist_box`): 28 x 28 uint8, ink fitted into 20 x 20, centered by mass.

- notmnist: the letters A-J (notMNIST's ten classes) in each of the ~465 display fonts of `fonts-aenigma`;
  glyphs a font lacks are skipped, as are fonts that draw all ten letters the same.
- omniglot: letters of the Omniglot alphabets that Noto (`fonts-noto-core`) covers. From the background set we
  keep the alphabets the reference code keeps (`safe_list` in MNIST/test.py, "other alphabets have characters
  which look like digits"): Balinese, Bengali, Grantha, Greek, Gujarati, Hebrew, Inuktitut, Sanskrit
  (Devanagari); from the evaluation set: Avestan, Ge'ez (Ethiopic), Glagolitic, Gurmukhi, Kannada, Malayalam,
  Manipuri (Meetei Mayek), Mongolian, Oriya, Sylheti, Syriac, Tibetan. Code points are Unicode letters only
  (category L*, so no combining marks or digits), at most 48 per alphabet (evenly spaced, as Omniglot has
  14-55 characters per alphabet), each drawn by every Noto Sans/Serif Regular (pen-like stroke added) and Bold
  font of the script. Glyphs too close to a digit (blurred cosine similarity >= 0.85 to any of 0-9 drawn by
  Noto Sans/Serif) are dropped: a heuristic stand-in for the reference's manual exclusion, which removes the
  closest look-alikes (e.g. vertical strokes, theta, Greek Zeta and Beta) but not every round or hooked letter.

Rendering takes seconds; the result is cached (`cache.py`) and re-rendered when the fonts or this code change.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from training.data.base import MissingPackageError
from training.data.cache import data_cache_dir, load_npz_checked, save_npz_atomic
from training.image.anomalies.glyphs import DIGIT_SIMILARITY, GlyphRenderer, shape_features

AENIGMA_DIR = Path("/usr/share/fonts/truetype/aenigma")
NOTO_DIR = Path("/usr/share/fonts/truetype/noto")
RENDER_VERSION = 2  # bump when rendering changes, to invalidate caches
NOTMNIST_LETTERS = "ABCDEFGHIJ"
MAX_LETTERS_PER_SCRIPT = 48
PEN_STROKE = 2  # pixels at the 64 px render size, added to Regular weights


@dataclass(frozen=True)
class Script:
    """An Omniglot alphabet and the Noto fonts and code points that stand in for it."""

    alphabet: str
    font_stem: str  # NotoSans{stem}-*.ttf and NotoSerif{stem}-*.ttf
    ranges: tuple[tuple[int, int], ...] = ()
    unicode_names: tuple[str, ...] = ()

    def letters(self) -> list[str]:
        chars = [chr(cp) for low, high in self.ranges for cp in range(low, high + 1)]
        for name in self.unicode_names:
            try:
                chars.append(unicodedata.lookup(name))
            except KeyError:
                continue
        letters = [c for c in chars if unicodedata.category(c).startswith("L")]
        if len(letters) <= MAX_LETTERS_PER_SCRIPT:
            return letters
        picks = np.linspace(0, len(letters) - 1, MAX_LETTERS_PER_SCRIPT).round().astype(int)
        return [letters[i] for i in picks]


_INUKTITUT = tuple(
    f"CANADIAN SYLLABICS {consonant}{vowel}"
    for consonant in ("", "P", "T", "K", "C", "M", "N", "S", "L", "Y", "F", "R", "Q", "NG")
    for vowel in ("I", "O", "A")
)
OMNIGLOT_SCRIPTS = (
    Script("Balinese", "Balinese", ((0x1B05, 0x1B33),)),
    Script("Bengali", "Bengali", ((0x0985, 0x09B9),)),
    Script("Grantha", "Grantha", ((0x11305, 0x11339),)),
    Script("Greek", "", ((0x0391, 0x03A9), (0x03B1, 0x03C9))),
    Script("Gujarati", "Gujarati", ((0x0A85, 0x0AB9),)),
    Script("Hebrew", "Hebrew", ((0x05D0, 0x05EA),)),
    Script("Inuktitut", "CanadianAboriginal", unicode_names=_INUKTITUT),
    Script("Sanskrit", "Devanagari", ((0x0905, 0x0939),)),
    Script("Avesta", "Avestan", ((0x10B00, 0x10B35),)),
    Script("Ge_ez", "Ethiopic", ((0x1200, 0x135A),)),
    Script("Glagolitic", "Glagolitic", ((0x2C00, 0x2C2E),)),
    Script("Gurmukhi", "Gurmukhi", ((0x0A05, 0x0A39),)),
    Script("Kannada", "Kannada", ((0x0C85, 0x0CB9),)),
    Script("Malayalam", "Malayalam", ((0x0D05, 0x0D3A),)),
    Script("Manipuri", "MeeteiMayek", ((0xABC0, 0xABE2),)),
    Script("Mongolian", "Mongolian", ((0x1820, 0x1878),)),
    Script("Oriya", "Oriya", ((0x0B05, 0x0B39),)),
    Script("Sylheti", "SylotiNagri", ((0xA800, 0xA822),)),
    Script("Syriac_Serto", "Syriac", ((0x0710, 0x072F),)),
    Script("Tibetan", "Tibetan", ((0x0F40, 0x0F6C),)),
)


@dataclass(frozen=True)
class RenderedSet:
    """Rendered glyphs (uint8 [N, 1, 28, 28]), a class per glyph, and the class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def _fingerprint(name: str, fonts: list[Path]) -> str:
    digest = hashlib.sha256(f"{name}|{RENDER_VERSION}|{PIL.__version__}".encode())
    for font in fonts:
        digest.update(f"|{font.name}:{font.stat().st_size}".encode())
    return digest.hexdigest()


def _stack(glyphs: list[np.ndarray]) -> np.ndarray:
    return np.stack(glyphs)[:, None] if glyphs else np.zeros((0, 1, 28, 28), np.uint8)


def render_notmnist(font_dir: Path = AENIGMA_DIR) -> RenderedSet:
    """Letters A-J in every font of `font_dir` (see module doc)."""
    glyphs: list[np.ndarray] = []
    labels: list[int] = []
    for path in sorted(font_dir.glob("*.ttf")):
        renderer = GlyphRenderer.open(path)
        if renderer is None:
            continue
        drawn = [(label, renderer.render(letter)) for label, letter in enumerate(NOTMNIST_LETTERS)]
        found = [(label, glyph) for label, glyph in drawn if glyph is not None]
        if len(found) > 1 and all(np.array_equal(found[0][1], glyph) for _, glyph in found[1:]):
            continue  # a font that draws every letter alike (a symbol font)
        glyphs.extend(glyph for _, glyph in found)
        labels.extend(label for label, _ in found)
    return RenderedSet(_stack(glyphs), np.asarray(labels, np.int64), tuple(NOTMNIST_LETTERS))


def _noto_fonts(font_dir: Path, stem: str) -> list[tuple[Path, int]]:
    fonts = []
    for style in ("Sans", "Serif"):
        for weight, stroke in (("Regular", PEN_STROKE), ("Bold", 0)):
            path = font_dir / f"Noto{style}{stem}-{weight}.ttf"
            if path.is_file():
                fonts.append((path, stroke))
    return fonts


def _digit_features(font_dir: Path) -> np.ndarray:
    templates: list[np.ndarray] = []
    for path, stroke in _noto_fonts(font_dir, ""):
        renderer = GlyphRenderer.open(path, stroke)
        if renderer is not None:
            templates.extend(g for g in map(renderer.render, "0123456789") if g is not None)
    return shape_features(np.stack(templates)) if templates else np.zeros((0, 28 * 28))


def render_omniglot(font_dir: Path = NOTO_DIR) -> RenderedSet:
    """Letters of Omniglot's alphabets in Noto fonts, digit look-alikes dropped (see module doc)."""
    glyphs: list[np.ndarray] = []
    labels: list[int] = []
    for label, script in enumerate(OMNIGLOT_SCRIPTS):
        letters = script.letters()
        for path, stroke in _noto_fonts(font_dir, script.font_stem):
            renderer = GlyphRenderer.open(path, stroke)
            if renderer is None:
                continue
            drawn = [glyph for glyph in map(renderer.render, letters) if glyph is not None]
            glyphs.extend(drawn)
            labels.extend([label] * len(drawn))
    images, classes = _stack(glyphs), np.asarray(labels, np.int64)
    digits = _digit_features(font_dir)
    if len(images) and len(digits):
        keep = (shape_features(images[:, 0]) @ digits.T).max(axis=1) < DIGIT_SIMILARITY
        images, classes = images[keep], classes[keep]
    return RenderedSet(images, classes, tuple(script.alphabet for script in OMNIGLOT_SCRIPTS))


RENDERED_SET_NAMES = ("notmnist", "omniglot")


def _source(name: str) -> tuple[Callable[[Path], RenderedSet], Path, str]:
    """(renderer, font directory, Debian package) of a rendered set; the directory is read at call time."""
    if name == "notmnist":
        return render_notmnist, AENIGMA_DIR, "fonts-aenigma"
    if name == "omniglot":
        return render_omniglot, NOTO_DIR, "fonts-noto-core"
    raise KeyError(f"no rendered set '{name}'; expected one of {RENDERED_SET_NAMES}")


def load_rendered_set(name: str, font_dir: Path | None = None) -> RenderedSet:
    """The rendered set `name` ("notmnist" or "omniglot"), from the cache or rendered (and cached) now."""
    render, default_dir, package = _source(name)
    fonts_root = font_dir or default_dir
    fonts = sorted(fonts_root.glob("*.ttf")) if fonts_root.is_dir() else []
    if not fonts:
        raise MissingPackageError(package, str(fonts_root), f"the '{name}' anomaly set")
    fingerprint = _fingerprint(name, fonts)
    path = data_cache_dir() / f"anomalies-{name}.npz"
    if path.is_file():
        arrays, manifest = load_npz_checked(path)
        if manifest.get("fingerprint") == fingerprint:
            names = tuple(str(n) for n in arrays["class_names"].tolist())
            return RenderedSet(arrays["images"], arrays["labels"], names)
    rendered = render(fonts_root)
    arrays = {
        "images": rendered.images,
        "labels": rendered.labels,
        "class_names": np.asarray(rendered.class_names),
    }
    save_npz_atomic(path, arrays, {"set": name, "fingerprint": fingerprint, "count": len(rendered.images)})
    return rendered

"""Rendering single characters from font files into MNIST-style 28 x 28 images.

MNIST's normalization (LeCun et al.): each digit's bounding box is scaled to fit a 20 x 20 box, keeping its
aspect ratio, then placed in the 28 x 28 field with its center of mass at the center. We do the same to a
glyph drawn large (64 px), white on black, and stretch its contrast so the brightest pixel is 255 (thin strokes
fade when shrunk; MNIST strokes are saturated), so rendered letters look like MNIST digits in all but shape.

A character the font lacks renders as the font's `.notdef` glyph (often a box) or as nothing; both are skipped:
a glyph whose ink equals that of a code point no font maps (U+10FFFD, private use) is treated as missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.image.anomalies.synthetic import gaussian_blur

FIELD = 28
BOX = 20
RENDER_SIZE = 64
ABSENT_CODEPOINT = "\U0010fffd"


def load_font(path: Path, size: int = RENDER_SIZE) -> ImageFont.FreeTypeFont | None:
    """The font at `path`, or None if FreeType cannot read it. BASIC layout: the same result with or without raqm."""
    try:
        return ImageFont.truetype(str(path), size=size, layout_engine=ImageFont.Layout.BASIC)
    except (OSError, ValueError):
        return None


def glyph_ink(font: ImageFont.FreeTypeFont, char: str, stroke_width: int = 0) -> np.ndarray | None:
    """The character drawn white on black, cropped to its ink; None if nothing is drawn."""
    size = int(font.size)
    canvas = Image.new("L", (4 * size, 4 * size), 0)
    try:
        ImageDraw.Draw(canvas).text(
            (2 * size, 2 * size), char, font=font, fill=255, anchor="mm", stroke_width=stroke_width, stroke_fill=255
        )
    except (OSError, ValueError):
        return None
    box = canvas.getbbox()
    if box is None:
        return None
    return np.asarray(canvas.crop(box), dtype=np.uint8)


def centre_of_ink(image: np.ndarray) -> tuple[float, float] | None:
    """(row, col) centre of mass of an H x W image; None for a blank one."""
    total = float(image.sum())
    if total <= 0.0:
        return None
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def mnist_box(ink: np.ndarray) -> np.ndarray:
    """Scale the ink to fit a 20 x 20 box (aspect kept), stretch it to a maximum of 255, and center its mass in a
    28 x 28 uint8 field."""
    height, width = ink.shape
    scale = BOX / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    glyph = np.asarray(Image.fromarray(ink).resize(new_size, Image.Resampling.BILINEAR), dtype=np.uint8)
    brightest = int(glyph.max())
    if 0 < brightest < 255:  # hairline strokes fade when shrunk; MNIST strokes always reach full white
        glyph = np.round(glyph.astype(np.float64) * (255.0 / brightest)).astype(np.uint8)
    center_row, center_col = centre_of_ink(glyph.astype(np.float64)) or (glyph.shape[0] / 2, glyph.shape[1] / 2)
    top = int(np.clip(round(FIELD / 2 - center_row), 0, FIELD - glyph.shape[0]))
    left = int(np.clip(round(FIELD / 2 - center_col), 0, FIELD - glyph.shape[1]))
    field = np.zeros((FIELD, FIELD), dtype=np.uint8)
    field[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return field


DIGIT_SIMILARITY = 0.85
"""`shape_features` cosine similarity to a drawn digit at or above which a glyph counts as a digit look-alike (the
Omniglot analogue and the font-glyph OE source drop such glyphs)."""


def shape_features(images: np.ndarray) -> np.ndarray:
    """Blurred, mean-centered, unit-norm pixel vectors of 28 x 28 images: their dot products are cosine similarities
    that tolerate small shifts (how glyphs are compared with digits to drop look-alikes)."""
    blurred = gaussian_blur(images.reshape(-1, FIELD, FIELD).astype(np.float64), 1.0, axes=(1, 2))
    flat = blurred.reshape(len(images), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


class GlyphRenderer:
    """Renders characters of one font as 28 x 28 MNIST-style images; None for characters the font lacks."""

    def __init__(self, font: ImageFont.FreeTypeFont, stroke_width: int = 0) -> None:
        self.font = font
        self.stroke_width = stroke_width
        self._missing = glyph_ink(font, ABSENT_CODEPOINT, stroke_width)

    @classmethod
    def open(cls, path: Path, stroke_width: int = 0) -> GlyphRenderer | None:
        """A renderer for the font file at `path`, or None if it cannot be read."""
        font = load_font(path)
        return None if font is None else cls(font, stroke_width)

    def ink(self, char: str) -> np.ndarray | None:
        """The cropped ink of `char`, or None if it is blank or the font's missing-glyph shape."""
        ink = glyph_ink(self.font, char, self.stroke_width)
        if ink is None or int(ink.max()) < 128:
            return None
        if self._missing is not None and ink.shape == self._missing.shape and np.array_equal(ink, self._missing):
            return None
        return ink

    def render(self, char: str) -> np.ndarray | None:
        """`char` as a 28 x 28 uint8 MNIST-style image, or None if the font lacks it."""
        ink = self.ink(char)
        return None if ink is None else mnist_box(ink)

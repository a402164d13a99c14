"""Scribbles: procedurally drawn pen strokes, an OE source of glyph-like shapes that are not digits.

The clip-art pool teaches the net that pictures, textures and objects are not digits; it holds almost nothing that
looks like handwriting, so characters of other scripts and letters (strokes of a pen, the kind of input a digit
reader most often meets by mistake) are where the gate is weakest. No font, alphabet or data set is used here:
every scribble is drawn from random numbers, so the source shares nothing with any anomaly set but the idea of a
pen stroke.

One scribble: 2-4 strokes on a 64 x 64 canvas, each a smooth curve through 3-6 random points (Catmull-Rom), an
elliptic arc, a straight bar or a dot, drawn with one pen width (4-8 px), blurred a little as a scanned pen is,
then normalized as MNIST normalizes digits (`glyphs.mnist_box`: ink box scaled to 20 x 20, centre of mass
centred). A single stroke is never drawn alone: one bar is a 1 and one loop is a 0. Scribbles the baseline reads
as a digit with near certainty are screened out where the pool is built (`screen_scribbles`), as clip art showing
digits is.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.image.anomalies.glyphs import mnist_box

CANVAS = 64
MARGIN = 6
STROKES = (2, 3, 4)
STROKE_WEIGHTS = (0.45, 0.35, 0.2)
KINDS = ("curve", "arc", "bar", "dot")
KIND_WEIGHTS = (0.55, 0.25, 0.15, 0.05)
PEN = (4, 8)  # pen width in canvas pixels, inclusive
CURVE_POINTS = (3, 6)  # control points of a curve, inclusive
SPLINE_STEPS = 12  # segments drawn between two control points
BLUR_RADIUS = 0.8


def _catmull_rom(points: np.ndarray) -> list[tuple[float, float]]:
    """A smooth curve through `points` (k x 2): uniform Catmull-Rom, ends duplicated."""
    padded = np.vstack([points[:1], points, points[-1:]])
    t = np.linspace(0.0, 1.0, SPLINE_STEPS, endpoint=False)[:, None]
    out: list[tuple[float, float]] = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        segment = 0.5 * (
            2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3
        )
        out.extend((float(x), float(y)) for x, y in segment)
    out.append((float(points[-1, 0]), float(points[-1, 1])))
    return out


def _stroke(draw: ImageDraw.ImageDraw, kind: str, pen: int, rng: np.random.Generator) -> None:
    low, high = MARGIN, CANVAS - MARGIN
    if kind == "dot":
        x, y = rng.uniform(low, high, size=2)
        r = pen * rng.uniform(0.6, 1.0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        return
    if kind == "arc":
        cx, cy = rng.uniform(low + 10, high - 10, size=2)
        rx, ry = rng.uniform(6, 24, size=2)
        start = float(rng.uniform(0, 360))
        extent = float(rng.uniform(90, 300))  # never a closed ring: a lone ring reads as 0
        draw.arc((cx - rx, cy - ry, cx + rx, cy + ry), start, start + extent, fill=255, width=pen)
        return
    count = 2 if kind == "bar" else int(rng.integers(CURVE_POINTS[0], CURVE_POINTS[1] + 1))
    points = rng.uniform(low, high, size=(count, 2))
    path = [(float(x), float(y)) for x, y in points] if kind == "bar" else _catmull_rom(points)
    draw.line(path, fill=255, width=pen, joint="curve")
    radius = pen / 2
    for x, y in (path[0], path[-1]):  # round pen ends
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)


def scribble(rng: np.random.Generator) -> np.ndarray:
    """One scribble as a 28 x 28 uint8 MNIST-style image (white ink on black)."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    pen = int(rng.integers(PEN[0], PEN[1] + 1))
    strokes = int(rng.choice(STROKES, p=STROKE_WEIGHTS))
    kinds = rng.choice(KINDS, size=strokes, p=KIND_WEIGHTS)
    if all(kind == "dot" for kind in kinds):
        kinds[0] = "curve"
    for kind in kinds:
        _stroke(draw, str(kind), pen, rng)
    blurred = canvas.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    box = blurred.getbbox()
    ink = np.asarray(blurred.crop(box) if box else blurred, dtype=np.uint8)
    return mnist_box(ink)


def scribbles(n: int, seed: int) -> np.ndarray:
    """n scribbles as uint8 [n, 1, 28, 28], reproducible from `seed`."""
    rng = np.random.default_rng([seed, 0x5C81])
    return np.stack([scribble(rng) for _ in range(n)])[:, None, :, :]

"""A capture's file as the model saw it: image bytes decoded like the service's codec, arrays and texts as stored.

`image_pixels` repeats service/codecs/image.py's steps (EXIF orientation, transparency composited onto black,
conversion to the card's channels, a bilinear resize to exactly the model's size) so training sees the pixels the
live gate scored; a test checks both agree on the same bytes. Training never imports the service.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from training.captures.store import Capture

Shape = tuple[int, int, int]


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image if image.mode == mode else image.convert(mode)


def image_pixels(data: bytes, shape: Shape) -> np.ndarray:
    """Encoded image bytes as uint8 [C, H, W] at `shape` (the service's decoding, before its /255 scaling)."""
    channels, height, width = shape
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        converted = _to_mode(ImageOps.exif_transpose(image), "L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def capture_pixels(capture: Capture, shape: Shape) -> np.ndarray:
    """An image or array capture as uint8 [C, H, W] at `shape`; ValueError for a text capture or another shape."""
    path = capture.path
    if capture.input_kind == "image":
        return image_pixels(path.read_bytes(), shape)
    if capture.input_kind == "array":
        array = np.load(path, allow_pickle=False)
        if tuple(array.shape) != shape:
            raise ValueError(f"capture {capture.id}: array of shape {array.shape}, the model takes {shape}")
        return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"capture {capture.id} is a {capture.input_kind} capture, not an image")


def capture_text(capture: Capture) -> str:
    """A text capture's text."""
    if capture.input_kind != "text":
        raise ValueError(f"capture {capture.id} is a {capture.input_kind} capture, not a text")
    return capture.path.read_text(encoding="utf-8")

"""Image decoding for image models: encoded images (PNG/JPEG) and raw arrays.

Every function returns a float32 array [C, H, W] in [0, 1] for the model's input spec, or raises `CodecError`
with a reason the caller prefixes with the instance index (`instances[3]: ...`).

Image policy (what the service does to an uploaded image before the graph sees it):
1. Only PNG and JPEG are opened; width x height is checked against the request's `PixelBudget` (a per-image
   limit derived from the model's input size, and a per-request total) from the header, before any pixel is
   decoded (Pillow's own decompression-bomb check is turned into the same error).
2. JPEG EXIF orientation is applied. Transparent pixels (alpha channel, or a PNG tRNS colour in palette, grey or
   RGB images) are composited onto black (the MNIST background).
3. The image is converted to the card's channels with Pillow: RGB -> L uses ITU-R 601-2 luma
   (0.299 R + 0.587 G + 0.114 B), L -> RGB repeats the channel; 16-bit images are reduced to 8 bits.
4. If its size differs from the card's, it is resized to exactly width x height (the aspect ratio is NOT kept:
   clients that care should crop or pad to the model's aspect ratio first) with Pillow's antialiased bilinear
   filter.
5. Pixel values are divided by 255, giving float32 in [0, 1].
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.card import ImageInputSpec
from service.codecs.errors import CodecError

_IMAGE_FORMATS = ("PNG", "JPEG")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
# What Pillow's PNG and JPEG plugins raise on hostile or damaged bytes (found by truncating and flipping bytes of
# valid files: tests/service/test_hostile_images.py).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError)


@dataclass
class PixelBudget:
    """The pixels one request may still decode: at most `per_image` per image and `per_request` in all. Each image
    is charged from its header, before its pixels are decoded, so the decoding work of a request is bounded by
    `per_request` pixels whatever its images' compressed size (a 65 KB PNG can hold 16.7 million pixels)."""

    per_image: int
    per_request: int
    used: int = field(default=0)

    def charge(self, width: int, height: int) -> None:
        """Count a width x height image; CodecError if it is over either limit (then nothing is counted)."""
        area = width * height
        if area > self.per_image:
            raise CodecError(f"image is {width}x{height} = {area} pixels, more than the limit of {self.per_image}")
        if self.used + area > self.per_request:
            raise CodecError(
                f"image is {width}x{height} = {area} pixels, more than the {self.per_request - self.used} left of "
                f"the request's limit of {self.per_request} pixels in all"
            )
        self.used += area


def decode_base64(text: str) -> bytes:
    """Standard base64 (padding required), optionally as a `data:image/...;base64,` URL."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CodecError(f"image_b64 is not valid base64 ({e})") from e


def decode_image(data: bytes, spec: ImageInputSpec, budget: PixelBudget | int) -> np.ndarray:
    """PNG/JPEG bytes -> float32 [C, H, W] in [0, 1] at the card's size (see the module docstring). `budget` is
    the request's `PixelBudget`, charged here; an int is a budget of that many pixels for this one image."""
    if isinstance(budget, int):
        budget = PixelBudget(per_image=budget, per_request=budget)
    max_pixels = budget.per_image
    try:
        image = Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CodecError(f"image has more than the limit of {max_pixels} pixels ({e})") from e
    except UnidentifiedImageError as e:
        raise CodecError("image could not be decoded: not a PNG or JPEG image") from e
    except _DECODE_ERRORS as e:  # a header cut short or corrupt: the client's bad input, never a 500
        raise CodecError(f"image could not be decoded: {type(e).__name__}: {e}") from e
    with image:
        width, height = image.size
        budget.charge(width, height)
        try:
            image.load()
            converted = _to_mode(ImageOps.exif_transpose(image), "L" if spec.channels == 1 else "RGB")
        except _DECODE_ERRORS as e:  # truncated or corrupt data, malformed EXIF or chunks
            raise CodecError(f"image could not be decoded: {e}") from e
    if converted.size != (spec.width, spec.height):
        converted = converted.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.float32) / np.float32(255.0)
    return pixels[np.newaxis] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64) / 65535.0
        image = Image.fromarray(np.round(wide * 255.0).clip(0, 255).astype(np.uint8))  # uint8 2-D: mode L
    # An alpha channel, or a tRNS transparent colour (palette entry, grey level or RGB colour): all composited.
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image if image.mode == mode else image.convert(mode)


def decode_array(value: Any, spec: ImageInputSpec) -> np.ndarray:
    """A nested list in the model's input shape [C, H, W], finite, within the card's value range."""
    array = numeric_array(value, "array must be a rectangular nested list of numbers")
    if array.shape != spec.shape:
        raise CodecError(f"array has shape {list(array.shape)}, expected {list(spec.shape)}")
    return check_values(array, spec)


INLINE_DECODE_PIXELS = 64 * 64
"""A request whose images are all PNGs of at most this many pixels is decoded on the event loop: a 28x28 PNG
decodes in about 0.2 ms and a 64x64 RGB one in about 0.4 ms (measured on the loaded 2-core bench machine), less than
a decode thread hand-off costs the loop under load (BENCHMARKS.md, section 2)."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, which must come first at a fixed offset; None if `data` does not
    start as a PNG does (then nothing is assumed about its size)."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def small_pngs(images: list[bytes]) -> bool:
    """Whether every image is a PNG of at most `INLINE_DECODE_PIXELS` pixels (cheap enough to decode inline)."""
    for data in images:
        size = png_size(data)
        if size is None or size[0] * size[1] > INLINE_DECODE_PIXELS:
            return False
    return True


def numeric_array(value: Any, message: str) -> np.ndarray:
    """A nested list of JSON numbers as float64; strings, booleans, nulls, ragged lists and integers too large for
    a float (a 400-digit literal) are refused with `message`, never converted or left to overflow."""
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise CodecError(message) from e
    if raw.dtype.kind not in ("i", "u", "f"):  # 'b' booleans, 'U' strings, 'O' None / huge integers / mixed
        found = {"b": "booleans", "U": "strings"}.get(raw.dtype.kind, "non-numbers or integers too large")
        raise CodecError(f"{message} (found {found})")
    return raw.astype(np.float64)  # integers beyond int64/uint64 never get here: numpy keeps them as objects


def check_values(array: np.ndarray, spec: ImageInputSpec) -> np.ndarray:
    """Refuse NaN, infinities and values outside the card's range; returns float32."""
    if not np.all(np.isfinite(array)):
        raise CodecError("array contains NaN or infinite values")
    low, high = spec.value_range
    found_low, found_high = float(array.min()), float(array.max())
    if found_low < low or found_high > high:
        raise CodecError(f"array values must be in [{low:g}, {high:g}], found min {found_low:g} and max {found_high:g}")
    return array.astype(np.float32)

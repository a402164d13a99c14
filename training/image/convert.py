"""Conversions between array layouts, pixel types, PIL images, channel counts and image sizes.

Every loader ends in the same layout: NCHW with C in {1, 3}, uint8 in [0, 255] or float32 in [0, 1].
Grayscale from RGB uses the ITU-R 601-2 luma `L = 0.299 R + 0.587 G + 0.114 B` (what PIL's `convert("L")` does);
RGB from grayscale repeats the channel. Resizing is PIL's antialiased bilinear filter.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.data.base import DataError

CHANNEL_COUNTS = (1, 3)
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def to_nchw(array: np.ndarray, what: str) -> np.ndarray:
    """NHW, NHWC or NCHW (C in {1, 3}) -> NCHW.

    A 4-d array whose axes 1 and 3 could both be channels (e.g. N x 3 x 32 x 3) is read as NCHW.
    """
    if array.ndim == 3:
        return array[:, None, :, :]
    if array.ndim != 4:
        raise DataError(f"{what}: expected images as NHW, NHWC or NCHW, got shape {array.shape}")
    if array.shape[1] in CHANNEL_COUNTS:
        return array
    if array.shape[3] in CHANNEL_COUNTS:
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    raise DataError(f"{what}: shape {array.shape} has no channel axis of size 1 or 3 (expected NHW, NHWC or NCHW)")


def check_pixels(array: np.ndarray, what: str) -> np.ndarray:
    """uint8 passes; other integers in [0, 255] become uint8; floats in [0, 1] become float32; else DataError."""
    if array.dtype == np.uint8:
        return array
    if array.size == 0:
        raise DataError(f"{what}: no images")
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.integer):
        if low < 0 or high > 255:
            raise DataError(f"{what}: integer pixels must lie in [0, 255], got [{low:g}, {high:g}]")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
            raise DataError(f"{what}: float pixels must lie in [0, 1], got [{low:g}, {high:g}]")
        return array.astype(np.float32, copy=False)
    raise DataError(f"{what}: unsupported pixel dtype {array.dtype} (use uint8, or float in [0, 1])")


def flatten_alpha(image: Image.Image, background: int) -> Image.Image:
    """Composite any transparency onto a gray `background` (0-255); returns an "L" or "RGB" image."""
    gray = is_gray(image)
    has_alpha = image.mode in {"RGBA", "LA", "La", "PA", "RGBa"} or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("L" if gray else "RGB")
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "F"}:
        # 16-bit and float grayscale: rescale to 0-255 (PIL's convert("L") would clip instead).
        values = np.asarray(image, dtype=np.float64)
        top = max(float(values.max()), 1.0)
        scaled = np.clip(values * (255.0 / (65535.0 if top > 255.0 else 255.0)), 0, 255)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    return image.convert("L" if gray else "RGB")


def is_gray(image: Image.Image) -> bool:
    """Whether an image (by its mode, or for palette images its palette) carries no color."""
    return image.mode in GRAY_MODES or (image.mode == "P" and _palette_is_gray(image))


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette()
    if not palette:
        return True
    rgb = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    return bool(np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))


def image_to_chw(image: Image.Image) -> np.ndarray:
    """An "L" or "RGB" PIL image -> uint8 CHW."""
    if image.mode not in {"L", "RGB"}:
        raise ValueError(f"expected an L or RGB image, got mode {image.mode}")
    array = np.asarray(image, dtype=np.uint8)
    return array[None, :, :] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """NCHW with 1 or 3 channels -> `channels` channels (luma for 3 -> 1, repetition for 1 -> 3)."""
    have = images.shape[1]
    if have == channels:
        return images
    if (have, channels) == (1, 3):
        return np.repeat(images, 3, axis=1)
    if (have, channels) == (3, 1):
        luma = np.tensordot(images.astype(np.float64), LUMA_WEIGHTS, axes=([1], [0]))[:, None]
        if images.dtype == np.uint8:
            return np.clip(np.round(luma), 0, 255).astype(np.uint8)
        return np.clip(luma, 0.0, 1.0).astype(np.float32)
    raise DataError(f"cannot convert {have} channels to {channels}")


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NCHW uint8 or float32 -> the same at `size` = (H, W), with PIL's antialiased bilinear filter."""
    height, width = size
    if images.shape[2:] == (height, width):
        return images
    out = np.empty((*images.shape[:2], height, width), dtype=images.dtype)
    for index in range(images.shape[0]):
        for channel in range(images.shape[1]):
            plane = Image.fromarray(images[index, channel])
            resized = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
            out[index, channel] = np.clip(resized, 0.0, 1.0) if images.dtype != np.uint8 else resized
    return out


def fit_to_shape(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """NCHW images -> `shape` = (C, H, W): channels converted, then resized (aspect ratio not kept)."""
    channels, height, width = shape
    if channels not in CHANNEL_COUNTS:
        raise DataError(f"target shape {shape}: channels must be 1 or 3")
    return resize_images(convert_channels(images, channels), (height, width))

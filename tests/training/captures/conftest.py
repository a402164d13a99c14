"""A capture store written by the service's own store module, for the training side to read."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from service import capture_store


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def stripes(seed: int, size: int = 28) -> np.ndarray:
    """A uint8 [size, size] picture unlike any other seed's: random bars of random brightness."""
    rng = np.random.default_rng(seed)
    picture = np.zeros((size, size), np.uint8)
    for _ in range(4):
        row, height = int(rng.integers(0, size - 4)), int(rng.integers(2, 8))
        col, width = int(rng.integers(0, size - 4)), int(rng.integers(2, 12))
        picture[row : row + height, col : col + width] = int(rng.integers(80, 256))
    return picture


@dataclass
class Sent:
    """What a test stored: id, payload and the row's fields."""

    id: str
    payload: bytes
    source: str
    reject: bool
    time: float


def add(
    directory: Path,
    capture_id: str,
    payload: bytes,
    *,
    time: float,
    source: str = "",
    reject: bool = True,
    model: str = "digits",
    input_kind: str = "image",
    score: float = 0.9,
) -> Sent:
    extension, media_type = (".txt", "text/plain; charset=utf-8") if input_kind == "text" else (".png", "image/png")
    record = capture_store.CaptureRecord(
        id=capture_id, time=time, model=model, version="1", kind="rejected" if reject else "control",
        anomaly_score=score, threshold=0.5, label="3", label_index=3, reject=reject, input_kind=input_kind,
        media_type=media_type, extension=extension, source=source,
    )  # fmt: skip
    with capture_store.opened(directory) as connection:
        capture_store.add(directory, connection, record, payload)
    return Sent(capture_id, payload, source, reject, time)

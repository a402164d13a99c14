"""The IDX file format of MNIST, Fashion-MNIST and KMNIST (LeCun et al.), plain or gzip-compressed.

Layout: two zero bytes, a type code (0x08 = unsigned byte, the only one these sets use), the number of
dimensions d, then d big-endian uint32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from training.data.base import DataError

UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array stored in an IDX file (`.gz` files are decompressed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != UNSIGNED_BYTE:
        raise DataError(f"{path}: IDX type code {raw[2]:#04x} is not supported (only unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says {shape} ({expected} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip-compressed when `path` ends in `.gz`); used to make test fixtures."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writer takes uint8, got {array.dtype}")
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as stream:
        stream.write(payload)

"""R objects serialized the way R writes them, for the tests of `training.data.rlazyload` and its readers."""

from __future__ import annotations

import struct
import zlib

UTF8, LATIN1 = 1 << (12 + 3), 1 << (12 + 2)  # CHARSXP encoding flags (R's gp bits, shifted into the flags word)


def serialized(
    strings: list[str | bytes | None], version: int = 3, *, sexp: int = 16, attributes: bool = False
) -> bytes:
    """An R character vector in XDR serialization, as `serialize(x, NULL, xdr = TRUE)` writes it."""
    out = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        out += struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", sexp | ((1 << 9) if attributes else 0), len(strings))
    for item in strings:
        if item is None:
            out += struct.pack(">ii", 9, -1)
            continue
        raw, flags = (item, 9 | LATIN1) if isinstance(item, bytes) else (item.encode("utf-8"), 9 | UTF8)
        out += struct.pack(">ii", flags, len(raw)) + raw
    return out


def record(payload: bytes) -> bytes:
    """One record of a lazy-load database: the payload's length, then its zlib stream."""
    return struct.pack(">I", len(payload)) + zlib.compress(payload)

"""Character vectors from an installed R package's data, read without R.

An R package installed by Debian keeps its data sets in a lazy-load database, `data/Rdata.rdb`: one record per
object, each a 4-byte big-endian length of the serialized object followed by its zlib stream. The serialization is
R's XDR format (`R_Serialize`): a header ("X\\n", format version 2 or 3, writer and reader versions, and for version
3 the native encoding), then the object as typed items. Only what text data sets need is read here: a character
vector (STRSXP) of CHARSXP strings, UTF-8, Latin-1 or ASCII, NA kept as None. Anything else is refused by name.

Reading the record stream in file order needs no index (`Rdata.rdx`): the objects come back in the order they were
written (alphabetical for `R CMD INSTALL`). The `rdata` library reads .rda/.rds files but not this database, and
would bring xarray and pandas for one vector type; this is the forty lines the format needs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from training.data.base import DataError

STRSXP = 16
CHARSXP = 9
NA_STRING_LENGTH = -1
_TYPE_MASK = 0xFF
_LATIN1 = 1 << (12 + 2)


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.offset, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            raise DataError(f"{self.where}: serialized R object ends early (offset {self.offset}, wanted {n} bytes)")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def integer(self) -> int:
        (value,) = struct.unpack(">i", self.take(4))
        return int(value)


def parse_character_vector(data: bytes, where: str = "R object") -> list[str | None]:
    """The strings of one XDR-serialized R character vector (attributes such as names are ignored)."""
    reader = _Reader(data, where)
    if reader.take(2) != b"X\n":
        raise DataError(f"{where}: not an XDR-serialized R object (R's 'X\\n' header missing)")
    version = reader.integer()
    if version not in (2, 3):
        raise DataError(f"{where}: R serialization format {version} is not supported (2 or 3)")
    reader.integer(), reader.integer()  # the writer's and the oldest reader's R versions
    if version == 3:
        reader.take(reader.integer())  # the native encoding's name
    flags = reader.integer()
    if flags & _TYPE_MASK != STRSXP:
        raise DataError(f"{where}: R object of type {flags & _TYPE_MASK}, not a character vector ({STRSXP})")
    strings: list[str | None] = []
    for _ in range(reader.integer()):
        item = reader.integer()
        if item & _TYPE_MASK != CHARSXP:
            raise DataError(f"{where}: element of type {item & _TYPE_MASK} in a character vector")
        length = reader.integer()
        if length == NA_STRING_LENGTH:
            strings.append(None)
            continue
        raw = reader.take(length)
        strings.append(raw.decode("latin-1" if item & _LATIN1 else "utf-8"))
    return strings


def lazyload_records(path: Path) -> list[bytes]:
    """The decompressed serialized objects of a lazy-load database (`.rdb`), in file order."""
    data = path.read_bytes()
    records: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise DataError(f"{path}: truncated record header at byte {offset}")
        (expected,) = struct.unpack(">I", data[offset : offset + 4])
        stream = zlib.decompressobj()
        try:
            record = stream.decompress(data[offset + 4 :])
        except zlib.error as error:
            raise DataError(f"{path}: record at byte {offset} is not a zlib stream ({error})") from error
        if not stream.eof or len(record) != expected:
            raise DataError(f"{path}: record at byte {offset} is truncated ({len(record)} of {expected} bytes)")
        records.append(record)
        offset = len(data) - len(stream.unused_data)
    return records


def lazyload_character_vectors(path: Path) -> list[list[str | None]]:
    """Every object of a lazy-load database as a character vector (DataError if one is anything else)."""
    return [parse_character_vector(r, f"{path} record {i}") for i, r in enumerate(lazyload_records(path))]

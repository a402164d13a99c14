"""Character vectors read from an R lazy-load database without R, checked on records serialized here."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.rserialize import record, serialized
from training.data.base import DataError
from training.data.rlazyload import (
    lazyload_character_vectors,
    lazyload_records,
    parse_character_vector,
)


def test_strings_come_back_in_order_with_their_encodings_and_nas() -> None:
    strings: list[str | bytes | None] = ["EMMA", "", None, "naïve — ok", "caf\xe9".encode("latin-1")]
    assert parse_character_vector(serialized(strings)) == ["EMMA", "", None, "naïve — ok", "café"]
    assert parse_character_vector(serialized(["a", "b"], version=2)) == ["a", "b"]
    assert parse_character_vector(serialized([])) == []
    # A names attribute (or any other) follows the elements and is not read.
    assert parse_character_vector(serialized(["x"], attributes=True) + b"\x00\x00\x04\x02") == ["x"]


def test_anything_but_a_character_vector_is_refused_by_name() -> None:
    good = serialized(["one", "two"])
    with pytest.raises(DataError, match="not an XDR-serialized R object"):
        parse_character_vector(b"A\n" + good[2:])
    with pytest.raises(DataError, match="format 4 is not supported"):
        parse_character_vector(b"X\n" + struct.pack(">i", 4) + good[6:])
    with pytest.raises(DataError, match=r"type 13, not a character vector \(16\)"):
        parse_character_vector(serialized(["one"], sexp=13), "emma")
    broken = bytearray(good)
    broken[broken.index(b"one") - 8 : broken.index(b"one") - 4] = struct.pack(">i", 10)
    with pytest.raises(DataError, match="element of type 10"):
        parse_character_vector(bytes(broken))
    for cut in (len(good) - 1, len(good) - 4, 10):
        with pytest.raises(DataError, match="ends early"):
            parse_character_vector(good[:cut], "emma")


def test_records_are_read_in_file_order_and_damage_is_named(tmp_path: Path) -> None:
    database = tmp_path / "Rdata.rdb"
    database.write_bytes(record(serialized(["first"])) + record(serialized(["second", None], version=2)))
    assert lazyload_character_vectors(database) == [["first"], ["second", None]]
    assert lazyload_records(database)[0] == serialized(["first"])
    database.write_bytes(b"")
    assert lazyload_character_vectors(database) == []
    whole = record(serialized(["first"]))
    for damaged, message in (
        (whole[:-3], "is truncated"),  # the zlib stream stops early
        (whole[:4] + b"not zlib at all", "is not a zlib stream"),
        (struct.pack(">I", 999) + whole[4:], r"truncated \(\d+ of 999 bytes\)"),  # the length header disagrees
        (whole + whole[:2], "truncated record header at byte"),
    ):
        database.write_bytes(damaged)
        with pytest.raises(DataError, match=message):
            lazyload_character_vectors(database)
    database.write_bytes(whole + record(serialized(["x"], sexp=19)))
    with pytest.raises(DataError, match="record 1: R object of type 19"):
        lazyload_character_vectors(database)

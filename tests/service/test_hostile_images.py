"""Hostile and damaged images are the client's bad input: a 422 with a reason, never a 500 (issue reproducers,
every truncation of a small PNG and JPEG, random byte flips)."""

from __future__ import annotations

import io
import random
import zlib

import numpy as np
import pytest
from PIL import Image

from service.codecs import CodecError, decode_image
from tests.service.test_codecs import GRAY

LIMIT = 4096 * 4096


def _encoded(fmt: str, mode: str = "L") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (28, 28, 3) if mode == "RGB" else (28, 28)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _png_with(extra: bytes) -> bytes:
    """A valid 1x1 gray PNG with `extra` chunks inserted before IDAT."""
    header = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
    return header + extra + _chunk(b"IDAT", zlib.compress(b"\x00\x80")) + _chunk(b"IEND", b"")


REPRODUCERS = {
    "JPEG header alone": b"\xff\xd8\xff\xe0\x01\x00JFIF",
    "PNG signature alone": b"\x89PNG\r\n\x1a\n",
    "PNG header alone": _png_with(b"")[:33],
    "1-byte tRNS chunk": _png_with(_chunk(b"tRNS", b"\x01")),
    "4-byte eXIf chunk": _png_with(_chunk(b"eXIf", b"MM\x00*")),
    "huge zTXt chunk": _png_with(_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"x" * 2_000_000))),
    "JPEG cut in half": _encoded("JPEG")[: len(_encoded("JPEG")) // 2],
}


@pytest.mark.parametrize("name", REPRODUCERS)
def test_reproducers_are_codec_errors_or_decode(name: str) -> None:
    try:
        decoded = decode_image(REPRODUCERS[name], GRAY, LIMIT)
    except CodecError as e:
        assert str(e).startswith("image could not be decoded")
    else:  # Pillow may accept an odd chunk: then the image must be a proper model input
        assert decoded.shape == (1, 28, 28) and decoded.dtype == np.float32


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "L"), ("PNG", "RGB"), ("JPEG", "L"), ("JPEG", "RGB")])
def test_every_truncation_is_a_codec_error(fmt: str, mode: str) -> None:
    data = _encoded(fmt, mode)
    decoded_anyway = []
    for cut in range(len(data)):
        try:
            decoded = decode_image(data[:cut], GRAY, LIMIT)
        except CodecError:
            continue
        assert decoded.shape == (1, 28, 28)
        decoded_anyway.append(cut)
    # Pillow does without a PNG's last 20 bytes (the zlib checksum, IDAT's CRC and the IEND chunk), whose pixels
    # are all there; every other cut is refused.
    assert decoded_anyway == (list(range(len(data) - 20, len(data))) if fmt == "PNG" else [])


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "L"), ("JPEG", "RGB")])
def test_random_byte_flips_never_escape_as_other_errors(fmt: str, mode: str) -> None:
    data, rng = _encoded(fmt, mode), random.Random(0)
    for _ in range(1500):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            decoded = decode_image(bytes(damaged), GRAY, LIMIT)
        except CodecError:
            continue
        assert decoded.shape == (1, 28, 28)


@pytest.mark.anyio
async def test_over_http_they_are_422_with_a_json_reason(serve) -> None:
    async with serve(raise_app_exceptions=False) as (_, client):
        for name, data in REPRODUCERS.items():
            response = await client.post("/v1/models/tiny/predict", files={"image": ("x", data)})
            assert response.status_code in (200, 422), (name, response.status_code, response.text)
            if response.status_code == 422:
                assert response.json()["error"].startswith("instances[0]: image could not be decoded"), name


def test_an_error_while_opening_names_its_kind() -> None:
    with pytest.raises(CodecError, match=r"^image could not be decoded: OSError: "):
        decode_image(_encoded("JPEG")[:6], GRAY, LIMIT)  # Pillow's JPEG plugin fails in Image.open here

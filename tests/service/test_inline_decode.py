"""Which requests are decoded on the event loop and which in a decode thread (service/inference.py): small numeric
bodies, small PNGs and short native texts inline, everything else (large bodies, large or non-PNG images, long
texts) in a thread."""

from __future__ import annotations

import io
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.codecs.image import INLINE_DECODE_PIXELS, png_size, small_pngs
from service.codecs.text import INLINE_TEXT_CHARS
from service.protocol import native, v2
from tests.service.conftest import clone_artifact, digit_like, png_bytes

pytestmark = pytest.mark.anyio


def test_png_size_reads_the_ihdr_chunk() -> None:
    assert png_size(png_bytes(np.zeros((30, 40), np.uint8))) == (40, 30)
    assert png_size(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 7, 9)) == (7, 9)
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(jpeg, format="JPEG")
    assert png_size(jpeg.getvalue()) is None
    assert png_size(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) is None  # too short for IHDR
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
    assert png_size(header) is None  # the IHDR tag, cut before its size
    assert png_size(header + struct.pack(">I", 7)) is None
    assert png_size(b"GIF89a\0\0\0\0\0\0IHDR" + struct.pack(">II", 7, 9)) is None  # IHDR, but not a PNG
    # Sizes are unsigned: a crafted header of 2**31 + 5 columns is huge, not negative (and so not "small").
    huge = header + struct.pack(">II", 2**31 + 5, 1)
    assert png_size(huge) == (2**31 + 5, 1)
    assert not small_pngs([huge])


def test_small_pngs_stops_at_the_pixel_limit() -> None:
    assert INLINE_DECODE_PIXELS == 64 * 64
    assert small_pngs([png_bytes(np.zeros((64, 64), np.uint8)), png_bytes(digit_like(1))])
    assert not small_pngs([png_bytes(digit_like(1)), png_bytes(np.zeros((64, 65), np.uint8))])
    assert not small_pngs([b"not an image"])


def recording(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[bool]:
    """Wrap `module.name` (a decoder function) to record, per call, whether it ran on the event loop's thread."""
    on_loop: list[bool] = []
    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return on_loop


async def test_native_small_bodies_are_decoded_inline(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = recording(monkeypatch, native, "decode_raw_image")
    instances = recording(monkeypatch, native, "decode_instances")
    array = (digit_like(2)[None] / 255).tolist()
    async with serve(large_json_bytes=64 * 1024) as (_, client):
        for content in (png_bytes(digit_like(2)), png_bytes(np.zeros((100, 100), np.uint8))):
            response = await client.post(
                "/v1/models/tiny/predict", content=content, headers={"content-type": "image/png"}
            )
            assert response.status_code == 200
        for body in ({"instances": [{"array": array}]}, {"instances": [{"image_b64": "iVBORw0KGgo="}]}):
            await client.post("/v1/models/tiny/predict", json=body)
    assert raw == [True, False]  # a 28x28 PNG inline, a 100x100 one in a thread
    assert instances == [True, False]  # arrays inline; encoded images in a thread


async def test_v2_fp32_and_small_binary_pngs_are_decoded_inline(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop = recording(monkeypatch, v2, "_decode_inputs")
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
    png = png_bytes(digit_like(3))
    header = (
        b'{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":'
        + str(4 + len(png)).encode()
        + b"}}]}"
    )
    binary = {"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"}
    async with serve(large_json_bytes=4096) as (_, client):
        small = await client.post("/v2/models/tiny/infer", json={"inputs": [tensor]})
        large = await client.post("/v2/models/tiny/infer", json={"inputs": [tensor | {"data": [0.125] * 784}]})
        pngs = await client.post(
            "/v2/models/tiny/infer", content=header + struct.pack("<I", len(png)) + png, headers=binary
        )
    assert small.status_code == large.status_code == pngs.status_code == 200
    assert len(large.request.content) > 4096 > len(small.request.content)
    assert on_loop == [True, False, True]


async def test_native_texts_up_to_the_character_limit_in_all_are_tokenized_inline(
    serve, model_dir: Path, text_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone_artifact(text_artifact, model_dir, "words", 1)
    on_loop = recording(monkeypatch, native, "decode_instances")
    assert INLINE_TEXT_CHARS == 512
    half = ("word " * INLINE_TEXT_CHARS)[: INLINE_TEXT_CHARS // 2]  # 256 characters
    bodies = [
        [half, half],  # 512 in all: inline
        [half, half + "x"],  # 513: a thread
        ["x" * 600],  # one long text: a thread
        ["short"],
    ]
    async with serve(large_json_bytes=64 * 1024) as (_, client):
        for texts in bodies:
            response = await client.post("/v1/models/words/predict", json={"instances": [{"text": t} for t in texts]})
            assert response.status_code == 200, response.text
        mixed = await client.post("/v1/models/words/predict", json={"instances": [{"text": "a"}, {"image_b64": "x"}]})
    assert mixed.status_code == 422  # texts mixed with images: refused (decoded in a thread, not inline)
    assert on_loop == [True, False, False, True, False]

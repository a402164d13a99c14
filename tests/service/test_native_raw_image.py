"""The native predict route with one image as the whole body (`image/png`, `image/jpeg`, `application/octet-stream`):
the same numbers as the JSON and multipart encodings, the same limits, and 4xx errors naming the problem."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import b64, clone_artifact, digit_like, png_bytes

pytestmark = pytest.mark.anyio

PREDICT = "/v1/models/tiny/predict"


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


async def test_a_raw_image_body_gives_the_json_numbers(serve) -> None:
    image = digit_like(5)
    png, jpeg = png_bytes(image), jpeg_bytes(image)
    async with serve() as (_, client):
        as_json = await client.post(PREDICT, json={"instances": [{"image_b64": b64(png)}]})
        as_png = await client.post(PREDICT, content=png, headers={"content-type": "image/png"})
        as_octets = await client.post(PREDICT, content=png, headers={"content-type": "application/octet-stream"})
        pinned = await client.post(
            "/v1/models/tiny/versions/1/predict", content=png, headers={"content-type": "image/png"}
        )
        jpeg_json = await client.post(PREDICT, json={"instances": [{"image_b64": b64(jpeg)}]})
        as_jpeg = await client.post(PREDICT, content=jpeg, headers={"content-type": "image/jpeg; charset=binary"})
    assert as_json.status_code == 200
    for response in (as_png, as_octets, pinned):
        assert (response.status_code, response.json()) == (200, as_json.json())
    assert (as_jpeg.status_code, as_jpeg.json()) == (200, jpeg_json.json())
    assert len(as_png.json()["predictions"]) == 1 and len(as_png.json()["predictions"][0]["top_k"]) == 3


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        (b"", "image/png", "the image/png body is empty: send one PNG or JPEG image"),
        (
            b"junk",
            "application/octet-stream",
            "application/octet-stream body: image could not be decoded: not a PNG or JPEG image",
        ),
    ],
)
async def test_empty_and_undecodable_bodies_are_422(serve, content: bytes, kind: str, message: str) -> None:
    async with serve() as (_, client):
        response = await client.post(PREDICT, content=content, headers={"content-type": kind})
    assert (response.status_code, response.json()) == (422, {"error": message})


async def test_the_pixel_budget_and_body_limit_apply(serve) -> None:
    large = png_bytes(np.zeros((300, 300), np.uint8))
    async with serve(image_pixels_floor=1, image_pixels_factor=4.0) as (_, client):
        over_pixels = await client.post(PREDICT, content=large, headers={"content-type": "image/png"})
    assert (over_pixels.status_code, over_pixels.json()) == (
        422,
        {"error": "image/png body: image is 300x300 = 90000 pixels, more than the limit of 3136"},
    )
    noise = png_bytes(np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8))
    assert len(noise) > 2048
    async with serve(max_body_bytes=2048) as (_, client):
        too_big = await client.post(PREDICT, content=noise, headers={"content-type": "image/png"})
    assert too_big.status_code == 413
    assert too_big.json()["error"].startswith("request body is larger than")


async def test_a_text_model_says_to_send_json(serve, tmp_path: Path, text_artifact: Path) -> None:
    models = tmp_path / "text-models"
    clone_artifact(text_artifact, models, "words", 1)
    async with serve(model_dir=models) as (_, client):
        response = await client.post(
            "/v1/models/words/predict", content=png_bytes(digit_like(1)), headers={"content-type": "image/png"}
        )
    message = 'model \'words\' takes text, not an image (image/png body): send JSON {"instances": [{"text": "..."}]}'
    assert (response.status_code, response.json()) == (422, {"error": message})

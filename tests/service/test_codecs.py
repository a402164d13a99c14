from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.card import ImageInputSpec
from service.codecs import CodecError, decode_array, decode_base64, decode_image
from tests.service.conftest import b64, png_bytes

GRAY = ImageInputSpec(name="input", dtype="float32", layout="NCHW", channels=1, height=28, width=28)
RGB = ImageInputSpec(name="input", dtype="float32", layout="NCHW", channels=3, height=28, width=28)
LIMIT = 4096 * 4096


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data: what a decompression bomb looks like
    before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_gray_png_is_scaled_by_255_exactly() -> None:
    pixels = np.arange(28 * 28, dtype=np.uint32).reshape(28, 28).astype(np.uint8)
    decoded = decode_image(png_bytes(pixels), GRAY, LIMIT)
    assert decoded.dtype == np.float32 and decoded.shape == (1, 28, 28)
    np.testing.assert_array_equal(decoded[0], pixels.astype(np.float32) / np.float32(255))


def test_rgb_is_converted_to_gray_with_itu_601_luma() -> None:
    pixels = np.zeros((28, 28, 3), np.uint8)
    pixels[..., 0] = 255  # pure red: 0.299 * 255 = 76.2 -> 76
    decoded = decode_image(png_bytes(pixels), GRAY, LIMIT)
    np.testing.assert_array_equal(decoded, np.full((1, 28, 28), 76 / 255, np.float32))


def test_gray_is_repeated_for_rgb_models() -> None:
    decoded = decode_image(png_bytes(np.full((28, 28), 51, np.uint8)), RGB, LIMIT)
    np.testing.assert_array_equal(decoded, np.full((3, 28, 28), 0.2, np.float32))


def test_transparent_pixels_become_black() -> None:
    pixels = np.full((28, 28, 4), 255, np.uint8)
    pixels[:14, :, 3] = 0  # top half fully transparent white
    decoded = decode_image(png_bytes(pixels), GRAY, LIMIT)
    assert decoded[0, :14].max() == 0.0
    assert decoded[0, 14:].min() == 1.0


def test_sixteen_bit_png_is_reduced_to_eight_bits() -> None:
    pixels = np.full((28, 28), 128 * 257, np.uint16)
    pixels[0, 0] = 65535
    decoded = decode_image(png_bytes(pixels), GRAY, LIMIT)
    assert decoded[0, 0, 0] == 1.0
    assert decoded[0, 1, 1] == np.float32(128 / 255)


def test_other_sizes_are_resized_to_the_card_size_without_keeping_the_aspect_ratio() -> None:
    wide = np.full((28, 112), 200, np.uint8)
    np.testing.assert_array_equal(
        decode_image(png_bytes(wide), GRAY, LIMIT), np.full((1, 28, 28), 200 / 255, np.float32)
    )
    halves = np.zeros((56, 56), np.uint8)
    halves[:, 28:] = 255
    decoded = decode_image(png_bytes(halves), GRAY, LIMIT)[0]
    assert decoded.shape == (28, 28)
    assert decoded[:, :13].max() == 0.0 and decoded[:, 15:].min() == 1.0  # antialiased only at the seam


def test_jpeg_is_decoded() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(buffer, format="JPEG", quality=95)
    decoded = decode_image(buffer.getvalue(), GRAY, LIMIT)
    assert np.abs(decoded - 128 / 255).max() <= 2 / 255  # lossy, but close


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"certainly not an image", "image could not be decoded: not a PNG or JPEG image"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image could not be decoded: not a PNG or JPEG image"),
        (png_header_only(5000, 5000), f"image is 5000x5000 = 25000000 pixels, more than the limit of {LIMIT}"),
        (png_header_only(20000, 20000), f"image has more than the limit of {LIMIT} pixels"),
        (png_header_only(28, 28), "image could not be decoded:"),
    ],
)
def test_bad_images_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_image(data, GRAY, LIMIT)
    assert str(caught.value).startswith(message)


def test_truncated_png_is_refused() -> None:
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    with pytest.raises(CodecError, match=r"^image could not be decoded: "):
        decode_image(data[: len(data) // 2], GRAY, LIMIT)


def test_base64_with_and_without_data_url_prefix() -> None:
    data = png_bytes(np.zeros((2, 2), np.uint8))
    assert decode_base64(b64(data)) == data
    assert decode_base64("data:image/png;base64," + b64(data)) == data
    with pytest.raises(CodecError, match=r"^image_b64 is not valid base64 \("):
        decode_base64("@@not base64@@")


def test_integer_arrays_are_numbers_too() -> None:
    decoded = decode_array([[[0] * 27 + [1]] * 28], GRAY)  # JSON integers: numpy int64
    assert decoded.dtype == np.float32 and decoded.sum() == 28.0


def test_arrays_in_the_input_shape_pass_through_as_float32() -> None:
    values = np.linspace(0, 1, 28 * 28).reshape(1, 28, 28)
    decoded = decode_array(values.tolist(), GRAY)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values.astype(np.float32))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((28, 28)).tolist(), "array has shape [28, 28], expected [1, 28, 28]"),
        ([[[0.5] * 28] * 27 + [[0.5] * 27]], "array must be a rectangular nested list of numbers"),
        ([[["a"] * 28] * 28], "array must be a rectangular nested list of numbers (found strings)"),
        ([[["0.5"] * 28] * 28], "array must be a rectangular nested list of numbers (found strings)"),
        ([[[True] * 28] * 28], "array must be a rectangular nested list of numbers (found booleans)"),
        (
            [[[None] * 28] * 28],
            "array must be a rectangular nested list of numbers (found non-numbers or integers too large)",
        ),
        (
            [[[10**400] * 28] * 28],
            "array must be a rectangular nested list of numbers (found non-numbers or integers too large)",
        ),
        ([[[10**19] * 28] * 28], "array values must be in [0, 1], found min 1e+19 and max 1e+19"),
        (np.full((1, 28, 28), np.nan).tolist(), "array contains NaN or infinite values"),
        (np.full((1, 28, 28), np.inf).tolist(), "array contains NaN or infinite values"),
        ([[[-0.5] + [1.0] * 27] * 28], "array values must be in [0, 1], found min -0.5 and max 1"),
        ([[[1e300] * 28] * 28], "array values must be in [0, 1], found min 1e+300 and max 1e+300"),
    ],
)
def test_bad_arrays_are_refused_with_the_reason(value: object, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_array(value, GRAY)
    assert str(caught.value) == message


def test_smaller_images_are_resized_up_to_the_card_size() -> None:
    small = np.zeros((7, 14), np.uint8)  # height 7, width 14: both smaller than 28
    small[:, 7:] = 255
    decoded = decode_image(png_bytes(small), GRAY, LIMIT)
    expected = Image.fromarray(small).resize((28, 28), Image.Resampling.BILINEAR)
    assert decoded.shape == (1, 28, 28)
    np.testing.assert_array_equal(decoded[0], np.asarray(expected, np.float32) / np.float32(255))
    assert decoded[0, :, :13].max() == 0.0 and decoded[0, :, 15:].min() == 1.0
    flat = decode_image(png_bytes(np.full((3, 3), 51, np.uint8)), RGB, LIMIT)
    np.testing.assert_array_equal(flat, np.full((3, 28, 28), np.float32(51) / np.float32(255)))


def test_an_image_of_exactly_the_pixel_limit_passes_and_one_more_pixel_does_not() -> None:
    data = png_bytes(np.zeros((28, 28), np.uint8))
    assert decode_image(data, GRAY, 28 * 28).shape == (1, 28, 28)
    with pytest.raises(CodecError, match=r"^image is 28x28 = 784 pixels, more than the limit of 783$"):
        decode_image(data, GRAY, 28 * 28 - 1)


@pytest.mark.parametrize("shape", [(1, 28, 27), (1, 27, 28), (2, 28, 28), (3, 28, 28), (1, 28, 28, 1), (28, 28, 1)])
def test_arrays_off_the_input_shape_by_one_in_any_axis_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(CodecError) as caught:
        decode_array(np.full(shape, 0.5).tolist(), GRAY)
    assert str(caught.value) == f"array has shape {list(shape)}, expected [1, 28, 28]"


def test_values_exactly_at_the_range_ends_pass_and_one_ulp_outside_do_not() -> None:
    values = np.full((1, 28, 28), 0.5)
    values[0, 0, 0], values[0, 0, 1] = 0.0, 1.0
    np.testing.assert_array_equal(decode_array(values.tolist(), GRAY), values.astype(np.float32))
    for bad in (float(np.nextafter(0.0, -1.0)), float(np.nextafter(1.0, 2.0))):
        values[0, 5, 5] = bad
        with pytest.raises(CodecError, match=r"^array values must be in \[0, 1\], found min "):
            decode_array(values.tolist(), GRAY)
        values[0, 5, 5] = 0.5


def test_a_custom_value_range_is_applied() -> None:
    spec = ImageInputSpec(
        name="input", dtype="float32", layout="NCHW", channels=1, height=2, width=2, value_range=(-1.0, 2.0)
    )
    np.testing.assert_array_equal(decode_array([[[-1.0, 2.0], [0.0, 1.5]]], spec), [[[-1.0, 2.0], [0.0, 1.5]]])
    with pytest.raises(CodecError, match=r"^array values must be in \[-1, 2\], found min -1\.5 and max 0$"):
        decode_array([[[-1.5, 0.0], [0.0, 0.0]]], spec)


def encoded(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_image_formats_are_refused_even_when_pillow_reads_them(image_format: str) -> None:
    data = encoded(Image.fromarray(np.full((28, 28), 128, np.uint8)), image_format)
    with pytest.raises(CodecError, match=r"^image could not be decoded: not a PNG or JPEG image$"):
        decode_image(data, GRAY, LIMIT)


def test_a_data_url_carries_its_payload_after_the_first_comma_only() -> None:
    assert decode_base64("data:image/png;base64,QUJD") == b"ABC"
    with pytest.raises(CodecError, match=r"^image_b64 is not valid base64 \("):
        decode_base64("data:image/png;base64,QUJD,QUJD")  # base64 has no commas


def test_semi_transparent_pixels_are_composited_onto_opaque_black() -> None:
    pixels = np.full((28, 28, 4), 255, np.uint8)
    pixels[..., 3] = 102  # white at 40% opacity over black: 0.4 * 255 = 102
    pixels[0, 0] = [255, 0, 0, 0]  # fully transparent red: black, also in colour
    gray = decode_image(png_bytes(pixels), GRAY, LIMIT)
    assert gray[0, 5, 5] == np.float32(102) / np.float32(255)
    rgb = decode_image(png_bytes(pixels), RGB, LIMIT)
    np.testing.assert_array_equal(rgb[:, 0, 0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(rgb[:, 5, 5], [np.float32(102) / np.float32(255)] * 3)


def gray_with_alpha(alpha: np.ndarray) -> Image.Image:
    return Image.merge("LA", [Image.fromarray(np.full((28, 28), 200, np.uint8)), Image.fromarray(alpha)])


@pytest.mark.parametrize("spec", [GRAY, RGB], ids=["gray", "rgb"])
def test_every_kind_of_png_transparency_becomes_black(spec: ImageInputSpec) -> None:
    """Alpha channels (RGBA, LA), a palette with a transparent entry (P + tRNS), and a single transparent grey or
    colour (L + tRNS, RGB + tRNS): each transparent pixel becomes black, each opaque one keeps its value."""
    alpha = np.full((28, 28), 255, np.uint8)
    alpha[:, :10] = 0
    gray = np.full((28, 28), 200, np.uint8)
    gray[:, :10] = 17  # the colour declared transparent below
    colour = np.stack([gray, gray, gray], axis=-1)
    palette = Image.fromarray(gray).convert("P")
    cases = {
        "LA": encoded(gray_with_alpha(alpha)),
        "P + tRNS": encoded(palette, transparency=palette.getpixel((0, 0))),
        "L + tRNS": encoded(Image.fromarray(gray), transparency=17),
        "RGB + tRNS": encoded(Image.fromarray(colour), transparency=(17, 17, 17)),
    }
    for kind, data in cases.items():
        decoded = decode_image(data, spec, LIMIT)
        assert decoded.shape == (spec.channels, 28, 28), kind
        assert decoded[:, :, :10].max() == 0.0, kind
        np.testing.assert_array_equal(decoded[:, :, 10:], np.float32(200) / np.float32(255), err_msg=kind)


def test_an_opaque_palette_image_keeps_its_colours() -> None:
    gray = np.full((28, 28), 200, np.uint8)
    gray[:, :10] = 17
    decoded = decode_image(encoded(Image.fromarray(gray).convert("P")), GRAY, LIMIT)
    np.testing.assert_array_equal(decoded[0], gray.astype(np.float32) / np.float32(255))


def test_sixteen_bit_values_are_rounded_to_the_nearest_eight_bit_value() -> None:
    # v / 65535 * 255 = v / 257: 51529 / 257 = 200.502 -> 201 (dividing by 65536 instead would give 200.499 -> 200).
    pixels = np.zeros((28, 28), np.uint16)
    pixels[0, :4] = [0, 257, 51529, 65535]
    decoded = decode_image(png_bytes(pixels), GRAY, LIMIT)
    np.testing.assert_array_equal(decoded[0, 0, :4], np.array([0, 1, 201, 255], np.float32) / np.float32(255))
    rgb = decode_image(png_bytes(np.full((28, 28), 51529, np.uint16)), RGB, LIMIT)
    np.testing.assert_array_equal(rgb, np.full((3, 28, 28), np.float32(201) / np.float32(255)))

"""Every input error of the Open Inference Protocol face, one table row each, with its exact message.

The rows run through the same parsing chain as the `infer` route (`parse_infer_request`, `requested_outputs`,
`threshold_parameter`, the decoder against the tiny artifact's card), which is fast enough to try each branch on
its own; a few rows then go through the HTTP app to show the chain renders as a 422 with that message.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.card import Card, read_verified_card
from service.errors import ServiceError
from service.protocol.v2 import make_decoder, parse_infer_request, requested_outputs, threshold_parameter
from tests.service.conftest import b64, make_settings, png_bytes

PNG = png_bytes(np.full((28, 28), 77, np.uint8))
PIXELS = 784  # 1 x 28 x 28
OK = None  # a row that must pass


def fp32(shape: list[int], data: Any = "zeros", **extra: Any) -> dict[str, Any]:
    values = [0.25] * int(np.prod(shape)) if data == "zeros" else data
    tensor = {"name": "input", "shape": shape, "datatype": "FP32", **extra}
    if values is not None:
        tensor["data"] = values
    return tensor


def byte_tensor(shape: list[int], data: Any, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": shape, "datatype": "BYTES", **extra}
    if data is not None:
        tensor["data"] = data
    return tensor


def json_body(*inputs: dict[str, Any], **fields: Any) -> tuple[bytes, str | None]:
    return json.dumps({"inputs": list(inputs), **fields}).encode(), None


def binary_body(tensors: list[dict[str, Any]], payload: bytes, header: str | None = None) -> tuple[bytes, str]:
    """Triton's binary extension: the JSON header, then the payload; the header length unless overridden."""
    head = json.dumps({"inputs": tensors}).encode()
    return head + payload, header if header is not None else str(len(head))


def prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def fp32_bytes(count: int) -> bytes:
    return np.full(count, 0.5, "<f4").tobytes()


# (id, (body, Inference-Header-Content-Length), expected message or OK)
ROWS: list[tuple[str, tuple[bytes, str | None], str | None]] = [
    # --- the binary header and the split of the body
    (
        "header not an integer",
        (b'{"inputs": []}', "abc"),
        "Inference-Header-Content-Length must be an integer, got 'abc'",
    ),
    ("header empty", (b'{"inputs": []}', ""), "Inference-Header-Content-Length must be an integer, got ''"),
    ("header zero", (b'{"inputs": []}', "0"), "Inference-Header-Content-Length 0 does not fit a 14-byte body"),
    ("header negative", (b'{"inputs": []}', "-3"), "Inference-Header-Content-Length -3 does not fit a 14-byte body"),
    (
        "header past the body",
        (b'{"inputs": []}', "15"),
        "Inference-Header-Content-Length 15 does not fit a 14-byte body",
    ),
    ("header exactly the body", binary_body([fp32([1, 1, 28, 28])], b""), OK),
    (
        "header of one byte",  # fits the body, so the one byte is parsed as the JSON
        (b'{"inputs": []}', "1"),
        "body: Invalid JSON: EOF while parsing an object at line 1 column 1",
    ),
    (
        "binary size past the body",
        binary_body([fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS + 1})], fp32_bytes(PIXELS)),
        f"input 'input': binary_data_size {4 * PIXELS + 1} does not fit the body",
    ),
    (
        "binary size negative",
        binary_body([fp32([1, 1, 28, 28], None, parameters={"binary_data_size": -1})], b""),
        "input 'input': binary_data_size -1 does not fit the body",
    ),
    (
        "binary size not an integer",
        binary_body([fp32([1, 1, 28, 28], None, parameters={"binary_data_size": "3136"})], fp32_bytes(PIXELS)),
        "input 'input': binary_data_size '3136' does not fit the body",
    ),
    (
        "bytes left over",
        binary_body([fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS})], fp32_bytes(PIXELS + 2)),
        "8 bytes of binary data belong to no input",
    ),
    (
        "header with JSON data only",  # mixed: the header is sent, but the tensor's data are in the JSON
        binary_body([fp32([1, 1, 28, 28])], b""),
        OK,
    ),
    (
        "JSON-only input, then a binary one",  # each tensor's payload is found, so the error is the input count
        binary_body(
            [fp32([1, 1, 28, 28]), fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS})],
            fp32_bytes(PIXELS),
        ),
        "model 'tiny' takes one input named 'input' (FP32 [N, 1, 28, 28] or BYTES [N]), got inputs ['input', 'input']",
    ),
    (
        "binary and JSON data for one tensor",  # the binary payload wins, as in Triton
        binary_body(
            [fp32([1, 1, 28, 28], [7.0] * PIXELS, parameters={"binary_data_size": 4 * PIXELS})], fp32_bytes(PIXELS)
        ),
        OK,
    ),
    # --- which tensors
    ("no inputs", json_body(), "inputs: List should have at least 1 item after validation, not 0"),
    (
        "two inputs",
        json_body(fp32([1, 1, 28, 28]), fp32([1, 1, 28, 28])),
        "model 'tiny' takes one input named 'input' (FP32 [N, 1, 28, 28] or BYTES [N]), got inputs ['input', 'input']",
    ),
    (
        "wrong name",
        json_body({**fp32([1, 1, 28, 28]), "name": "x"}),
        "model 'tiny' takes one input named 'input' (FP32 [N, 1, 28, 28] or BYTES [N]), got inputs ['x']",
    ),
    (
        "FP16",
        json_body({**fp32([1, 1, 28, 28]), "datatype": "FP16"}),
        "input 'input': datatype FP16 is not supported; use FP32 or BYTES",
    ),
    (
        "lower-case fp32",
        json_body({**fp32([1, 1, 28, 28]), "datatype": "fp32"}),
        "input 'input': datatype fp32 is not supported; use FP32 or BYTES",
    ),
    # --- FP32 shapes and counts
    ("FP32 N = 0", json_body(fp32([0, 1, 28, 28])), "input 'input': the batch is empty"),
    ("FP32 N < 0", json_body(fp32([-1, 1, 28, 28], [])), "input 'input': the batch is empty"),
    ("FP32 N = limit", json_body(fp32([4, 1, 28, 28])), OK),
    ("FP32 N = limit + 1", json_body(fp32([5, 1, 28, 28])), "too many instances: 5 (limit 4)"),
    ("FP32 width 27", json_body(fp32([1, 1, 28, 27])), "input 'input': shape [1, 1, 28, 27] must be [N, 1, 28, 28]"),
    ("FP32 height 27", json_body(fp32([1, 1, 27, 28])), "input 'input': shape [1, 1, 27, 28] must be [N, 1, 28, 28]"),
    ("FP32 3 channels", json_body(fp32([1, 3, 28, 28])), "input 'input': shape [1, 3, 28, 28] must be [N, 1, 28, 28]"),
    ("FP32 rank 3", json_body(fp32([1, 28, 28])), "input 'input': shape [1, 28, 28] must be [N, 1, 28, 28]"),
    (
        "FP32 rank 5",
        json_body(fp32([1, 1, 1, 28, 28])),
        "input 'input': shape [1, 1, 1, 28, 28] must be [N, 1, 28, 28]",
    ),
    ("FP32 no data", json_body(fp32([1, 1, 28, 28], None)), "input 'input': no data"),
    (
        "FP32 one value short",
        json_body(fp32([1, 1, 28, 28], [0.0] * (PIXELS - 1))),
        "input 'input': shape [1, 1, 28, 28] needs 784 values, data has 783",
    ),
    (
        "FP32 one value over",
        json_body(fp32([1, 1, 28, 28], [0.0] * (PIXELS + 1))),
        "input 'input': shape [1, 1, 28, 28] needs 784 values, data has 785",
    ),
    ("FP32 nested", json_body(fp32([1, 1, 28, 28], np.zeros((1, 1, 28, 28)).tolist())), OK),
    (
        "FP32 ragged",
        json_body(fp32([1, 1, 28, 28], [[0.0] * 28] * 27 + [[0.0] * 27])),
        "input 'input': data must be a flat or rectangular nested list of numbers",
    ),
    (
        "FP32 strings",
        json_body(fp32([1, 1, 28, 28], ["a"] * PIXELS)),
        "input 'input': data must be a flat or rectangular nested list of numbers (found strings)",
    ),
    (
        "FP32 above the range in instance 2",
        json_body(fp32([3, 1, 28, 28], [0.0] * (2 * PIXELS) + [1.5] * PIXELS)),
        "input 'input' instance 2: array values must be in [0, 1], found min 1.5 and max 1.5",
    ),
    ("FP32 range ends", json_body(fp32([1, 1, 28, 28], [0.0, 1.0] * (PIXELS // 2))), OK),
    (
        "FP32 binary one value short",
        binary_body(
            [fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS - 4})], fp32_bytes(PIXELS - 1)
        ),
        "input 'input': shape [1, 1, 28, 28] needs 3136 bytes, got 3132",
    ),
    (
        "FP32 binary not a whole value",
        binary_body(
            [fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS + 1})], fp32_bytes(PIXELS) + b"\0"
        ),
        "input 'input': shape [1, 1, 28, 28] needs 3136 bytes, got 3137",
    ),
    (
        "FP32 binary NaN",
        binary_body(
            [fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS})],
            np.full(PIXELS, np.nan, "<f4").tobytes(),
        ),
        "input 'input' instance 0: array contains NaN or infinite values",
    ),
    (
        "FP32 binary exact",
        binary_body([fp32([1, 1, 28, 28], None, parameters={"binary_data_size": 4 * PIXELS})], fp32_bytes(PIXELS)),
        OK,
    ),
    # --- BYTES shapes, counts and payloads
    ("BYTES [N]", json_body(byte_tensor([2], [b64(PNG)] * 2)), OK),
    ("BYTES [N, 1]", json_body(byte_tensor([2, 1], [[b64(PNG)], [b64(PNG)]])), OK),
    (
        "BYTES [N, 2]",
        json_body(byte_tensor([1, 2], [b64(PNG)] * 2)),
        "input 'input': BYTES shape [1, 2] must be [N] or [N, 1]",
    ),
    (
        "BYTES rank 3",
        json_body(byte_tensor([1, 1, 1], [b64(PNG)])),
        "input 'input': BYTES shape [1, 1, 1] must be [N] or [N, 1]",
    ),
    ("BYTES rank 0", json_body(byte_tensor([], [b64(PNG)])), "input 'input': BYTES shape [] must be [N] or [N, 1]"),
    ("BYTES N = 0", json_body(byte_tensor([0], [])), "input 'input': the batch is empty"),
    ("BYTES N = limit + 1", json_body(byte_tensor([5], [b64(PNG)] * 5)), "too many instances: 5 (limit 4)"),
    ("BYTES no data", json_body(byte_tensor([1], None)), "input 'input': no data"),
    ("BYTES numbers", json_body(byte_tensor([1], [1])), "input 'input': BYTES data in JSON must be base64 strings"),
    (
        "BYTES nested pair",
        json_body(byte_tensor([1], [[b64(PNG), b64(PNG)]])),
        "input 'input': BYTES data in JSON must be base64 strings",
    ),
    (
        "BYTES fewer elements",
        json_body(byte_tensor([2], [b64(PNG)])),
        "input 'input': shape [2] needs 2 elements, data has 1",
    ),
    (
        "BYTES more elements",
        json_body(byte_tensor([1], [b64(PNG)] * 2)),
        "input 'input': shape [1] needs 1 elements, data has 2",
    ),
    (
        "BYTES bad base64 in instance 1",
        json_body(byte_tensor([2], [b64(PNG), "%%%"])),
        "input 'input' instance 1: image_b64 is not valid base64 (Only base64 data is allowed)",
    ),
    (
        "BYTES not an image",
        json_body(byte_tensor([1], [b64(b"GIF89a")])),
        "input 'input' instance 0: image could not be decoded: not a PNG or JPEG image",
    ),
    (
        "BYTES binary two images",
        binary_body([byte_tensor([2], None, parameters={"binary_data_size": 8 + 2 * len(PNG)})], prefixed(PNG, PNG)),
        OK,
    ),
    (
        "BYTES binary truncated length prefix",
        binary_body(
            [byte_tensor([2], None, parameters={"binary_data_size": 4 + len(PNG) + 3})], prefixed(PNG) + b"\x05\0\0"
        ),
        "input 'input': truncated binary BYTES element",
    ),
    (
        "BYTES binary truncated element",
        binary_body([byte_tensor([1], None, parameters={"binary_data_size": 4 + len(PNG) - 1})], prefixed(PNG)[:-1]),
        "input 'input': truncated binary BYTES element",
    ),
    (
        "BYTES binary length beyond 2**31",  # an unsigned length: 0xFFFFFFFF bytes, not -1
        binary_body([byte_tensor([1], None, parameters={"binary_data_size": 7})], b"\xff\xff\xff\xffabc"),
        "input 'input': truncated binary BYTES element",
    ),
    (
        # Read as a signed -1, the length would step back one byte and find a second, 255-byte element.
        "BYTES binary length 0xFFFFFFFF before more data",
        binary_body(
            [byte_tensor([2], None, parameters={"binary_data_size": 262})], b"\xff\xff\xff\xff\0\0\0" + b"x" * 255
        ),
        "input 'input': truncated binary BYTES element",
    ),
    (
        "BYTES binary count mismatch",
        binary_body([byte_tensor([3], None, parameters={"binary_data_size": 8 + 2 * len(PNG)})], prefixed(PNG, PNG)),
        "input 'input': shape [3] needs 3 elements, data has 2",
    ),
    (
        "BYTES binary empty payload",
        binary_body([byte_tensor([1], None, parameters={"binary_data_size": 0})], b""),
        "input 'input': shape [1] needs 1 elements, data has 0",
    ),
    (
        "BYTES binary empty element",
        binary_body([byte_tensor([1], None, parameters={"binary_data_size": 4})], prefixed(b"")),
        "input 'input' instance 0: image could not be decoded: not a PNG or JPEG image",
    ),
    # --- outputs and parameters
    ("outputs subset", json_body(fp32([1, 1, 28, 28]), outputs=[{"name": "reject"}]), OK),
    (
        "unknown output among known",
        json_body(fp32([1, 1, 28, 28]), outputs=[{"name": "reject"}, {"name": "logits"}, {"name": "x"}]),
        "unknown output(s) ['logits', 'x']; outputs are "
        "['label_index', 'confidence', 'anomaly_score', 'kl_uniform', 'reject', 'probs']",
    ),
    ("threshold 0", json_body(fp32([1, 1, 28, 28]), parameters={"threshold": 0}), OK),
    ("threshold 1", json_body(fp32([1, 1, 28, 28]), parameters={"threshold": 1.0}), OK),
    ("threshold absent", json_body(fp32([1, 1, 28, 28]), parameters={"other": 1}), OK),
    (
        "threshold below 0",
        json_body(fp32([1, 1, 28, 28]), parameters={"threshold": float(np.nextafter(0.0, -1.0))}),
        "parameters.threshold must be a number in [0, 1], got -5e-324",
    ),
    (
        "threshold above 1",
        json_body(fp32([1, 1, 28, 28]), parameters={"threshold": float(np.nextafter(1.0, 2.0))}),
        "parameters.threshold must be a number in [0, 1], got 1.0000000000000002",
    ),
    (
        "threshold a string",
        json_body(fp32([1, 1, 28, 28]), parameters={"threshold": "0.5"}),
        "parameters.threshold must be a number in [0, 1], got '0.5'",
    ),
    (
        "threshold a boolean",
        json_body(fp32([1, 1, 28, 28]), parameters={"threshold": True}),
        "parameters.threshold must be a number in [0, 1], got True",
    ),
    (
        "threshold NaN",
        (b'{"inputs": [' + json.dumps(fp32([1, 1, 28, 28])).encode() + b'], "parameters": {"threshold": NaN}}', None),
        "parameters.threshold must be a number in [0, 1], got nan",
    ),
    ("invalid JSON", (b'{"inputs": [', None), "body: Invalid JSON: EOF while parsing a list at line 1 column 12"),
]


@pytest.fixture(scope="module")
def card(tiny_artifact: Path) -> Card:
    return read_verified_card(tiny_artifact, "tiny", 1)


def parse(body: bytes, header: str | None, card: Card) -> tuple[np.ndarray, list[str], float | None]:
    """What the infer route does before it calls the model, in the same order."""
    request, binaries = parse_infer_request(body, header)
    outputs = requested_outputs(request)
    threshold = threshold_parameter(request)
    decode = make_decoder(request, binaries, make_settings(Path("/nonexistent"), max_instances=4))
    return decode(card, None), outputs, threshold


@pytest.mark.parametrize(("request_parts", "message"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_v2_input_errors(request_parts: tuple[bytes, str | None], message: str | None, card: Card) -> None:
    body, header = request_parts
    if message is OK:
        images, _, _ = parse(body, header, card)
        assert images.dtype == np.float32 and images.shape[1:] == (1, 28, 28)
        return
    with pytest.raises(ServiceError) as caught:
        parse(body, header, card)
    assert caught.value.message == message
    # A body that is not JSON at all is a 400, as Triton answers; JSON that is not a valid request is a 422.
    assert caught.value.status_code == (400 if message.startswith("body: Invalid JSON") else 422)


def test_the_rows_that_pass_decode_what_they_carry(card: Card) -> None:
    flat, _, _ = parse(*json_body(fp32([2, 1, 28, 28], [0.0] * PIXELS + [1.0] * PIXELS)), card)
    np.testing.assert_array_equal(flat, np.stack([np.zeros((1, 28, 28)), np.ones((1, 28, 28))]).astype(np.float32))
    both, _, _ = parse(
        *binary_body(
            [fp32([1, 1, 28, 28], [0.0] * PIXELS, parameters={"binary_data_size": 4 * PIXELS})], fp32_bytes(PIXELS)
        ),
        card,
    )
    np.testing.assert_array_equal(both, np.full((1, 1, 28, 28), 0.5, np.float32))  # the binary payload, not the JSON
    images, outputs, threshold = parse(
        *json_body(
            byte_tensor([2, 1], [[b64(PNG)], [b64(PNG)]]),
            outputs=[{"name": "probs"}, {"name": "reject"}],
            parameters={"threshold": 0},
        ),
        card,
    )
    np.testing.assert_array_equal(images, np.full((2, 1, 28, 28), np.float32(77) / np.float32(255)))
    assert outputs == ["probs", "reject"]
    assert threshold == 0.0 and isinstance(threshold, float)
    _, every, none = parse(*json_body(fp32([1, 1, 28, 28])), card)
    assert every == ["label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs"]
    assert none is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "row",
    [r for r in ROWS if r[0] in ("header zero", "FP32 N = 0", "BYTES binary truncated element", "threshold a boolean")],
    ids=lambda r: r[0],
)
async def test_the_route_renders_them_as_422(serve, row: tuple[str, tuple[bytes, str | None], str]) -> None:
    _, (body, header), message = row
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["inference-header-content-length"] = header
    async with serve(max_instances=4, allow_threshold_override=True) as (_, client):
        response = await client.post("/v2/models/tiny/infer", content=body, headers=headers)
    assert (response.status_code, response.json()) == (422, {"error": message})


@pytest.mark.anyio
@pytest.mark.parametrize("threshold", [True, 10**400, "0.5", 0.5, -1])
async def test_a_forbidden_threshold_override_is_403_whatever_its_value(serve, threshold: object) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                   "data": [0.0] * PIXELS}], "parameters": {"threshold": threshold}})  # fmt: skip
    async with serve() as (_, client):  # overrides are off by default
        response = await client.post("/v2/models/tiny/infer", content=body)
    assert (response.status_code, response.json()) == (
        403,
        {"error": "per-request threshold override is disabled on this server"},
    )


@pytest.mark.anyio
async def test_huge_integers_are_422_never_500(serve) -> None:
    huge = 10**400
    rows = [
        ({"data": [huge] * PIXELS}, "input 'input': data must be a flat or rectangular nested list of numbers "
         "(found non-numbers or integers too large)"),
        ({"parameters": {"threshold": huge}},
         f"parameters.threshold must be a number in [0, 1], got {str(huge)[:40]}..."),
    ]  # fmt: skip
    async with serve(allow_threshold_override=True) as (_, client):
        for change, message in rows:
            tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * PIXELS}
            request = {"inputs": [{**tensor, **{k: v for k, v in change.items() if k == "data"}}]}
            request |= {k: v for k, v in change.items() if k == "parameters"}
            response = await client.post("/v2/models/tiny/infer", content=json.dumps(request))
            assert (response.status_code, response.json()) == (422, {"error": message})
        native = {"instances": [{"array": [[[huge] * 28] * 28]}]}
        headers = {"content-type": "application/json"}
        response = await client.post("/v1/models/tiny/predict", content=json.dumps(native), headers=headers)
        assert response.status_code == 422 and "integers too large" in response.json()["error"]


@pytest.mark.anyio
async def test_a_long_threshold_value_is_echoed_up_to_40_characters(serve) -> None:
    cases = [(10**39, str(10**39)), (10**40, f"{str(10**40)[:40]}...")]  # 40 digits in full; 41 cut to 40 + "..."
    async with serve(allow_threshold_override=True) as (_, client):
        for value, shown in cases:
            tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * PIXELS}
            request = {"inputs": [tensor], "parameters": {"threshold": value}}
            response = await client.post("/v2/models/tiny/infer", content=json.dumps(request))
            expected = f"parameters.threshold must be a number in [0, 1], got {shown}"
            assert (response.status_code, response.json()) == (422, {"error": expected})

